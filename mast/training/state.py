"""The resumable state of a run (``DIR/last.pt``) and the learning-rate schedule.

``last.pt`` is written atomically (``mast.core.checkpoint.save_checkpoint``: temp file + rename)
in the official layout, ``{'state_dict': encoder weights, ...}``, so ``mast-eval --checkpoint`` and
``mast-train --init`` accept it as they accept ``encoder.pt``; the other entries are

    format      "mast-train/1"
    step        optimiser steps completed
    optimizer   Adam state; scheduler: StepSchedule state; scaler: AMP loss-scaler state or None
    rng         torch (CPU and CUDA), numpy and python generator states
    config      TrainConfig.to_dict()

Everything is plain tensors and python values, loadable with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import random
from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mast.core.checkpoint import save_checkpoint
from mast.core.errors import CheckpointError

FORMAT = "mast-train/1"
TMP_GLOB = ".*.tmp*"  # save_checkpoint's temp files; a killed writer can leave one behind


@dataclass
class StepSchedule:
    """Piecewise-constant LR: ``base_lr * gamma ** (number of milestones <= step)``.

    ``step`` counts optimiser steps taken; ``lr()`` is the LR of the next one.
    """

    base_lr: float
    milestones: list[int]
    gamma: float = 0.5
    step: int = 0

    def lr(self, step: int | None = None) -> float:
        n = self.step if step is None else step
        return self.base_lr * self.gamma ** bisect_right(sorted(self.milestones), n)

    def apply(self, optimizer: torch.optim.Optimizer) -> float:
        """Set the LR of the next step on every parameter group; returns it."""
        lr = self.lr()
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def advance(self) -> None:
        self.step += 1

    def state_dict(self) -> dict[str, Any]:
        return {"base_lr": self.base_lr, "milestones": list(self.milestones), "gamma": self.gamma,
                "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lr, self.gamma, self.step = float(state["base_lr"]), float(state["gamma"]), int(state["step"])
        self.milestones = [int(m) for m in state["milestones"]]


def rng_state() -> dict[str, Any]:
    """Every generator a run may draw from, as tensors and python values."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "numpy": [kind, torch.from_numpy(keys.astype(np.int64)),
                                                         int(pos), int(has_gauss), float(gauss)],
             "python": random.getstate(), "cuda": []}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_state(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, schedule: StepSchedule,
               scaler: Any, step: int, config: dict[str, Any]) -> None:
    """Write the run state atomically (module docstring)."""
    extra = {"format": FORMAT, "step": step, "optimizer": optimizer.state_dict(),
             "scheduler": schedule.state_dict(), "scaler": scaler.state_dict() if scaler is not None else None,
             "rng": rng_state(), "config": config}
    save_checkpoint(path, model, extra=extra)


def load_state(path: Path) -> dict[str, Any]:
    """Read ``last.pt``; CheckpointError when it is missing, unreadable or not a training state."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint to resume at {path}: run without --resume first, or "
                              "point --out at the folder of the run to continue")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt files
        raise CheckpointError(f"cannot read {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a mast-train run state (no format {FORMAT!r}); "
                              "use --init for encoder weights")
    return state


def remove_stale_temps(folder: Path) -> list[Path]:
    """Delete temp files a killed writer left in ``folder``; returns them."""
    stale = sorted(folder.glob(TMP_GLOB))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale
