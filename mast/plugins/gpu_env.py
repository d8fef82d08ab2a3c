"""The one place that imports TensorRT and NVIDIA's ``cuda-bindings`` and checks for a GPU
(torch-free): every caller gets either the modules or a :class:`DependencyError` whose one-line
message says what is missing and how to install it.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import NamedTuple

from mast.core.errors import DependencyError

INSTALL_HINT = "pip install 'mast-tracker[gpu]' on a machine with an NVIDIA driver"


class TensorRT(NamedTuple):
    """The TensorRT modules: ``trt`` (``tensorrt``) and ``trtp`` (``tensorrt.plugin``)."""

    trt: ModuleType
    trtp: ModuleType


@dataclass(frozen=True)
class GpuInfo:
    """The CUDA device a TensorRT engine is built for or run on."""

    name: str
    compute_capability: tuple[int, int]

    @property
    def arch(self) -> int:
        """Compute capability as one number, e.g. 90 for 9.0."""
        return self.compute_capability[0] * 10 + self.compute_capability[1]


@cache
def tensorrt() -> TensorRT:
    """``tensorrt`` and ``tensorrt.plugin`` (>= 10.9, for ahead-of-time plugins), or DependencyError."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - optional dependency, imported here only
        import tensorrt.plugin as trtp  # noqa: PLC0415
    except (ImportError, OSError) as exc:   # OSError: the wheel is there but its native libraries are not
        raise DependencyError(f"TensorRT is not available ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}): "
                              f"{INSTALL_HINT}") from exc
    if not hasattr(trtp, "aot_impl"):
        raise DependencyError(f"TensorRT {trt.__version__} has no ahead-of-time plugins (needs >= 10.9): {INSTALL_HINT}")
    return TensorRT(trt, trtp)


@cache
def cudart() -> ModuleType:
    """``cuda.bindings.runtime`` with at least one visible CUDA device, or DependencyError."""
    try:
        from cuda.bindings import runtime  # noqa: PLC0415 - optional dependency, imported here only
    except ImportError as exc:
        raise DependencyError(f"NVIDIA cuda-bindings is not installed: {INSTALL_HINT}") from exc
    err, count = runtime.cudaGetDeviceCount()
    if err != runtime.cudaError_t.cudaSuccess or count == 0:
        raise DependencyError(f"no CUDA GPU is visible ({runtime.cudaGetErrorName(err)[1].decode()}, "
                              f"{count} device(s)): the TensorRT path needs an NVIDIA GPU and driver")
    return runtime


def check(result: tuple) -> tuple:
    """A cuda-bindings call's result without its status; DependencyError (one line) on a CUDA error."""
    err, *rest = result
    rt = cudart()
    if err != rt.cudaError_t.cudaSuccess:
        raise DependencyError(f"CUDA error {rt.cudaGetErrorName(err)[1].decode()}: "
                              f"{rt.cudaGetErrorString(err)[1].decode()}")
    return tuple(rest)


def gpu_info(device: int = 0) -> GpuInfo:
    """Name and compute capability of CUDA device ``device``."""
    (props,) = check(cudart().cudaGetDeviceProperties(device))
    name = props.name.decode(errors="replace").rstrip("\x00") if isinstance(props.name, bytes) else str(props.name)
    return GpuInfo(name, (int(props.major), int(props.minor)))


def require_tensorrt_gpu() -> GpuInfo:
    """The GPU the TensorRT path will use; DependencyError (one line) unless TensorRT,
    cuda-bindings and a CUDA GPU are all here."""
    tensorrt()
    return gpu_info()
