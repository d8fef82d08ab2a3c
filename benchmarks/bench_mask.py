"""``mast-mask`` quality: mean IoU of first-frame masks made from ground-truth boxes.

    OMP_NUM_THREADS=1 python benchmarks/bench_mask.py [--davis ../shared/data/davis2016-val-dev]

For the first frame of every sequence (``JPEGImages/480p/<seq>/00000.jpg``, ground truth
``Annotations/480p/<seq>/00000.png``, 0/255, one object), the box is the ground truth's extent
(X1/Y1 exclusive) and each method's mask is scored by IoU against the ground truth:

- **box**: the box itself, filled;
- **plain GrabCut**: ``cv2.grabCut`` on the whole image, ``GC_INIT_WITH_RECT``, 5 iterations;
- ablations of :mod:`mast.runtime.boxmask` (local context alone, clean-up alone);
- **mast-mask**: :func:`mast.runtime.boxmask.boxes_to_mask` with its defaults.

Prints one markdown table (per sequence, the mean, seconds per frame) and the CPU.
"""
from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from mast.core.masks import read_mask
from mast.runtime.boxmask import Box, GrabCutConfig, boxes_to_mask, mask_box

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DAVIS = REPO.parent / "shared" / "data" / "davis2016-val-dev"
Method = Callable[[np.ndarray, Box], np.ndarray]   # (bgr [H, W, 3], box) -> bool mask [H, W]


def cpu_name() -> str:
    out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    return next((ln.split(":", 1)[1].strip() for ln in out.splitlines() if ln.startswith("Model name")), "?")


def box_mask(bgr: np.ndarray, box: Box) -> np.ndarray:
    mask = np.zeros(bgr.shape[:2], bool)
    mask[box[1]:box[3], box[0]:box[2]] = True
    return mask


def plain_grabcut(bgr: np.ndarray, box: Box) -> np.ndarray:
    labels = np.zeros(bgr.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(0)
    rect = (box[0], box[1], box[2] - box[0], box[3] - box[1])
    cv2.grabCut(bgr, labels, rect, bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def boxmask_method(config: GrabCutConfig) -> Method:
    return lambda bgr, box: boxes_to_mask(bgr, [box], config=config)[0] == 1


METHODS: dict[str, Method] = {
    "box": box_mask,
    "plain GrabCut (5 it.)": plain_grabcut,
    "+ local context only": boxmask_method(GrabCutConfig(clean=False)),
    "+ clean-up only": boxmask_method(GrabCutConfig(context=-1.0)),
    "**mast-mask** (context + clean-up)": boxmask_method(GrabCutConfig()),
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, default=DEFAULT_DAVIS, help="DAVIS-2016 style root")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    seqs = sorted(p.name for p in (args.davis / "JPEGImages" / "480p").iterdir() if p.is_dir())
    frames = [(cv2.imread(str(args.davis / "JPEGImages" / "480p" / s / "00000.jpg")),
               read_mask(args.davis / "Annotations" / "480p" / s / "00000.png") > 0) for s in seqs]
    print(f"CPU: {cpu_name()}, 1 OpenCV thread; {len(seqs)} sequences of {args.davis}\n")
    print("| method | " + " | ".join(seqs) + " | **mean IoU** | s / frame |")
    print("|---" * (len(seqs) + 3) + "|")
    for name, method in METHODS.items():
        t0 = time.perf_counter()
        scores = [iou(method(bgr, mask_box(gt)), gt) for bgr, gt in frames]
        seconds = (time.perf_counter() - t0) / len(frames)
        print(f"| {name} | " + " | ".join(f"{s:.3f}" for s in scores)
              + f" | **{np.mean(scores):.3f}** | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
