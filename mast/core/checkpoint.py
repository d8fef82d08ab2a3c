"""Checkpoints: the official MAST layout ``{'state_dict': ...}``, loaded strictly, saved atomically.

A checkpoint names its encoder architecture in an ``arch`` entry (``{"name": ..., settings}``):
absent (the official MAST checkpoints) or ``"mast-resnet18"`` is the MAST ResNet-18
(:class:`mast.core.encoder.Encoder`); ``"mobilenetv2"`` the compact encoder
(:class:`mast.core.mobilenet.CompactEncoder`, its :class:`CompactConfig` fields beside the name).
Every tool builds the encoder from that entry, so no flag says which one a file holds."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mast.core.encoder import Encoder
from mast.core.errors import CheckpointError
from mast.core.mobilenet import CompactConfig, CompactEncoder

KeySource = Literal["model", "lab", "random"]
RESNET_ARCH = "mast-resnet18"
ARCHS = (RESNET_ARCH, CompactEncoder.arch)
NOT_OURS = "not a mast-tracker checkpoint"


def build_encoder(arch: dict[str, Any] | None = None, path: str | Path = "checkpoint") -> nn.Module:
    """An untrained encoder of the architecture a checkpoint's ``arch`` entry names (None: ResNet-18)."""
    if arch is None or arch.get("name") == RESNET_ARCH:
        return Encoder()
    if not isinstance(arch, dict) or arch.get("name") not in ARCHS:
        name = arch.get("name") if isinstance(arch, dict) else arch
        raise CheckpointError(f"{path}: unknown encoder architecture {name!r} (expected one of {', '.join(ARCHS)}); "
                              "was it written by a newer mast-tracker?")
    settings = {k: tuple(v) if isinstance(v, list) else v for k, v in arch.items() if k != "name"}
    try:
        return CompactEncoder(CompactConfig(**settings))
    except TypeError as exc:
        raise CheckpointError(f"{path}: compact encoder settings {settings} not understood ({exc})") from exc


def arch_record(model: nn.Module) -> dict[str, Any] | None:
    """The ``arch`` entry for ``model``'s checkpoint (None for the ResNet-18: the official layout)."""
    return model.arch_record() if hasattr(model, "arch_record") else None


def _sniff(path: Path) -> str | None:
    """Why ``path`` cannot be a PyTorch checkpoint from its first bytes (None: it may be one):
    torch writes a zip archive (``PK``), older torch a pickle (``0x80``)."""
    with path.open("rb") as f:
        head = f.read(64)
    if not head:
        return "the file is empty (0 bytes); copy it again"
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"not a PyTorch file (it starts with bytes {head[:8].hex(' ')})"
    return f"a text file, not a PyTorch file (it starts with {text.splitlines()[0][:40]!r})"


def _load_failure(exc: Exception) -> str:
    """What a failed ``torch.load`` of a zip or pickle file means, in a few words."""
    message = str(exc)
    if "weights_only" in message or "Unsupported global" in message:
        return "it holds Python objects besides tensors (written by another program)"
    if isinstance(exc, EOFError) or any(s in message for s in ("central directory", "truncat", "failed finding")):
        return "the file is truncated or damaged; copy it again"
    first = next((line for line in message.splitlines() if line.strip()), "")
    return f"torch cannot read it ({type(exc).__name__}{': ' + first[:100] if first else ''})"


def read_checkpoint(path: str | Path, map_location: str = "cpu") -> dict[str, Any]:
    """The object stored in ``path``; a CheckpointError of one line for a missing, empty, truncated
    or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (give a .pt file written by mast-train or the official MAST code)")
    why = _sniff(path)
    if why is None:
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt files
            why = _load_failure(exc)
    if why is not None:
        raise CheckpointError(f"{NOT_OURS}: {path}: {why}; expected a .pt file written by mast-train or the official MAST code")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{NOT_OURS}: {path} holds a {type(obj).__name__}, expected {{'state_dict': {{name: tensor}}}}")
    return obj


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint object (``state_dict`` / ``model`` entry or bare)."""
    if isinstance(obj, dict):
        for name in ("state_dict", "model"):
            if isinstance(obj.get(name), dict):
                obj = obj[name]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{NOT_OURS}: {path} holds no state dict (expected {{'state_dict': {{name: tensor}}}} as MAST writes)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise CheckpointError naming the first key whose name or shape differs from ``model``'s."""
    expected = model.state_dict()
    for name, ref in expected.items():
        if name not in state:
            raise CheckpointError(f"{NOT_OURS}: {path}: missing key '{name}' {tuple(ref.shape)}")
        if tuple(state[name].shape) != tuple(ref.shape):
            raise CheckpointError(f"{NOT_OURS}: {path}: key '{name}' has shape "
                                  f"{tuple(state[name].shape)}, expected {tuple(ref.shape)}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(f"{NOT_OURS}: {path}: unexpected key '{extra[0]}'")


def load_encoder(path: str | Path, map_location: str = "cpu") -> nn.Module:
    """The encoder ``path`` holds (architecture from its ``arch`` entry), in eval mode, float32
    (official MAST checkpoints and ours, fp16 ok)."""
    path = Path(path)
    obj = read_checkpoint(path, map_location)
    state = _state_dict(obj, path)
    model = build_encoder(obj.get("arch"), path)
    check_state_dict(model, state, path)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return model.eval()


def save_checkpoint(path: str | Path, model: nn.Module, extra: dict[str, Any] | None = None,
                    half: bool = False) -> None:
    """Write ``{'state_dict': ..., 'arch': ..., **extra}`` atomically (temp file + rename); ``half``
    stores fp16. Tensors are stored contiguous (the official layout) whatever the model's memory
    format; ``arch`` is left out for the ResNet-18 (the official layout)."""
    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    arch = arch_record(model)
    torch.save({"state_dict": state, **({"arch": arch} if arch else {}), **(extra or {})}, tmp)
    os.replace(tmp, path)
