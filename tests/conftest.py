"""Shared fixtures: where the real data lives (``../shared`` beside the repository, or $MAST_SHARED),
and where the Triton kernel runs.

The Triton kernel runs on the GPU when torch sees one, else on CPU tensors under Triton's
interpreter: ``TRITON_INTERPRET=1`` must be set before ``mast.plugins.roi_kernel`` is imported
(``triton.jit`` reads it when it decorates), hence here, before any test module is collected."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


if not _cuda():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def device() -> str:
    """Where the Triton kernel's tensors live: cuda when available, else cpu (interpreter)."""
    return "cuda" if _cuda() else "cpu"


def _shared_dir() -> Path:
    return Path(os.environ.get("MAST_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder (data, parity fixture); tests that need it skip with the reason when absent."""
    path = _shared_dir()
    if not (path / "data").is_dir():
        pytest.skip(f"shared data not found at {path} (set MAST_SHARED to the folder holding data/ and parity/)")
    return path


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    return shared_dir / "data"


@pytest.fixture(scope="session")
def parity_dir(shared_dir: Path) -> Path:
    path = shared_dir / "parity"
    if not (path / "reference").is_dir():
        pytest.skip(f"parity fixture not found at {path}")
    return path


@pytest.fixture(scope="session")
def tol():
    """tests/tolerance.py: numeric tolerances derived from the float32 rounding of the computation
    (they hold on AVX2, AVX-512 and AMX CPUs alike)."""
    spec = importlib.util.spec_from_file_location("mast_test_tolerance", Path(__file__).with_name("tolerance.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def parity_weights(parity_dir: Path, tmp_path_factory) -> Path:
    """Official-format weights made by the parity fixture's own script (deterministic, a colour
    similarity kernel: they track real clips, unlike random weights)."""
    import torch

    spec = importlib.util.spec_from_file_location("make_parity_weights", parity_dir / "make_parity_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state, _ = module.make()
    path = tmp_path_factory.mktemp("parity") / "weights.pt"
    torch.save({"state_dict": state}, path)
    return path


@pytest.fixture(scope="session")
def demo_clip():
    """``load(n, (H, W))`` -> (the first ``n`` frames of the bundled demo clip, BGR uint8 resized to
    H x W with area interpolation; its first-frame mask resized with nearest)."""
    import cv2

    from mast.core.masks import read_mask
    from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK

    def load(n: int, size: tuple[int, int]):
        frames = [cv2.resize(cv2.imread(str(DEMO_FRAMES / f"{i:05d}.jpg")), size[::-1], interpolation=cv2.INTER_AREA)
                  for i in range(n)]
        return frames, cv2.resize(read_mask(DEMO_MASK), size[::-1], interpolation=cv2.INTER_NEAREST)

    return load


@pytest.fixture
def no_cuda_gpu(monkeypatch):
    """TensorRT importable (a stand-in) but no CUDA device: ``mast.plugins.gpu_env.gpu_info`` raises
    the DependencyError the real check gives."""
    from mast.core.errors import DependencyError
    from mast.plugins import gpu_env

    def no_gpu(device: int = 0):
        raise DependencyError("no CUDA GPU is visible (cudaErrorNoDevice, 0 device(s)): the TensorRT path needs "
                              "an NVIDIA GPU and driver")

    monkeypatch.setattr(gpu_env, "tensorrt", lambda: None)
    monkeypatch.setattr(gpu_env, "gpu_info", no_gpu)


@pytest.fixture
def one_thread():
    """Run the test with one torch thread (the 2-core dev machine is shared: OpenMP threads spinning
    against other processes made a step 10-25x slower), restoring the previous count after."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
