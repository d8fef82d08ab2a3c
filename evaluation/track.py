"""Track DAVIS sequences with the torch backend and write the masks as palette PNGs."""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from mast.core.checkpoint import KeySource
from mast.core.errors import InputError
from mast.core.masks import write_mask
from mast.core.model import key_encoder
from mast.evaluation.davis import DavisDataset, read_image
from mast.runtime.torch_backend import Precision, TorchBackend
from mast.runtime.tracker import Tracker

Progress = Callable[[str, int, int], None]


def _resize(frame: np.ndarray, mask: np.ndarray | None, size: tuple[int, int] | None):
    """Frame to ``size`` (H, W) with area interpolation, mask with nearest; unchanged when None."""
    if size is None:
        return frame, mask
    h, w = size
    frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
    if mask is not None:
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST)
    return frame, mask


def track_sequence(tracker: Tracker, dataset: DavisDataset, sequence: str, out_dir: Path,
                   size: tuple[int, int] | None = None, progress: Progress | None = None) -> float:
    """Propagate the first annotated mask of ``sequence`` through its later frames into
    ``out_dir/<sequence>/<frame>.png``. Returns the tracker's seconds per propagated frame."""
    first = dataset.annotation_paths(sequence)[0]
    frames = [p for p in dataset.frame_paths(sequence) if p.stem >= first.stem]
    if not frames or frames[0].stem != first.stem:
        raise InputError(f"{first} has no frame of the same name in {dataset.image_dir / sequence}")
    mask0 = dataset.first_mask(sequence)
    frame0 = read_image(frames[0])
    if mask0.shape != frame0.shape[:2]:
        raise InputError(f"{first} is {mask0.shape[1]}x{mask0.shape[0]} but its frame {frames[0]} is "
                         f"{frame0.shape[1]}x{frame0.shape[0]}: masks must have their frame's size")
    if not mask0.any():
        raise InputError(f"{first} has no object (all pixels 0): the first annotated mask must show the objects")
    full = frame0.shape[:2]
    folder = out_dir / sequence
    folder.mkdir(parents=True, exist_ok=True)
    small, small_mask = _resize(frame0, mask0, size)
    tracker.start(small, small_mask)
    write_mask(folder / f"{first.stem}.png", mask0)
    spent = 0.0
    for i, path in enumerate(frames[1:], start=1):
        small, _ = _resize(read_image(path), None, size)
        start = time.perf_counter()
        mask = tracker.step(small)
        spent += time.perf_counter() - start
        if size is not None:
            mask = cv2.resize(mask, (full[1], full[0]), interpolation=cv2.INTER_NEAREST)
        write_mask(folder / f"{path.stem}.png", mask)
        if progress is not None:
            progress(sequence, i + 1, len(frames))
    return spent / max(1, len(frames) - 1)


def track_davis(root: Path, sequences: list[str], out_dir: Path, checkpoint: Path | None,
                keys: KeySource = "model", device: str = "cpu", progress: Progress | None = None,
                size: tuple[int, int] | None = None, precision: Precision = "fp32") -> dict[str, float]:
    """Track every sequence of the DAVIS folder ``root`` into ``out_dir``; seconds per frame per sequence."""
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda but no CUDA GPU is visible to torch: use --device cpu")
    dataset = DavisDataset(root)
    tracker = Tracker(TorchBackend(key_encoder(keys, checkpoint), device=device, precision=precision))
    return {seq: track_sequence(tracker, dataset, seq, Path(out_dir), size, progress) for seq in sequences}
