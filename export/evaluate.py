"""Track DAVIS sequences with an exported model (``mast-eval --model DIR --backend onnxruntime``), torch-free.

Same outputs as :func:`mast.evaluation.track.track_davis` (palette PNGs ``out_dir/<seq>/<frame>.png``
at the frames' own size, first mask copied); the backend comes from
:func:`mast.runtime.factory.make_backend`, so nothing here imports torch for onnxruntime.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


from mast.core.errors import InputError
from mast.evaluation.davis import DavisDataset
from mast.evaluation.track import track_sequence
from mast.runtime.tracker import Tracker

Progress = Callable[[str, int, int], None]


def track_davis_backend(root: Path, sequences: list[str], out_dir: Path, model: Path,
                        backend: str = "onnxruntime", device: str = "cpu", progress: Progress | None = None,
                        size: tuple[int, int] | None = None, make: Callable[..., Any] | None = None) -> dict[str, float]:
    """Track every sequence of the DAVIS folder ``root`` into ``out_dir`` with the exported model
    folder ``model`` on ``backend`` (onnxruntime, or any name ``make_backend`` takes) and ``device``.

    ``size`` (H, W): must be the model's input size when given (an exported model has one fixed
    size; frames are resized to it and masks back). Returns seconds per frame per sequence.
    """
    if make is None:
        from mast.runtime.factory import make_backend as make  # noqa: PLC0415 - torch-free, lazy by design
    engine = make(backend, model=Path(model), device=device)
    fixed = getattr(engine, "input_size", None)
    if size is not None and fixed is not None and tuple(size) != tuple(fixed):
        raise InputError(f"--size {size[0]}x{size[1]} but the model {model} was exported for "
                         f"{fixed[0]}x{fixed[1]}: drop --size, or re-export with mast-export --height/--width")
    dataset = DavisDataset(root)
    tracker = Tracker(engine, size=fixed or size)
    out_dir = Path(out_dir)
    return {seq: track_sequence(tracker, dataset, seq, out_dir, progress) for seq in sequences}
