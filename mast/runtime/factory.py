"""Pick and build a backend by name (torch-free at import; each backend is imported lazily).

``make_backend("torch" | "onnxruntime" | "tensorrt" | "auto", model, device, keys, precision, radius)``.
torch is imported only inside the torch branch, so ``mast-run``/``mast-bench`` with
``--backend onnxruntime`` never load it.

``auto`` takes the first usable of: tensorrt (an export folder with ``mast.engine``, TensorRT and the
TensorRT backend installed) > onnxruntime CUDA (an export folder, the CUDA execution provider) >
torch CUDA (a checkpoint; an export folder only when it holds one ``*.pt``) > onnxruntime CPU (an
export folder) > torch CPU. ``device`` "cpu"/"cuda" restricts the choice; None lets it pick.

The model's geometry (key stride, attention radius) comes from the model itself, with no flag: a
checkpoint's encoder (``stride``, recorded in its ``arch`` entry) or an export's metadata;
:func:`model_config` gives the tracker configuration of a built backend. ``radius`` (``--radius``)
is the one speed option over it: a smaller attention window for a checkpoint; an export keeps the
radius it was exported with (``mast-export --radius``).
"""
from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from mast.core.config import ModelConfig, Precision, check_radius
from mast.core.engine_metadata import ENGINE_FILE
from mast.core.errors import NO_CUDA_GPU, InputError, MastError
from mast.core.metadata import ENCODER_FILE, METADATA_FILE, read_metadata
from mast.runtime.backend import Backend

BackendName = Literal["auto", "torch", "onnxruntime", "tensorrt"]
DeviceName = Literal["cpu", "cuda"]
KeySource = Literal["model", "lab", "random"]   # as mast.core.checkpoint.KeySource (that imports torch)

EXPORT_MARKERS = (METADATA_FILE, ENCODER_FILE)  # files that make a folder an export folder


class BackendUnavailableError(MastError):
    """The requested backend (or device) cannot run on this machine or with this model."""


@dataclass(frozen=True)
class Choice:
    """A resolved backend: ``name`` (torch/onnxruntime/tensorrt) on ``device`` (cpu/cuda)."""

    name: Literal["torch", "onnxruntime", "tensorrt"]
    device: DeviceName


# -- environment probes (no torch import unless a torch choice is being considered) ---------------
def shipped_weights() -> Path | None:
    """``mast/core/weights/mast.pt`` when the package ships it, else None (found without importing torch)."""
    spec = importlib.util.find_spec("mast.core")
    for base in (spec.submodule_search_locations or []) if spec else []:
        path = Path(base) / "weights" / "mast.pt"
        if path.is_file():
            return path
    return None


def is_export_folder(model: Path | None) -> bool:
    """True when ``model`` is a folder written by ``mast-export`` (has metadata.json or encoder.onnx)."""
    return model is not None and model.is_dir() and any((model / f).is_file() for f in EXPORT_MARKERS)


def folder_checkpoint(model: Path | None) -> Path | None:
    """The single ``*.pt`` checkpoint inside an export folder, if it holds exactly one."""
    pts = sorted(model.glob("*.pt")) if model is not None and model.is_dir() else []
    return pts[0] if len(pts) == 1 else None


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def torch_cuda_available() -> bool:
    """torch is installed and sees a CUDA GPU (imports torch)."""
    if not _installed("torch"):
        return False
    import torch  # noqa: PLC0415 - lazy on purpose
    return bool(torch.cuda.is_available())


def ort_cuda_available() -> bool:
    """onnxruntime is installed with the CUDA execution provider (onnxruntime-gpu)."""
    if not _installed("onnxruntime"):
        return False
    import onnxruntime  # noqa: PLC0415
    return "CUDAExecutionProvider" in onnxruntime.get_available_providers()


def tensorrt_available() -> bool:
    """TensorRT and our TensorRT backend module are both installed."""
    return _installed("tensorrt") and _installed("mast.runtime.trt_backend")


