"""``mast-mask`` quality: mean IoU of first-frame masks made from ground-truth boxes.

    OMP_NUM_THREADS=1 python benchmarks/bench_mask.py [--davis ../shared/data/davis2016-val-dev]
        [--frame 0] [--seeds 5] [--only NAME ...]

For the first frame of every sequence (``JPEGImages/480p/<seq>/00000.jpg``, ground truth
``Annotations/480p/<seq>/00000.png``: 0/255, one object, or a palette PNG, every id an object, e.g.
``../shared/data/multiobject-dev``; ``--frame K``: frame K instead, a held-out check), the box is
each object's extent in the ground truth (X1/Y1 exclusive) and each method's mask is scored by IoU
against the ground truth:

- **box**: the box itself, filled;
- **plain GrabCut**: ``cv2.grabCut`` on the whole image, ``GC_INIT_WITH_RECT``, 5 iterations;
- ablations of :mod:`mast.runtime.boxmask` (local context alone, clean-up alone, a context of 1.0
  instead of 0.5: tried, not kept);
- **mast-mask**: :func:`mast.runtime.boxmask.boxes_to_mask` with its defaults.

``--only`` runs the methods whose names contain one of the given strings (the IoUs are
deterministic for a seed, so rows can be measured separately).

GrabCut starts its colour models with k-means from OpenCV's RNG, which moves single IoUs by a few
points: every GrabCut method runs with RNG seeds 0..``--seeds``-1 and its IoU per sequence is the
mean over the seeds (the table also gives the spread of the mean IoU over the seeds).

Prints one markdown table (per sequence, the mean, seconds per frame) and the CPU.
"""
from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from mast.core.masks import read_mask
from mast.runtime.bench import cpu_name
from mast.runtime.boxmask import Box, GrabCutConfig, boxes_to_mask, mask_box

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DAVIS = REPO.parent / "shared" / "data" / "davis2016-val-dev"
Method = Callable[[np.ndarray, Box, int], np.ndarray]   # (bgr [H, W, 3], box, RNG seed) -> bool mask [H, W]


def box_mask(bgr: np.ndarray, box: Box, seed: int) -> np.ndarray:
    mask = np.zeros(bgr.shape[:2], bool)
    mask[box[1]:box[3], box[0]:box[2]] = True
    return mask


def plain_grabcut(bgr: np.ndarray, box: Box, seed: int) -> np.ndarray:
    labels = np.zeros(bgr.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)
    rect = (box[0], box[1], box[2] - box[0], box[3] - box[1])
    cv2.grabCut(bgr, labels, rect, bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def boxmask_method(**options: float) -> Method:
    return lambda bgr, box, seed: boxes_to_mask(bgr, [box], config=GrabCutConfig(seed=seed, **options))[0] == 1


METHODS: dict[str, Method] = {
    "box": box_mask,
    "plain GrabCut (5 it.)": plain_grabcut,
    "+ local context only": boxmask_method(clean=False),
    "+ clean-up only": boxmask_method(context=-1.0),
    "context 1.0 + clean-up (tried)": boxmask_method(context=1.0),
    "**mast-mask** (context + clean-up)": boxmask_method(),
}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", type=Path, default=DEFAULT_DAVIS, help="DAVIS-2016 style root")
    parser.add_argument("--seeds", type=int, default=5, help="RNG seeds per GrabCut method")
    parser.add_argument("--frame", type=int, default=0, help="score this frame of every sequence")
    parser.add_argument("--only", action="append", default=[], help="run the methods whose names contain this")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    seqs = sorted(p.name for p in (args.davis / "JPEGImages" / "480p").iterdir() if p.is_dir())
    stem = f"{args.frame:05d}"
    frames, names = [], []          # one (frame, object mask) per object of every sequence
    for s in seqs:
        bgr = cv2.imread(str(args.davis / "JPEGImages" / "480p" / s / f"{stem}.jpg"))
        ids = read_mask(args.davis / "Annotations" / "480p" / s / f"{stem}.png")
        objects = np.unique(ids[ids > 0]).tolist()
        frames += [(bgr, ids == k) for k in objects]
        names += [s] if len(objects) == 1 else [f"{s}:{k}" for k in objects]
    print(f"CPU: {cpu_name()}, 1 OpenCV thread; frame {args.frame} of {len(seqs)} sequences of {args.davis}; "
          f"GrabCut IoUs: mean over RNG seeds 0..{args.seeds - 1}\n")
    print("| method | " + " | ".join(names) + " | **mean IoU** | min-max over seeds | s / frame |")
    print("|---" * (len(names) + 4) + "|")
    for name, method in METHODS.items():
        if args.only and not any(part in name for part in args.only):
            continue
        seeds = range(1 if method is box_mask else args.seeds)
        t0 = time.perf_counter()
        scores = np.array([[iou(method(bgr, mask_box(gt), seed), gt) for bgr, gt in frames] for seed in seeds])
        seconds = (time.perf_counter() - t0) / scores.size
        per_seed = scores.mean(axis=1)
        print(f"| {name} | " + " | ".join(f"{s:.3f}" for s in scores.mean(axis=0))
              + f" | **{per_seed.mean():.3f}** | {per_seed.min():.3f}-{per_seed.max():.3f} | {seconds:.2f} |", flush=True)


if __name__ == "__main__":
    main()
