"""The README's demo picture: frames 0, 8, 16, 24 of a tracked clip with their masks, 2 x 2.

    mast-run --demo --save-masks mast-demo/masks            # the bundled clip, shipped weights
    python benchmarks/demo_overlay.py --masks mast-demo/masks --out docs/demo_overlay.png

Frames come from the bundled clip (``mast.runtime.demo_clip.DEMO_FRAMES``) unless ``--frames`` names
another folder; each tile is the frame with its mask's objects tinted and the frame number.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from mast.core.masks import read_mask

COLOURS = np.array([[0, 0, 0], [40, 40, 200], [60, 180, 60], [200, 80, 40], [0, 200, 220]], np.uint8)  # BGR


def tile(frame: np.ndarray, mask: np.ndarray, label: str) -> np.ndarray:
    """``frame`` (BGR ``[H, W, 3]``) with the objects of ``mask`` (ids ``[H, W]``) tinted, ``label`` top left."""
    mask = cv2.resize(mask, frame.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    tint = COLOURS[np.minimum(mask, len(COLOURS) - 1)]
    out = np.where(mask[..., None] > 0, (0.45 * frame + 0.55 * tint).astype(np.uint8), frame)
    cv2.putText(out, label, (8, 28), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def main() -> None:
    from mast.runtime.demo_clip import DEMO_FRAMES

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--masks", required=True, type=Path, help="folder of tracked masks (00000.png ...)")
    parser.add_argument("--frames", default=DEMO_FRAMES, type=Path, help="folder of the clip's frames")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--indices", default="0,8,16,24")
    args = parser.parse_args()
    tiles = []
    for k in (int(i) for i in args.indices.split(",")):
        frame = cv2.imread(str(args.frames / f"{k:05d}.jpg"), cv2.IMREAD_COLOR)
        if frame is None:
            raise SystemExit(f"cannot read frame {args.frames / f'{k:05d}.jpg'}")
        tiles.append(tile(frame, read_mask(args.masks / f"{k:05d}.png"), f"frame {k}"))
    rows = [np.hstack(tiles[i:i + 2]) for i in range(0, len(tiles), 2)]
    cv2.imwrite(str(args.out), np.vstack(rows))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
