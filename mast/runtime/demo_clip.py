"""The bundled demo clip: 25 frames of DAVIS ``camel`` at 427x240 and its first mask (torch-free).

Used by ``mast-run --demo``, ``mast-bench`` (default clip), the tests and :func:`mast.demo_clip`.
DAVIS footage is CC BY-NC 4.0: see ``mast/runtime/demo/NOTICE.md``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mast.core.images import list_images, read_image
from mast.core.masks import read_mask

DEMO_DIR = Path(__file__).resolve().parent / "demo"   # the clip in the DAVIS layout
DEMO_FRAMES = DEMO_DIR / "clip" / "JPEGImages" / "240p" / "camel"
DEMO_MASK = DEMO_DIR / "clip" / "Annotations" / "240p" / "camel" / "00000.png"


def demo_clip() -> tuple[list[np.ndarray], np.ndarray]:
    """The bundled clip: its frames (25 BGR ``uint8 [240, 427, 3]``, in order) and the first frame's
    mask (object ids ``uint8 [240, 427]``: 0 background, 1 the camel)."""
    frames = [read_image(path, "frame") for path in list_images(DEMO_FRAMES)]
    return frames, read_mask(DEMO_MASK)
