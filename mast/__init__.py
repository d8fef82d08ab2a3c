"""MAST self-supervised dense tracker: train on raw video, export to ONNX/TensorRT, track in real time.

The Python front door (each name is imported on first use, so ``import mast`` loads neither torch
nor OpenCV)::

    import mast
    frames, first_mask = mast.demo_clip()            # BGR uint8 [H, W, 3] frames, ids uint8 [H, W]
    tracker = mast.open_tracker()                    # shipped weights, the fastest backend here
    masks = list(tracker.track(frames, first_mask))  # one uint8 [H, W] id mask per frame

Subpackages, one-way layers (docs/DESIGN.md): ``mast.training`` > ``mast.evaluation`` > ``mast.export``
> ``mast.runtime`` > ``mast.plugins`` > ``mast.core``.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {   # public name -> the module that defines it
    "open_tracker": "mast.runtime.api",
    "connect_tracker": "mast.runtime.api",
    "demo_clip": "mast.runtime.demo_clip",
    "track": "mast.runtime.tracker",
    "Tracker": "mast.runtime.tracker",
    "ObjectTracker": "mast.runtime.tracker",
    "working_size": "mast.runtime.tracker",
    "open_source": "mast.runtime.sources",
    "iter_records": "mast.runtime.stream",
    "read_mask": "mast.core.masks",
    "write_mask": "mast.core.masks",
    "read_image": "mast.core.images",
    "MastError": "mast.core.errors",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """Import a public name's module when the name is first used (PEP 562)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'mast' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
