"""Checkpoints: the official MAST layout ``{'state_dict': ...}``, loaded strictly, saved atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from mast.core.encoder import Encoder
from mast.core.errors import CheckpointError

KeySource = Literal["model", "lab", "random"]


def _state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint object (``state_dict`` / ``model`` entry or bare)."""
    if isinstance(obj, dict):
        for name in ("state_dict", "model"):
            if isinstance(obj.get(name), dict):
                obj = obj[name]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state dict (expected {{'state_dict': {{name: tensor}}}} as MAST writes)")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Raise CheckpointError naming the first key whose name or shape differs from ``model``'s."""
    expected = model.state_dict()
    for name, ref in expected.items():
        if name not in state:
            raise CheckpointError(f"{path} is not a MAST encoder checkpoint: missing key '{name}' {tuple(ref.shape)}")
        if tuple(state[name].shape) != tuple(ref.shape):
            raise CheckpointError(f"{path} is not a MAST encoder checkpoint: key '{name}' has shape "
                                  f"{tuple(state[name].shape)}, expected {tuple(ref.shape)}")
    extra = [k for k in state if k not in expected]
    if extra:
        raise CheckpointError(f"{path} is not a MAST encoder checkpoint: unexpected key '{extra[0]}'")


def load_encoder(path: str | Path, map_location: str = "cpu") -> Encoder:
    """An ``Encoder`` in eval mode, float32, with the weights of ``path`` (official or ours, fp16 ok)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} (give a .pt file written by mast-train or the official MAST code)")
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"cannot read checkpoint {path}: {str(exc).splitlines()[0]}") from exc
    state = _state_dict(obj, path)
    model = Encoder()
    check_state_dict(model, state, path)
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return model.eval()


def save_checkpoint(path: str | Path, model: nn.Module, extra: dict[str, Any] | None = None,
                    half: bool = False) -> None:
    """Write ``{'state_dict': ..., **extra}`` atomically (temp file + rename); ``half`` stores fp16.
    Tensors are stored contiguous (the official layout) whatever the model's memory format."""
    path = Path(path)
    state = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in model.state_dict().items()}
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save({"state_dict": state, **(extra or {})}, tmp)
    os.replace(tmp, path)