# -- the auto rule -------------------------------------------------------------------------------
def choose_backend(model: Path | None, device: DeviceName | None = None) -> Choice:
    """The backend ``auto`` picks for ``model`` (see the module docstring)."""
    export = is_export_folder(model)
    has_ckpt = not export or folder_checkpoint(model) is not None
    gpu_ok = device in (None, "cuda")
    candidates = (
        (export and gpu_ok and (model / ENGINE_FILE).is_file() and tensorrt_available(), Choice("tensorrt", "cuda")),
        (export and gpu_ok and ort_cuda_available(), Choice("onnxruntime", "cuda")),
        (has_ckpt and gpu_ok and torch_cuda_available(), Choice("torch", "cuda")),
        (export and device != "cuda", Choice("onnxruntime", "cpu")),
        (has_ckpt and device != "cuda", Choice("torch", "cpu")),
    )
    for usable, choice in candidates:
        if usable:
            return choice
    raise BackendUnavailableError(
        f"no backend can run {model or 'the shipped weights'} on device {device}: "
        "install onnxruntime-gpu / a CUDA torch, or use --device cpu")


# -- builders --------------------------------------------------------------------------------------
def make_backend(name: BackendName = "auto", model: Path | None = None, device: DeviceName | None = None,
                 keys: KeySource = "model", precision: Precision = "fp32", radius: int | None = None) -> Backend:
    """A ready backend (see :class:`mast.runtime.backend.Backend`).

    ``model``: a checkpoint ``.pt`` (torch) or an export folder (onnxruntime/tensorrt; torch too when
    it holds one ``*.pt``); None = the shipped weights. ``keys`` (torch only): "model" (the weights),
    "lab" (raw colour keys) or "random" (untrained encoder). ``precision``: torch fp32 | bf16 | fp16 (the
    encoder's; bf16 also the read's where the CPU has AVX512-BF16); onnxruntime fp32 | bf16 (the memory
    read's dot products: AVX512-BF16 CPUs; the encoder runs as exported). ``radius``: the attention
    window's radius in key pixels (None: the model's, 12 at key stride 4); a checkpoint takes any
    (:func:`mast.core.config.check_radius`), an export only its own.
    Raises a :class:`MastError` with a one-line message when it cannot be built.
    """
    model = Path(model) if model is not None else None
    if model is not None and not model.exists():
        raise InputError(f"model not found: {model} (expected a checkpoint .pt or a folder from mast-export)")
    if name == "auto":
        choice = choose_backend(model, device)
        name, device = choice.name, choice.device
    if name != "torch":
        _torch_only_options(name, keys, precision)
    if name == "torch":
        return _torch_backend(model, device or "cpu", keys, precision, radius)
    if name == "onnxruntime":
        return _ort_backend(model, device or "cpu", precision, radius)
    if name == "tensorrt":
        return _trt_backend(model, device or "cuda", radius)
    raise InputError(f"unknown backend {name!r}: expected auto, torch, onnxruntime or tensorrt")


def _torch_only_options(name: str, keys: KeySource, precision: Precision) -> None:
    if keys != "model":
        raise InputError(f"--keys {keys} applies to the torch backend only (the {name} backend runs "
                         "the exported encoder): drop --keys or use --backend torch")
    if precision != "fp32" and not (name == "onnxruntime" and precision == "bf16"):
        also = " (and bf16 to onnxruntime's memory read)" if precision == "bf16" else ""
        raise InputError(f"--precision {precision} applies to the torch backend{also}: drop it for {name}")


def _torch_checkpoint(model: Path | None, keys: KeySource) -> Path | None:
    """The checkpoint the torch backend loads (None for lab/random keys)."""
    if keys != "model":
        return None
    if model is not None and model.is_dir():
        ckpt = folder_checkpoint(model)
        if ckpt is None:
            raise InputError(f"{model} is a folder without one .pt checkpoint: the torch backend needs a "
                             "checkpoint file; pass --model FILE.pt, or --backend onnxruntime for an export folder")
        return ckpt
    ckpt = model or shipped_weights()
    if ckpt is None:
        raise InputError("no model: no --model given and no shipped weights (mast/core/weights/mast.pt) in this "
                         "package: pass --model CHECKPOINT.pt or an export folder, or --keys lab")
    return ckpt


