"""``mast-mask`` quality: mean IoU of masks made from ground-truth boxes, and how its settings were chosen.

    # one table: each method on one frame of every sequence
    OMP_NUM_THREADS=1 python benchmarks/bench_mask.py [--davis ../shared/data/davis2016-val-dev]
        [--frame 0|K|first] [--seeds 5] [--only NAME ...] [--cache DIR]
    # the choice: every context x clean-up against plain GrabCut, leave-one-sequence-out
    OMP_NUM_THREADS=1 python benchmarks/bench_mask.py --select [--seeds 2] [--cache DIR]

The box is each object's extent in the ground truth (X1/Y1 exclusive; ``Annotations/480p/<seq>/``:
0/255 PNGs, one object, or palette PNGs, every id an object) and each mask is scored by IoU against
the ground truth. ``--frame K`` scores frame K of every sequence, ``--frame first`` the first frame
that has a mask (``../shared/data/multiobject-demo``: its frames are not numbered from 00000).

Methods are a base and a clean-up of its mask:

- bases: **box** (the box, filled), **plain GrabCut** (``cv2.grabCut`` on the whole image,
  ``GC_INIT_WITH_RECT``, 5 iterations) and :func:`mast.runtime.boxmask.segment_box` with a crop
  margin of ``context`` x the box's size per side (5 iterations);
- clean-ups: none (what mast-mask does), hole filling, dropping specks (components under 1 % of the
  mask), the largest component, and the old clean-up (the components reaching the box's middle
  third, else the largest; specks dropped; holes filled), with a context of 0.5 the previous mast-mask.

``--select`` takes the first frame and frames 25 and 40 of the eight davis2016-val-dev sequences and
of multiobject-dev's two tiled clips (4 objects each: the same eight clips at half size beside three
others), 48 objects, and groups them by clip (a clip's DAVIS frames and its tiles: 6 objects). For
each clip it picks the method with the best mean IoU on the other seven clips and scores that pick
on the held-out clip; the pooled held-out IoUs are compared with plain GrabCut per split and frame.
The choice is the pick of all eight clips, less its clean-up unless the clean-ups picked gain held
out over the same contexts without one; mast-mask's defaults are shown beside it (they must never
be below plain GrabCut held out; docs/USAGE.md says why they are not the full-size choice).

GrabCut starts its colour models with k-means from OpenCV's RNG, which moves single IoUs by a few
points: every GrabCut method runs with RNG seeds 0..``--seeds``-1 and an object's IoU is the mean
over the seeds. ``--cache DIR`` keeps each base mask (``.npz``, with the seconds it took, NaN when
unknown) so that runs can be repeated and extended without recomputing GrabCut; "s / object" is then
the time taken when the mask was made.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mast.core.masks import read_mask
from mast.runtime.bench import cpu_name
from mast.runtime.boxmask import Box, GrabCutConfig, mask_box, segment_box

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
DEFAULT_DAVIS = DATA / "davis2016-val-dev"
# multiobject-dev: object k of a tiled clip is the DAVIS clip of tile k (row-major; shared/data/README.md)
TILES = {"quad-1": ("blackswan", "dog", "car-roundabout", "bmx-trees"),
         "quad-2": ("breakdance", "camel", "goat", "cows")}
SELECT_ROOTS, SELECT_FRAMES = ("davis2016-val-dev", "multiobject-dev"), ("0", "25", "40")
CONTEXTS = (0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0)
Base = str          # "box", "plain" or a context as text ("0.25")
Method = tuple[Base, str]


@dataclass(frozen=True)
class Unit:
    """One object on one frame: ``root/JPEGImages/480p/seq/stem.jpg``, ground truth id ``obj``."""

    root: Path
    seq: str
    stem: str
    obj: int

    @property
    def group(self) -> str:
        """The DAVIS clip it shows (a tile's own clip for multiobject-dev)."""
        return TILES[self.seq][self.obj - 1] if self.root.name == "multiobject-dev" else self.seq

    @property
    def split(self) -> str:
        return self.root.name

    def image(self) -> np.ndarray:
        return cv2.imread(str(self.root / "JPEGImages" / "480p" / self.seq / f"{self.stem}.jpg"))

    def truth(self) -> np.ndarray:
        return read_mask(self.root / "Annotations" / "480p" / self.seq / f"{self.stem}.png") == self.obj


def units(root: Path, frame: str) -> list[Unit]:
    """Every object of frame ``frame`` (a number or ``first``: the first frame with a mask) of every sequence."""
    out = []
    for seq in sorted(p.name for p in (root / "JPEGImages" / "480p").iterdir() if p.is_dir()):
        ann = root / "Annotations" / "480p" / seq
        stem = sorted(ann.glob("*.png"))[0].stem if frame == "first" else f"{int(frame):05d}"
        ids = read_mask(ann / f"{stem}.png")
        out += [Unit(root, seq, stem, k) for k in np.unique(ids[ids > 0]).tolist()]
    return out


# -- bases and clean-ups -----------------------------------------------------------------------------
def plain_grabcut(bgr: np.ndarray, box: Box, seed: int) -> np.ndarray:
    labels = np.zeros(bgr.shape[:2], np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(seed)
    rect = (box[0], box[1], box[2] - box[0], box[3] - box[1])
    cv2.grabCut(bgr, labels, rect, bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def base_mask(bgr: np.ndarray, box: Box, base: Base, seed: int) -> np.ndarray:
    """bool ``[H, W]`` of one base (see the module docstring)."""
    if base == "box":
        mask = np.zeros(bgr.shape[:2], bool)
        mask[box[1]:box[3], box[0]:box[2]] = True
        return mask
    if base == "plain":
        return plain_grabcut(bgr, box, seed)
    return segment_box(bgr, box, config=GrabCutConfig(context=float(base), seed=seed)).mask


def fill_holes(mask: np.ndarray) -> np.ndarray:
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), np.uint8)
    padded[1:-1, 1:-1] = mask
    cv2.floodFill(padded, None, (0, 0), 1)
    return mask | (padded[1:-1, 1:-1] == 0)


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(component index ``int32 [H, W]``, areas ``[n]``; index 0 = background)."""
    _, comp, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    return comp, stats[:, cv2.CC_STAT_AREA]


def drop_specks(mask: np.ndarray, box: Box) -> np.ndarray:
    comp, areas = _components(mask)
    return np.isin(comp, [k for k in range(1, len(areas)) if areas[k] >= 0.01 * areas[1:].sum()])


def largest(mask: np.ndarray, box: Box) -> np.ndarray:
    comp, areas = _components(mask)
    return fill_holes(comp == int(np.argmax(areas[1:])) + 1) if len(areas) > 1 else mask


def old_cleanup(mask: np.ndarray, box: Box) -> np.ndarray:
    """The clean-up of mast-mask before the held-out choice (no clicks here)."""
    comp, areas = _components(mask)
    if len(areas) <= 1:
        return mask
    x0, y0, x1, y1 = box
    bw, bh = x1 - x0, y1 - y0
    centre = comp[y0 + bh // 3:y1 - bh // 3 or y1, x0 + bw // 3:x1 - bw // 3 or x1]
    keep = (set(np.unique(centre).tolist()) - {0}) or {int(np.argmax(areas[1:])) + 1}
    floor = 0.01 * sum(areas[k] for k in keep)
    return fill_holes(np.isin(comp, [k for k in keep if areas[k] >= floor]))


CLEANUPS: dict[str, Callable[[np.ndarray, Box], np.ndarray]] = {
    "none": lambda mask, box: mask,
    "holes": lambda mask, box: fill_holes(mask),
    "specks": drop_specks,
    "largest+holes": largest,
    "old (central+specks+holes)": old_cleanup,
}
MAST_MASK: Method = (str(GrabCutConfig().context), "none")
PLAIN: Method = ("plain", "none")
TABLE: dict[str, Method] = {
    "box": ("box", "none"),
    "plain GrabCut (5 it.)": PLAIN,
    "previous mast-mask (context 0.5 + old clean-up)": ("0.5", "old (central+specks+holes)"),
    f"**mast-mask** (context {MAST_MASK[0]}, no clean-up)": MAST_MASK,
}


class Scores:
    """IoUs of methods on units, base masks computed once per (unit, base, seed), optionally cached."""

    def __init__(self, seeds: int, cache: Path | None) -> None:
        self.seeds, self.cache = seeds, cache
        self.seconds: dict[Base, list[float]] = {}
        self.ious: dict[tuple[Unit, Method], float] = {}

    def _base(self, unit: Unit, bgr: np.ndarray, box: Box, base: Base, seed: int) -> np.ndarray:
        path = self.cache / unit.split / f"{unit.seq}_{unit.stem}_{unit.obj}_{base}_{seed}.npz" if self.cache else None
        if path is not None and path.exists():
            stored = np.load(path)
            seconds, shape = float(stored["seconds"]), tuple(stored["shape"])
            mask = np.unpackbits(stored["mask"])[:shape[0] * shape[1]].reshape(shape).astype(bool)
        else:
            start = time.perf_counter()
            mask = base_mask(bgr, box, base, seed)
            seconds = time.perf_counter() - start
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(path, mask=np.packbits(mask), shape=np.array(mask.shape), seconds=seconds)
        self.seconds.setdefault(base, []).append(seconds)
        return mask

    def measure(self, unit_list: Sequence[Unit], methods: Sequence[Method]) -> None:
        """IoU of every method on every unit (mean over the seeds; the box has one)."""
        for unit in unit_list:
            bgr, truth = unit.image(), unit.truth()
            box = mask_box(truth)
            for base in dict.fromkeys(base for base, _ in methods):
                seeds = range(1 if base == "box" else self.seeds)
                masks = [self._base(unit, bgr, box, base, seed) for seed in seeds]
                for clean in (c for b, c in methods if b == base):
                    cleaned = [CLEANUPS[clean](m, box) for m in masks]
                    self.ious[unit, (base, clean)] = float(np.mean([iou(m, truth) for m in cleaned]))

    def mean(self, method: Method, unit_list: Sequence[Unit]) -> float:
        return float(np.mean([self.ious[u, method] for u in unit_list])) if unit_list else float("nan")


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def name(method: Method) -> str:
    base, clean = method
    return base if base in ("box", "plain") else f"context {base}, {clean}"


# -- the two modes -----------------------------------------------------------------------------------
def table(args: argparse.Namespace) -> None:
    unit_list = units(args.davis, args.frame)
    seqs = list(dict.fromkeys(u.seq for u in unit_list))
    scores = Scores(args.seeds, args.cache)
    print(f"CPU: {cpu_name()}, 1 OpenCV thread; frame {args.frame} of {len(seqs)} sequences of {args.davis} "
          f"({len(unit_list)} objects); GrabCut IoUs: mean over RNG seeds 0..{args.seeds - 1}\n")
    print("| method | " + " | ".join(seqs) + " | **mean IoU** (objects) | s / object |")
    print("|---" * (len(seqs) + 3) + "|")
    for label, method in TABLE.items():
        if args.only and not any(part in label for part in args.only):
            continue
        scores.measure(unit_list, [method])
        per_seq = [scores.mean(method, [u for u in unit_list if u.seq == s]) for s in seqs]
        seconds = [t for t in scores.seconds.pop(method[0]) if np.isfinite(t)]
        print(f"| {label} | " + " | ".join(f"{v:.3f}" for v in per_seq)
              + f" | **{scores.mean(method, unit_list):.3f}** | "
              + (f"{statistics.mean(seconds):.2f} |" if seconds else "- |"), flush=True)


def select(args: argparse.Namespace) -> None:
    unit_list = [u for root in SELECT_ROOTS for frame in SELECT_FRAMES for u in units(DATA / root, frame)]
    methods = [PLAIN] + [(str(c), clean) for c in CONTEXTS for clean in CLEANUPS]
    scores = Scores(args.seeds, args.cache)
    scores.measure(unit_list, methods)
    print(f"CPU: {cpu_name()}, 1 OpenCV thread; {len(unit_list)} objects (frames {', '.join(SELECT_FRAMES)} of "
          f"{' and '.join(SELECT_ROOTS)}); IoUs: mean over RNG seeds 0..{args.seeds - 1}\n")
    splits = {s: [u for u in unit_list if u.split == s] for s in SELECT_ROOTS}
    print("| method (all 8 clips) | " + " | ".join(splits) + " | all | objects better / worse than plain |")
    print("|---" * (len(splits) + 3) + "|")
    for m in sorted(methods, key=lambda m: -scores.mean(m, unit_list)):
        wins = sum(scores.ious[u, m] > scores.ious[u, PLAIN] for u in unit_list)
        losses = sum(scores.ious[u, m] < scores.ious[u, PLAIN] for u in unit_list)
        print(f"| {name(m)} | " + " | ".join(f"{scores.mean(m, us):.3f}" for us in splits.values())
              + f" | {scores.mean(m, unit_list):.3f} | {wins} / {losses} |")
    groups = sorted({u.group for u in unit_list})
    pick: dict[Unit, Method] = {}
    print("\n| held-out clip | picked on the other 7 | held-out IoU | its context, no clean-up | plain GrabCut | "
          "mast-mask |\n|---|---|---|---|---|---|")
    for group in groups:
        held = [u for u in unit_list if u.group == group]
        rest = [u for u in unit_list if u.group != group]
        best = max(methods, key=lambda m: scores.mean(m, rest))
        pick.update((u, best) for u in held)
        bare = (best[0], "none") if best != PLAIN else PLAIN
        print(f"| {group} | {name(best)} | {scores.mean(best, held):.3f} | {scores.mean(bare, held):.3f} | "
              f"{scores.mean(PLAIN, held):.3f} | {scores.mean(MAST_MASK, held):.3f} |")
    print("\n| held-out objects | n | leave-one-clip-out pick | its context, no clean-up | plain GrabCut | mast-mask |"
          "\n|---|---|---|---|---|---|")
    rows = {"all": unit_list, **splits}
    rows.update({f"frame {f}": [u for u in unit_list if u.stem == f"{int(f):05d}"] for f in SELECT_FRAMES})
    for label, us in rows.items():
        held = float(np.mean([scores.ious[u, pick[u]] for u in us]))
        bare = float(np.mean([scores.ious[u, (pick[u][0], "none") if pick[u] != PLAIN else PLAIN] for u in us]))
        print(f"| {label} | {len(us)} | {held:.3f} | {bare:.3f} | {scores.mean(PLAIN, us):.3f} | "
              f"{scores.mean(MAST_MASK, us):.3f} |")
    overall = max(methods, key=lambda m: scores.mean(m, unit_list))
    picked = float(np.mean([scores.ious[u, pick[u]] for u in unit_list]))
    bare = float(np.mean([scores.ious[u, (pick[u][0], "none") if pick[u] != PLAIN else PLAIN] for u in unit_list]))
    chosen = overall if picked > bare or overall == PLAIN else (overall[0], "none")
    print(f"\npicked on all 8 clips: {name(overall)}; its clean-ups gain {picked - bare:+.3f} held out "
          f"({'kept' if chosen == overall else 'dropped'}): the choice is {name(chosen)}; "
          f"mast-mask's defaults: {name(MAST_MASK)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", action="store_true", help="leave-one-clip-out choice of context and clean-up")
    parser.add_argument("--davis", type=Path, default=DEFAULT_DAVIS, help="DAVIS-2016 style root (table)")
    parser.add_argument("--frame", default="0", help="frame number of every sequence, or 'first' (table)")
    parser.add_argument("--seeds", type=int, default=5, help="RNG seeds per GrabCut method")
    parser.add_argument("--only", action="append", default=[], help="table rows whose names contain this")
    parser.add_argument("--cache", type=Path, default=None, help="folder keeping every base mask")
    args = parser.parse_args()
    if args.frame != "first" and not args.frame.isdigit():
        parser.error(f"--frame {args.frame!r}: expected a frame number or 'first'")
    cv2.setNumThreads(1)
    (select if args.select else table)(args)


if __name__ == "__main__":
    main()
