"""Held-out reconstruction loss: the cheap validation signal of training.

The training loss is measured on frames the encoder is learning from; this one is measured on
frame pairs it never trains on (the sequences of a DAVIS root, e.g. ``davis2016-val-dev``; only
the frames are read, never the masks), in eval mode, exactly as the objective computes it
(``mast.training.objective``: Lab, one chroma channel dropped, restricted-window read, x20 Huber),
next to two predictors that need no encoder:

identity  the reference's dropped channel copied at the same pixel: what a "tracker" that never
          moves reconstructs. An encoder whose loss is not below it has learned no useful
          correspondence at this frame gap.
zero      the neutral chroma (grey) everywhere: the scale of the task.

Beside the loss: the encoder's round-trip spread on the same pairs ("spread", key pixels^2,
``mast.training.objective.cycle_spread``): how far a pixel lands from itself after reading the
reference and back; the term ``mast-train --cycle-weight`` trains against.

Both chroma channels are scored for every pair (no random draw), so the figure is deterministic.
Pairs: (t, t + gap) for t = 0, every, 2 every, ... in each sequence, resized to ``size`` (H, W;
the 16:9 default keeps DAVIS's aspect) with ``cv2.INTER_AREA``.

Command line (scores checkpoints side by side; ``colour-prior`` names the analytic prior)::

    python -m mast.training.holdout --davis ../shared/data/davis2016-val-dev mast/core/weights/mast.pt colour-prior

(``--label-offset 0``: the references' values at the cells' top-left pixels, as the published code
and every figure measured before the option existed.)
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from mast.core.errors import InputError, MastError
from mast.training.objective import ObjectiveConfig, cycle_spread, encode, huber_loss, read_dropped


@dataclass(frozen=True)
class HoldoutConfig:
    """Which held-out pairs are scored.

    size:  (H, W) the frames are resized to (multiples of 4; default keeps 854x480's aspect).
    gap:   frames between reference and target (inference reads t-1, t-3, t-5; 5 is the hardest).
    every: a pair starts every this many frames.
    batch: pairs per encoder call.
    """

    size: tuple[int, int] = (128, 228)
    gap: int = 5
    every: int = 8
    batch: int = 8


def holdout_pairs(root: str | Path, config: HoldoutConfig = HoldoutConfig()) -> torch.Tensor:
    """uint8 BGR ``[N, 2, 3, H, W]`` (reference, target) pairs of every sequence under ``root``."""
    from mast.evaluation.davis import DavisDataset

    dataset = DavisDataset(root)
    pairs = []
    for sequence in dataset.sequences():
        paths = dataset.frame_paths(sequence)
        for t in range(0, len(paths) - config.gap, config.every):
            pairs.append(np.stack([_read(p, config.size) for p in (paths[t], paths[t + config.gap])]))
    if not pairs:
        raise InputError(f"{root}: no frame pairs {config.gap} frames apart (expected JPEGImages/480p/<seq>/*.jpg)")
    return torch.from_numpy(np.stack(pairs)).permute(0, 1, 4, 2, 3).contiguous()


def _read(path: Path, size: tuple[int, int]) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read frame {path} (expected a JPEG/PNG image)")
    return cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)


@torch.no_grad()
def holdout_losses(encoder: nn.Module, pairs: torch.Tensor, config: HoldoutConfig = HoldoutConfig(),
                   objective: ObjectiveConfig = ObjectiveConfig()) -> dict[str, float]:
    """Mean x20-Huber loss over ``pairs`` and both chroma channels of the encoder's reconstruction
    ("loss"), the identity predictor ("identity") and the zero predictor ("zero"); and the mean
    round-trip spread of the encoder's keys ("spread", key pixels^2, ``cycle_spread``).

    The encoder runs in eval mode on its own device; each module's mode is restored afterwards (a
    run with frozen batch norms keeps them in eval mode).
    """
    modes = {module: module.training for module in encoder.modules()}
    encoder.eval()
    device = next(encoder.parameters()).device
    totals = {"loss": 0.0, "identity": 0.0, "zero": 0.0, "spread": 0.0}
    count = 0
    try:
        for start in range(0, len(pairs), config.batch):
            frames = pairs[start:start + config.batch].to(device)
            for channel in (1, 2):
                n = len(frames)
                channels = torch.full((n,), channel, dtype=torch.int64)
                distances = torch.full((n, 1), config.gap, dtype=torch.int64)
                keys, dropped = encode(encoder, frames, channels, objective)
                pred = read_dropped(keys, dropped, distances, objective, frames.shape[-2:])
                totals["spread"] += n * float(cycle_spread(keys, distances, objective.attention))
                for name, guess in (("loss", pred), ("identity", dropped[:, 0]), ("zero", torch.zeros_like(pred))):
                    totals[name] += n * float(huber_loss(guess, dropped[:, -1], objective.huber_scale))
                count += n
    finally:
        for module, training in modes.items():
            module.training = training
    return {name: total / count for name, total in totals.items()}


def main(argv: list[str] | None = None) -> None:
    """Print the held-out loss of each checkpoint next to the identity and zero predictors."""
    parser = argparse.ArgumentParser(description="Held-out reconstruction loss of MAST checkpoints.")
    parser.add_argument("--davis", required=True, help="DAVIS root whose frames are held out")
    parser.add_argument("checkpoints", nargs="+", help="encoder .pt files, or colour-prior / texture-prior / imagenet-mobilenetv2")
    parser.add_argument("--label-offset", type=int, default=ObjectiveConfig().label_offset, choices=range(4),
                        help="pixel of each 4x4 cell the references' values are read at (default 1; 0 = the "
                             "published code, what figures measured before the option existed used)")
    args = parser.parse_args(argv)
    from mast.training.pretrained import named_encoder  # noqa: PLC0415 - the priors and ImageNet loader only here

    objective = ObjectiveConfig(label_offset=args.label_offset)
    try:
        pairs = holdout_pairs(args.davis)
        print(f"{len(pairs)} held-out pairs from {args.davis}")
        for name in args.checkpoints:
            figures = holdout_losses(named_encoder(name), pairs, objective=objective)
            print(f"{name}: loss {figures['loss']:.4f}  identity {figures['identity']:.4f}  zero {figures['zero']:.4f}"
                  f"  round-trip spread {figures['spread']:.2f} px^2", flush=True)
    except MastError as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":  # pragma: no cover
    main()
