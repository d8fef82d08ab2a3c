"""The tensorrt backend's host logic (bank layout, slot offsets, pinned staging, the key handles)
without TensorRT or a GPU: "device memory" is host memory, the CUDA runtime calls are memmoves, and
the "engine" is ``mast_trt.onnx`` run by onnxruntime (the plugin node as the reference custom op).
It must track exactly as the onnxruntime backend does."""
from __future__ import annotations

import ctypes
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mast.core.engine_metadata import ENGINE_FILE, EngineMetadata, write_engine_metadata
from mast.core.metadata import TRT_ONNX_FILE, file_hash, read_metadata
from mast.core.model import key_encoder
from mast.export.onnx_export import ExportConfig, write_models
from mast.plugins import gpu_env
from mast.plugins.gpu_env import GpuInfo, TensorRT
from mast.plugins.ort_custom_op import session_options
from mast.runtime import trt_backend
from mast.runtime.ort_backend import OrtBackend
from mast.runtime.tracker import Tracker

SIZE = (48, 72)
GPU = GpuInfo("Fake GPU", (9, 0))
ONNX_TYPES = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.INT32: np.int32, onnx.TensorProto.UINT8: np.uint8}


class FakeCudart:
    """The ``cuda.bindings.runtime`` calls the backend makes, on host memory."""

    cudaError_t = types.SimpleNamespace(cudaSuccess=0)
    cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2, cudaMemcpyDeviceToDevice=3)

    def __init__(self) -> None:
        self.blocks: dict[int, ctypes.Array] = {}

    def _alloc(self, n):
        block = (ctypes.c_uint8 * n)()
        self.blocks[ctypes.addressof(block)] = block
        return 0, ctypes.addressof(block)

    cudaMalloc = cudaMallocHost = _alloc

    def cudaFree(self, ptr):
        del self.blocks[ptr]
        return (0,)

    cudaFreeHost = cudaFree

    def cudaMemset(self, ptr, value, n, stream=None):
        ctypes.memset(int(ptr), value, n)
        return (0,)

    cudaMemsetAsync = cudaMemset

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        ctypes.memmove(int(dst), int(src), n)
        return (0,)

    def cudaStreamCreate(self):
        return 0, 7

    def cudaStreamSynchronize(self, stream):
        return (0,)

    cudaStreamDestroy = cudaStreamSynchronize


def _view(ptr: int, shape, dtype) -> np.ndarray:
    n = int(np.prod(shape)) * np.dtype(dtype).itemsize
    return np.frombuffer((ctypes.c_uint8 * n).from_address(ptr), np.uint8).view(dtype).reshape(shape)


class FakeEngine:
    """``mast_trt.onnx`` in onnxruntime behind TensorRT's engine / execution-context calls."""

    def __init__(self, path: Path) -> None:
        model = onnx.load(str(path))
        self.tensors = {v.name: (tuple(d.dim_value for d in v.type.tensor_type.shape.dim),
                                 ONNX_TYPES[v.type.tensor_type.elem_type])
                        for v in [*model.graph.input, *model.graph.output]}
        self.session = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
        self.addresses: dict[str, int] = {}
        self.runs = 0

    def get_tensor_shape(self, name):
        return self.tensors[name][0]

    def get_tensor_dtype(self, name):
        return self.tensors[name][1]

    def create_execution_context(self):
        return self

    def set_tensor_address(self, name, ptr):
        self.addresses[name] = ptr

    def execute_async_v3(self, stream):
        self.runs += 1
        feeds = {i.name: _view(self.addresses[i.name], *self.tensors[i.name]).copy() for i in self.session.get_inputs()}
        for out, value in zip(self.session.get_outputs(), self.session.run(None, feeds)):
            _view(self.addresses[out.name], *self.tensors[out.name])[...] = value
        return True


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trt-host") / "model"
    write_models(out, key_encoder("random"), ExportConfig(*SIZE, max_objects=3), "random", "random-seed-0")
    (out / ENGINE_FILE).write_bytes(b"stand-in engine")
    meta = read_metadata(out)
    write_engine_metadata(out, EngineMetadata("10.13.0", GPU.name, GPU.compute_capability, meta.input_size,
                                              meta.checkpoint_hash, "fp32", 15, file_hash(out / ENGINE_FILE)))
    return out


@pytest.fixture
def fake_gpu(monkeypatch, model_dir: Path):
    cudart, engine = FakeCudart(), FakeEngine(model_dir / TRT_ONNX_FILE)
    runtime = types.SimpleNamespace(deserialize_cuda_engine=lambda data: engine)
    trt = types.SimpleNamespace(__version__="10.13.0", Logger=lambda level: None, Runtime=lambda logger: runtime,
                                nptype=lambda dtype: dtype)
    trt.Logger.WARNING = 2
    monkeypatch.setattr(gpu_env, "cudart", lambda: cudart)
    monkeypatch.setattr(trt_backend, "cudart", lambda: cudart)
    monkeypatch.setattr(trt_backend, "tensorrt", lambda: TensorRT(trt, None))
    monkeypatch.setattr(trt_backend, "require_tensorrt_gpu", lambda: GPU)
    return cudart, engine



def test_tracks_as_the_onnxruntime_backend(fake_gpu, model_dir: Path, demo_clip, tol):
    cudart, engine = fake_gpu
    backend = trt_backend.TrtBackend(model_dir)
    frames, mask = demo_clip(8, SIZE)
    a, b = Tracker(backend), Tracker(OrtBackend(model_dir))
    a.start(frames[0], mask)
    b.start(frames[0], mask)
    assert engine.runs == 1   # the first frame is never read: its key comes from a run with no slot read
    for f in frames[1:]:
        atol = tol.tracker_read_atol(b, f, b.backend.meta.attention_config)   # float32 rounding of the read
        got, want = a.step(f), b.step(f)
        np.testing.assert_allclose(a.last_distribution, b.last_distribution, atol=atol, rtol=0)
        assert (got == want).all()
    assert engine.runs == len(frames)   # one execution per frame
    backend.close()
    assert not cudart.blocks   # every buffer freed


def test_stale_key_and_bad_frame_are_refused(fake_gpu, model_dir: Path, demo_clip):
    from mast.core.errors import InputError

    backend = trt_backend.TrtBackend(model_dir)
    frames, _ = demo_clip(2, SIZE)
    old = backend.encode(frames[0])
    backend.encode(frames[1])
    with pytest.raises(InputError, match="only the latest frame's key"):
        backend.write(0, old, np.zeros((12, 18), np.int64))
    with pytest.raises(InputError, match="the engine takes uint8 48x72x3"):
        backend.encode(frames[0][:40])
