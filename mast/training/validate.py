"""J&F on a few DAVIS sequences during training (``mast-train --val-davis ROOT``).

Cheap on purpose: the first ``n`` sequences of the root, tracked at a low working size (default
240x427) with the weights of ``encoder.pt`` through the evaluation code (``mast-eval``'s tracker
and official J/F measures). A trend, not a benchmark figure.
"""
from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch

from mast.core.errors import InputError


def validation_sequences(root: str | Path, n: int) -> list[str]:
    """The first ``n`` sequences of the DAVIS root (InputError on a bad root, checked at start)."""
    from mast.evaluation.davis import DavisDataset

    sequences = DavisDataset(root).sequences()
    if not sequences:
        raise InputError(f"--val-davis {root}: no sequences found (expected JPEGImages/480p/<seq>/)")
    return sequences[:n]


def validate_davis(root: str | Path, sequences: list[str], checkpoint: Path, work_dir: Path,
                   size: tuple[int, int], device: str = "cpu") -> dict[str, float]:
    """Track ``sequences`` with ``checkpoint`` at ``size`` (H, W) and score them.

    Returns {"val_jf", "val_j", "val_f"} (fractions) and "val_s" (seconds). The global torch RNG is
    left untouched (building the tracker's encoder draws from it).
    """
    from mast.evaluation.davis import DavisDataset, evaluate_semisupervised
    from mast.evaluation.track import track_davis

    start = time.perf_counter()
    shutil.rmtree(work_dir, ignore_errors=True)
    with torch.random.fork_rng(devices=[]):
        track_davis(Path(root), sequences, work_dir, checkpoint, device=device, size=size)
    figures = evaluate_semisupervised(DavisDataset(root), work_dir, sequences).global_figures()
    shutil.rmtree(work_dir, ignore_errors=True)
    return {"val_jf": figures["J&F-Mean"], "val_j": figures["J-Mean"], "val_f": figures["F-Mean"],
            "val_s": time.perf_counter() - start}
