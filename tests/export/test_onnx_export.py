"""encoder.onnx against the torch encoder on real frames; metadata written with the models."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mast.core.lab import bgr_to_lab
from mast.core.model import key_encoder
from mast.core.metadata import ENCODER_FILE, MEMORY_READ_FILE, METADATA_FILE, read_metadata
from mast.export.onnx_export import ExportConfig, write_models

SIZE = (96, 160)


def sharp_encoder(scale: float = 20.0) -> torch.nn.Module:
    """The random encoder with keys scaled to trained-like magnitudes (peaked attention)."""
    enc = key_encoder("random")
    with torch.no_grad():
        enc.post_convolution.weight.mul_(scale)
        enc.post_convolution.bias.mul_(scale)
    return enc


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    enc = sharp_encoder()
    out = tmp_path_factory.mktemp("model")
    write_models(out, enc, ExportConfig(*SIZE, max_objects=3), "random", "random-seed-0")
    return out, enc


def _real_frames(data_dir: Path, n: int = 3) -> list[np.ndarray]:
    root = data_dir / "davis2016-val-dev" / "JPEGImages" / "480p"
    frames = [cv2.imread(str(root / s / "00020.jpg")) for s in ("dog", "camel", "bmx-trees")[:n]]
    return [cv2.resize(f, (SIZE[1], SIZE[0]), interpolation=cv2.INTER_AREA) for f in frames]


def test_encoder_matches_torch_on_real_frames(exported, data_dir: Path):
    out, enc = exported
    session = ort.InferenceSession(str(out / ENCODER_FILE), providers=["CPUExecutionProvider"])
    for frame in _real_frames(data_dir):
        got = session.run(None, {"frame": frame[None]})[0]
        with torch.no_grad():
            want = enc(torch.from_numpy(bgr_to_lab(frame))[None]).numpy()
        assert got.shape == (1, 64, SIZE[0] // 4, SIZE[1] // 4)
        assert np.abs(want).max() > 1.0  # keys of a realistic scale, not ~0
        assert np.abs(got - want).max() <= 1e-3


def test_models_carry_the_metadata(exported):
    out, _ = exported
    meta = read_metadata(out)
    data = json.loads((out / METADATA_FILE).read_text())
    assert data["format"] == "mast-onnx" and data["format_version"] == 1
    assert tuple(data["input_size"]) == SIZE and tuple(data["feature_size"]) == (24, 40)
    assert data["attention"]["radius"] == 12 and data["schedule"]["long_term"] == [0, 5]
    assert data["slots"] == {"n_slots": 7, "long_term_slots": 2, "reads": 5, "max_labels": 4}
    for key in ("opset", "export_time", "package_version", "checkpoint_hash", "versions", "files"):
        assert key in data
    for name in (ENCODER_FILE, MEMORY_READ_FILE):
        model = onnx.load(str(out / name), load_external_data=False)
        props = {p.key: json.loads(p.value) for p in model.metadata_props}
        assert props["format_version"] == 1 and tuple(props["input_size"]) == SIZE
        assert props["checkpoint_hash"] == meta.checkpoint_hash
        assert model.opset_import[0].version == 17 and model.ir_version <= 10


def test_fp16_encoder_runs_and_stays_close(tmp_path: Path, data_dir: Path):
    enc = sharp_encoder()
    write_models(tmp_path, enc, ExportConfig(*SIZE, max_objects=1, precision="fp16"), "random", "r")
    session = ort.InferenceSession(str(tmp_path / ENCODER_FILE), providers=["CPUExecutionProvider"])
    frame = _real_frames(data_dir, 1)[0]
    got = session.run(None, {"frame": frame[None]})[0]
    with torch.no_grad():
        want = enc(torch.from_numpy(bgr_to_lab(frame))[None]).numpy()
    assert got.dtype == np.float32 and read_metadata(tmp_path).precision == "fp16"
    assert np.abs(got - want).max() <= 2e-2 * np.abs(want).max()
