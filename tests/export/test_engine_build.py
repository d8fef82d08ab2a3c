"""``build_engine``'s stages without TensorRT: a stand-in builder records what is configured
(precision flag, workspace, timing cache) and returns a serialized engine, or None as TensorRT
does when the build fails (e.g. out of GPU memory)."""
from __future__ import annotations

import types
from pathlib import Path

import pytest

from mast.core.engine_metadata import ENGINE_FILE, read_engine_metadata
from mast.core.errors import DependencyError, ModelError
from mast.core.metadata import TRT_ONNX_FILE, ModelMetadata
from mast.export import trt_engine
from mast.export.trt_engine import TrtBuildConfig, build_engine
from mast.plugins.gpu_env import GpuInfo, TensorRT

GPU = GpuInfo("Fake H100", (9, 0))
MODEL = ModelMetadata(checkpoint="w.pt", checkpoint_hash="abc", input_size=(64, 112), feature_size=(16, 28),
                      attention={}, schedule={}, slots={}, opset=17, ir_version=8, export_time="", package_version="0")


class Cache:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def serialize(self) -> bytes:
        return self.data + b"+timed"


class Config:
    def __init__(self) -> None:
        self.flags, self.pools, self.cache = [], {}, None

    def set_memory_pool_limit(self, pool, size):
        self.pools[pool] = size

    def set_flag(self, flag):
        self.flags.append(flag)

    def create_timing_cache(self, data):
        return Cache(data)

    def set_timing_cache(self, cache, ignore_mismatch):
        self.cache = cache

    def get_timing_cache(self):
        return self.cache


def _fake_trt(result: bytes | None, parse_ok: bool = True):
    config = Config()
    parser = types.SimpleNamespace(parse_from_file=lambda path: parse_ok, num_errors=0 if parse_ok else 1,
                                   get_error=lambda i: "In node 3: unsupported op")
    builder = types.SimpleNamespace(create_network=lambda flags: "network", create_builder_config=lambda: config,
                                    build_serialized_network=lambda network, cfg: result)
    trt = types.SimpleNamespace(__version__="10.13.0", Logger=lambda level: None, Builder=lambda logger: builder,
                                OnnxParser=lambda network, logger: parser,
                                MemoryPoolType=types.SimpleNamespace(WORKSPACE="workspace"),
                                BuilderFlag=types.SimpleNamespace(FP16="fp16"))
    trt.Logger.WARNING = 2
    return trt, config


@pytest.fixture
def folder(tmp_path: Path, monkeypatch) -> Path:
    (tmp_path / TRT_ONNX_FILE).write_bytes(b"onnx")
    monkeypatch.setattr(trt_engine, "gpu_info", lambda: GPU)
    monkeypatch.setattr(trt_engine, "register_plugin", lambda: None)
    return tmp_path


def test_builds_with_precision_workspace_and_timing_cache(folder: Path, monkeypatch):
    trt, config = _fake_trt(b"serialized")
    monkeypatch.setattr(trt_engine, "tensorrt", lambda: TensorRT(trt, None))
    cache = folder / "timing.cache"
    cache.write_bytes(b"old")
    messages: list[str] = []
    meta = build_engine(folder, MODEL, TrtBuildConfig("fp16", 512, cache), messages.append)
    assert (folder / ENGINE_FILE).read_bytes() == b"serialized"
    assert config.flags == ["fp16"] and config.pools == {"workspace": 512 << 20}
    assert cache.read_bytes() == b"old+timed"
    assert meta == read_engine_metadata(folder)
    assert (meta.tensorrt_version, meta.gpu_name, meta.compute_capability) == ("10.13.0", GPU.name, (9, 0))
    assert (meta.input_size, meta.checkpoint_hash, meta.precision, meta.size_bytes) == ((64, 112), "abc", "fp16", 10)
    assert [m.split()[0] for m in messages] == ["parsing", "building", "built"]


def test_fp32_sets_no_flag(folder: Path, monkeypatch):
    trt, config = _fake_trt(b"serialized")
    monkeypatch.setattr(trt_engine, "tensorrt", lambda: TensorRT(trt, None))
    build_engine(folder, MODEL, TrtBuildConfig("fp32"), lambda m: None)
    assert config.flags == []


def test_failed_build_is_one_line(folder: Path, monkeypatch):
    trt, _ = _fake_trt(None)
    monkeypatch.setattr(trt_engine, "tensorrt", lambda: TensorRT(trt, None))
    with pytest.raises(DependencyError, match="could not build the engine on Fake H100 \\(out of GPU memory"):
        build_engine(folder, MODEL, TrtBuildConfig(), lambda m: None)
    assert not (folder / ENGINE_FILE).exists()


def test_unparsable_graph_is_one_line(folder: Path, monkeypatch):
    trt, _ = _fake_trt(b"x", parse_ok=False)
    monkeypatch.setattr(trt_engine, "tensorrt", lambda: TensorRT(trt, None))
    with pytest.raises(ModelError, match="TensorRT cannot parse mast_trt.onnx: In node 3: unsupported op"):
        build_engine(folder, MODEL, TrtBuildConfig(), lambda m: None)