def _torch_backend(model: Path | None, device: str, keys: KeySource, precision: Precision,
                   radius: int | None = None) -> Backend:
    if not _installed("torch"):
        raise BackendUnavailableError("the torch backend needs PyTorch (`pip install mast-tracker[train]`); "
                                      "or export the model and use --backend onnxruntime")
    checkpoint = _torch_checkpoint(model, keys)
    import torch  # noqa: PLC0415 - torch only inside the torch branch
    from mast.core.model import key_encoder  # noqa: PLC0415
    from mast.runtime.torch_backend import TorchBackend  # noqa: PLC0415
    if device == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(NO_CUDA_GPU)
    encoder = key_encoder(keys, checkpoint)
    # the checkpoint's stride, and its radius unless one is given
    attention = ModelConfig.for_stride(getattr(encoder, "stride", ModelConfig.stride), radius=radius).attention
    return TorchBackend(encoder, device=device, precision=precision, attention=attention)


def exported_config(model: Path, radius: int | None = None) -> ModelConfig:
    """The tracker configuration of the export folder ``model``: its metadata's key stride and
    attention. ``radius``: the one a user asked for; InputError (one line) when it is not the
    export's (its read graph and engine are built for their radius)."""
    meta = read_metadata(model)
    attention = meta.attention_config
    if radius is not None and check_radius(radius) != attention.radius:
        raise InputError(f"--radius {radius}: {model} was exported with radius {attention.radius} (its memory read "
                         f"is built for it): drop --radius, or re-export with mast-export --radius {radius}")
    return replace(ModelConfig.for_stride(meta.stride), attention=attention)


def model_config(backend: Backend, label_offset: int | None = None) -> ModelConfig:
    """The tracker configuration (:class:`ModelConfig`) of the model ``backend`` runs, built with
    :func:`make_backend`: its key stride (an export's metadata, or the torch encoder's ``stride``),
    the attention the backend reads with (its ``attention``, or the export's: ``--radius`` included;
    what :class:`~mast.runtime.tracker.Tracker` checks) and the label offset of that stride unless
    ``label_offset`` is given (:meth:`ModelConfig.for_stride`)."""
    meta = getattr(backend, "meta", None)   # onnxruntime, tensorrt: the export's metadata
    stride = meta.stride if meta is not None else getattr(getattr(backend, "encoder", None), "stride", ModelConfig.stride)
    attention = getattr(backend, "attention", None) or (meta.attention_config if meta is not None else None)
    config = ModelConfig.for_stride(stride, label_offset)
    return config if attention is None else replace(config, attention=attention)


def _ort_backend(model: Path | None, device: str, precision: Precision = "fp32", radius: int | None = None) -> Backend:
    if not is_export_folder(model):
        raise InputError(f"the onnxruntime backend needs --model EXPORT_DIR (a folder written by mast-export "
                         f"with {EXPORT_MARKERS[0]}), got {model or 'none'}")
    cls = _load("mast.runtime.ort_backend", "OrtBackend", "onnxruntime")
    return cls(model, device, exported_config(model, radius), read_precision=precision)


def _trt_backend(model: Path | None, device: str, radius: int | None = None) -> Backend:
    if device != "cuda":
        raise BackendUnavailableError("the tensorrt backend runs on --device cuda only")
    cls = _load("mast.runtime.trt_backend", "TrtBackend", "tensorrt")
    from mast.plugins.gpu_env import require_tensorrt_gpu  # noqa: PLC0415 - TensorRT only in this branch

    require_tensorrt_gpu()   # one line naming what is missing (TensorRT, cuda-bindings, a GPU) and the install
    if not is_export_folder(model):
        raise InputError(f"the tensorrt backend needs --model EXPORT_DIR (a folder written by mast-export "
                         f"--engine), got {model or 'none'}")
    return cls(model, device, exported_config(model, radius))


def _load(module: str, attr: str, name: str) -> Any:
    """``module.attr``, or a one-line BackendUnavailableError when the backend is not there yet."""
    if not _installed(module):
        raise BackendUnavailableError(f"the {name} backend is not available yet in this version of mast "
                                      f"({module} is missing): use --backend torch or onnxruntime")
    return getattr(importlib.import_module(module), attr)


def describe(backend: Backend) -> str:
    """One-line description of a built backend, e.g. ``torch (cpu, fp32)``."""
    bits = [str(backend.device)]
    if backend.precision:
        bits.append(str(backend.precision))
    if backend.input_size:
        h, w = backend.input_size
        bits.append(f"fixed {h}x{w}")
    return f"{backend.name} ({', '.join(bits)})"
