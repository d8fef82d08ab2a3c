"""``engine.json``: what a TensorRT engine was built for, and the one-line refusals at load
(no TensorRT needed: the checks are plain metadata)."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from mast.core.engine_metadata import (ENGINE_FILE, ENGINE_METADATA_FILE, EngineMetadata, check_engine,
                                       read_engine_metadata, write_engine_metadata)
from mast.core.errors import ModelError
from mast.core.metadata import ModelMetadata, file_hash

H100 = ("NVIDIA H100 80GB HBM3", (9, 0))


def _model(checkpoint_hash: str = "abc", size: tuple[int, int] = (480, 854)) -> ModelMetadata:
    return ModelMetadata(checkpoint="w.pt", checkpoint_hash=checkpoint_hash, input_size=size,
                         feature_size=(120, 214), attention={}, schedule={}, slots={}, opset=17, ir_version=8,
                         export_time="", package_version="0.1.0")


@pytest.fixture
def engine_dir(tmp_path: Path) -> Path:
    (tmp_path / ENGINE_FILE).write_bytes(b"serialized engine")
    meta = EngineMetadata(tensorrt_version="10.13.0", gpu_name=H100[0], compute_capability=H100[1],
                          input_size=(480, 854), checkpoint_hash="abc", precision="fp16",
                          size_bytes=17, engine_hash=file_hash(tmp_path / ENGINE_FILE))
    write_engine_metadata(tmp_path, meta)
    return tmp_path


def test_round_trip_and_accepts_the_same_setup(engine_dir: Path):
    meta = read_engine_metadata(engine_dir)
    assert meta.compute_capability == (9, 0) and meta.input_size == (480, 854) and meta.precision == "fp16"
    check_engine(meta, _model(), "10.13.0", *H100)


@pytest.mark.parametrize("change, needle", [
    (lambda d: (d / ENGINE_FILE).unlink(), "has no mast.engine: build it with mast-export --engine"),
    (lambda d: (d / ENGINE_METADATA_FILE).unlink(), "has no engine.json"),
    (lambda d: (d / ENGINE_FILE).write_bytes(b"other"), "the engine is corrupted or was replaced"),
    (lambda d: _edit(d, format_version=2), "engine format version 2, expected 1"),
    (lambda d: _edit(d, format="something"), "not the metadata of an engine"),
])
def test_bad_engine_folder_is_one_line(engine_dir: Path, change, needle):
    change(engine_dir)
    with pytest.raises(ModelError, match=needle) as err:
        read_engine_metadata(engine_dir)
    assert "\n" not in str(err.value)


def _edit(folder: Path, **fields) -> None:
    path = folder / ENGINE_METADATA_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), **fields}))


@pytest.mark.parametrize("args, needle", [
    ((_model(), "10.9.0", *H100), "built with TensorRT 10.13.0, this is TensorRT 10.9.0"),
    ((_model(), "10.13.0", "NVIDIA A100-SXM4-80GB", (8, 0)),
     r"built for NVIDIA H100 80GB HBM3 \(compute capability 9.0\), this GPU is NVIDIA A100-SXM4-80GB \(8.0\)"),
    ((_model(checkpoint_hash="other"), "10.13.0", *H100), "built from another export"),
    ((_model(size=(240, 427)), "10.13.0", *H100), "built from another export"),
])
def test_engine_for_elsewhere_is_refused(engine_dir: Path, args, needle):
    with pytest.raises(ModelError, match=needle):
        check_engine(read_engine_metadata(engine_dir), *args)


def test_parity_is_kept(engine_dir: Path):
    meta = replace(read_engine_metadata(engine_dir), parity={"probs_max_abs": 1e-4})
    write_engine_metadata(engine_dir, meta)
    assert read_engine_metadata(engine_dir).parity == {"probs_max_abs": 1e-4}
