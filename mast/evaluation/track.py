"""Track DAVIS sequences and write the masks as palette PNGs (torch imported only for the torch backend).

:func:`track_davis` runs a checkpoint on the torch backend; :func:`track_davis_backend` runs an
exported model folder on any backend :func:`mast.runtime.factory.make_backend` builds (onnxruntime:
torch-free). Both write the same outputs (``out_dir/<seq>/<frame>.png`` at the frames' own size,
first mask copied).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from mast.core.config import ModelConfig
from mast.core.errors import InputError
from mast.core.images import read_image
from mast.core.masks import write_mask
from mast.evaluation.davis import DavisDataset
from mast.runtime.factory import model_config
from mast.runtime.tracker import Tracker, working_size

Progress = Callable[[str, int, int], None]


def first_frame(dataset: DavisDataset, sequence: str) -> tuple[list[Path], np.ndarray, np.ndarray]:
    """The frames from the first annotated one on, that frame's image and its mask (checked)."""
    first = dataset.annotation_paths(sequence)[0]
    frames = [p for p in dataset.frame_paths(sequence) if p.stem >= first.stem]
    if not frames or frames[0].stem != first.stem:
        raise InputError(f"{first} has no frame of the same name in {dataset.image_dir / sequence}")
    mask, image = dataset.first_mask(sequence), read_image(frames[0], "frame")
    if mask.shape != image.shape[:2]:
        raise InputError(f"{first} is {mask.shape[1]}x{mask.shape[0]} but its frame {frames[0]} is "
                         f"{image.shape[1]}x{image.shape[0]}: masks must have their frame's size")
    if not mask.any():
        raise InputError(f"{first} has no object (all pixels 0): the first annotated mask must show the objects")
    return frames, image, mask


def track_sequence(tracker: Tracker, dataset: DavisDataset, sequence: str, out_dir: Path,
                   progress: Progress | None = None) -> float:
    """Propagate the first annotated mask of ``sequence`` into ``out_dir/<sequence>/<frame>.png``
    (frames at their own size; the tracker resizes to its working size and masks back).
    Returns the tracker's seconds per propagated frame."""
    frames, image, mask = first_frame(dataset, sequence)
    folder = Path(out_dir) / sequence
    folder.mkdir(parents=True, exist_ok=True)
    tracker.start(image, mask)
    write_mask(folder / f"{frames[0].stem}.png", mask)
    spent = 0.0
    for i, path in enumerate(frames[1:], start=1):
        image = read_image(path, "frame")
        start = time.perf_counter()
        pred = tracker.step(image)
        spent += time.perf_counter() - start
        write_mask(folder / f"{path.stem}.png", pred)
        if progress is not None:
            progress(sequence, i + 1, len(frames))
    return spent / max(1, len(frames) - 1)


def track_davis(root: Path, sequences: list[str], out_dir: Path, checkpoint: Path | None,
                keys: str = "model", device: str = "cpu", progress: Progress | None = None,
                size: tuple[int, int] | None = None, precision: str = "fp32",
                config: ModelConfig | None = None, label_offset: int | None = None,
                radius: int | None = None) -> dict[str, float]:
    """Track every sequence of the DAVIS folder ``root`` into ``out_dir`` with the torch backend
    (``checkpoint``, or the shipped weights when None; ``keys`` and ``precision`` as
    :func:`~mast.runtime.factory.make_backend` takes them); seconds per frame per sequence.
    ``size`` (H, W): working size (frames resized, masks back); ``config``: the tracker's, None = the
    model's (its key stride and window: :func:`~mast.runtime.factory.model_config`) with
    ``label_offset`` when given (0 reproduces the published code); ``radius``: the attention window's
    (None: the model's; :func:`~mast.runtime.factory.make_backend`)."""
    from mast.runtime.factory import make_backend  # noqa: PLC0415 - lazy: the torch backend imports torch

    backend = make_backend("torch", model=checkpoint, device=device, keys=keys, precision=precision, radius=radius)
    try:
        dataset = DavisDataset(root)
        tracker = Tracker(backend, config or model_config(backend, label_offset), size=size)
        return {seq: track_sequence(tracker, dataset, seq, Path(out_dir), progress) for seq in sequences}
    finally:
        backend.close()


def track_davis_backend(root: Path, sequences: list[str], out_dir: Path, model: Path,
                        backend: str = "onnxruntime", device: str = "cpu", progress: Progress | None = None,
                        size: tuple[int, int] | None = None, make: Callable[..., Any] | None = None,
                        config: ModelConfig | None = None, label_offset: int | None = None,
                        precision: str | None = None, radius: int | None = None) -> dict[str, float]:
    """Track every sequence of the DAVIS folder ``root`` into ``out_dir`` with the exported model
    folder ``model`` on ``backend`` (onnxruntime, or any name ``make_backend`` takes) and ``device``.

    ``size`` (H, W): must be the model's input size when given (an exported model has one fixed
    size; frames are resized to it and masks back); ``config`` and ``label_offset`` as
    :func:`track_davis`'s (None: the export's stride); ``precision``: ``make_backend``'s (None: its
    default; bf16 on onnxruntime: the memory read in bf16); ``radius``: refused unless the export's
    (its read is built for it). Returns seconds per frame per sequence.
    """
    if make is None:
        from mast.runtime.factory import make_backend as make  # noqa: PLC0415 - torch-free, lazy by design
    options = {k: v for k, v in (("precision", precision), ("radius", radius)) if v is not None}
    engine = make(backend, model=Path(model), device=device, **options)
    try:
        size = working_size(size, engine.input_size, model)   # the one --size rule of every command
        dataset = DavisDataset(root)
        tracker = Tracker(engine, config or model_config(engine, label_offset), size=size)
        return {seq: track_sequence(tracker, dataset, seq, Path(out_dir), progress) for seq in sequences}
    finally:
        engine.close()
