"""Where each 4x4 cell's label is read (``ModelConfig.label_offset``) and what it does to a tracked mask.

    python benchmarks/label_alignment.py [--checkpoint F.pt] [--offsets 0 1 2]

Two clips, each tracked once per offset with the torch backend (shipped weights by default):

- **static**: frame 0 of ``../shared/data/davis2016-val-dev`` blackswan repeated 30 times (nothing
  moves, so the right answer is the first mask on every frame), tracked at 240x427 as mast-eval
  does; IoU of the last frame's mask with the first mask and the shift of its centroid (px, 480p).
- **demo**: the bundled camel clip (25 frames, 240p) against its ground truth: mean and worst IoU,
  and the share of the predicted mask that lies outside the camel.

Offset 0 is the published MAST code (labels at each cell's top-left pixel, 1.5 px before where
the upsampled prediction is put back); 1 is the default. Prints one line per clip and offset.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import cv2
import numpy as np

from mast.core.config import ModelConfig
from mast.core.masks import read_mask
from mast.core.model import key_encoder
from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK
from mast.runtime.torch_backend import TorchBackend
from mast.runtime.tracker import Tracker

SHARED = Path(os.environ.get("MAST_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def track(frames: list[np.ndarray], first: np.ndarray, offset: int, checkpoint: str | None,
          size: tuple[int, int] | None) -> list[np.ndarray]:
    """Masks of ``frames[1:]`` tracked from ``first`` (ids ``[H, W]``) with labels read at ``offset``."""
    tracker = Tracker(TorchBackend(key_encoder("model", checkpoint)), ModelConfig(label_offset=offset), size=size)
    tracker.start(frames[0], first)
    return [tracker.step(f) for f in frames[1:]]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def static_clip(offset: int, checkpoint: str | None) -> str:
    seq = SHARED / "data" / "davis2016-val-dev"
    frame = cv2.imread(str(seq / "JPEGImages/480p/blackswan/00000.jpg"))
    first = (read_mask(seq / "Annotations/480p/blackswan/00000.png") > 0).astype(np.uint8)
    last = track([frame] * 30, first, offset, checkpoint, (240, 427))[-1] > 0
    (y0, x0), (y1, x1) = (np.argwhere(m).mean(0) for m in (first > 0, last))
    return (f"static, offset {offset}: frame 29 IoU with the first mask {iou(last, first > 0):.3f}, "
            f"centroid moved ({y1 - y0:+.1f}, {x1 - x0:+.1f}) px (down, right)")


def demo_clip(offset: int, checkpoint: str | None) -> str:
    paths = sorted(Path(DEMO_FRAMES).glob("*.jpg"))
    truth = [read_mask(p) > 0 for p in sorted(Path(DEMO_MASK).parent.glob("*.png"))]
    masks = track([cv2.imread(str(p)) for p in paths], truth[0].astype(np.uint8), offset, checkpoint, None)
    ious = [iou(m > 0, t) for m, t in zip(masks, truth[1:])]
    outside = [float(((m > 0) & ~t).sum() / max(1, (m > 0).sum())) for m, t in zip(masks, truth[1:])]
    return (f"demo, offset {offset}: IoU mean {np.mean(ious):.3f}, worst {min(ious):.3f}; share of the mask "
            f"outside the camel mean {np.mean(outside):.3f}, worst {max(outside):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=None, help="encoder weights (default: the shipped ones)")
    parser.add_argument("--offsets", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args()
    for offset in args.offsets:
        print(static_clip(offset, args.checkpoint), flush=True)
    for offset in args.offsets:
        print(demo_clip(offset, args.checkpoint), flush=True)


if __name__ == "__main__":
    main()
