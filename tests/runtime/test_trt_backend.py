"""The tensorrt backend: one-line refusals without TensorRT / a GPU (here), and a real engine
build and tracking run where TensorRT and a CUDA GPU exist (skipped elsewhere, with the reason)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mast.core.errors import DependencyError
from mast.plugins import gpu_env
from mast.runtime.factory import BackendUnavailableError, make_backend

HINT = "pip install 'mast-tracker[gpu]' on a machine with an NVIDIA driver"


def _gpu_stack() -> str | None:
    """None when TensorRT, cuda-bindings and a GPU are all here, else why not."""
    try:
        gpu_env.require_tensorrt_gpu()
    except DependencyError as exc:
        return str(exc)
    return None


NO_GPU_STACK = _gpu_stack()
needs_tensorrt_gpu = pytest.mark.skipif(NO_GPU_STACK is not None, reason=f"needs TensorRT and a CUDA GPU: {NO_GPU_STACK}")


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "metadata.json").write_text("{}")
    (folder / "mast.engine").write_bytes(b"")
    return folder


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_without_tensorrt_one_line_with_the_install(export_dir: Path):
    with pytest.raises(DependencyError) as err:
        make_backend("tensorrt", export_dir, "cuda")
    message = str(err.value)
    assert message.startswith("TensorRT is not available") and message.endswith(HINT) and "\n" not in message


def test_without_gpu_one_line(export_dir: Path, no_cuda_gpu):
    with pytest.raises(DependencyError, match="^no CUDA GPU is visible"):
        make_backend("tensorrt", export_dir, "cuda")


def test_cpu_device_is_refused(export_dir: Path):
    with pytest.raises(BackendUnavailableError, match="--device cuda only"):
        make_backend("tensorrt", export_dir, "cpu")


def test_modules_import_without_tensorrt_triton_or_torch():
    """A deployment box runs the engine with TensorRT and cuda-bindings only."""
    script = ("import sys; import mast.runtime.trt_backend, mast.plugins.trt_plugin, mast.export.trt_engine; "
              "print(sorted(m for m in ('torch', 'triton', 'tensorrt') if m in sys.modules))")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"


@pytest.mark.gpu
@needs_tensorrt_gpu
def test_engine_tracks_like_onnxruntime(tmp_path: Path):
    """mast-export --engine on a small random export, then the tensorrt and onnxruntime trackers
    on the same frames: the engine's parity figures are recorded and the masks agree."""
    from mast.export.cli import main
    from mast.core.engine_metadata import read_engine_metadata
    from mast.runtime.ort_backend import OrtBackend
    from mast.runtime.tracker import Tracker

    out = tmp_path / "model"
    with pytest.raises(SystemExit) as done:
        main(["--keys", "random", "--out", str(out), "--height", "64", "--width", "112", "--parity-frames", "0",
              "--engine", "--engine-precision", "fp32", "--timing-cache", str(tmp_path / "cache.bin")])
    assert done.value.code == 0
    meta = read_engine_metadata(out)
    assert meta.parity["probs_max_abs"] <= 1e-3 and (tmp_path / "cache.bin").is_file()
    trt_b = make_backend("tensorrt", out, "cuda")
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (64, 112, 3), dtype=np.uint8) for _ in range(8)]
    mask = np.zeros((64, 112), np.uint8)
    mask[16:48, 30:80] = 1
    a, b = Tracker(trt_b), Tracker(OrtBackend(out))
    a.start(frames[0], mask)
    b.start(frames[0], mask)
    for f in frames[1:]:
        assert (a.step(f) == b.step(f)).mean() > 0.99
