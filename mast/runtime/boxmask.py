"""First-frame masks from boxes (and clicks), without learned weights: OpenCV GrabCut, improved.

A box is ``(x0, y0, x1, y1)`` in pixel corners, ``x1``/``y1`` exclusive (the box ``0,0,W,H`` is the
whole ``W x H`` image). A click is ``(x, y, foreground)`` in pixels. :func:`boxes_to_mask` gives the
ids ``uint8 [H, W]``: 1..n in the order of the boxes, a later box wins where two overlap.

What :func:`segment_box` adds to plain GrabCut (the whole image, the box as ``GC_INIT_WITH_RECT``,
5 iterations), chosen in ``benchmarks/bench_mask.py --select`` (docs/USAGE.md, "First masks from
boxes") by leave-one-sequence-out over davis2016-val-dev and multiobject-dev, and kept only where it
wins on the sequences it was not chosen on:

- **local context**: GrabCut runs on a crop of the box plus ``context`` x its size on every side (a
  quarter), so the background colour model is learned from the box's surroundings, not from the
  whole image (and it runs faster);
- **clicks** as sure foreground / background discs in GrabCut's seed labels;
- **fallback**: when GrabCut finds nothing (or cannot run on a box of a few pixels), the box itself,
  with a warning.

No clean-up of GrabCut's mask: the old one (the components reaching the box's middle third, specks
dropped, holes filled), picked once on seven clips, lost 7.7 points on the held-out camel (the
filled holes take the sand between its legs); dropping specks gained nothing held out; filling
holes or keeping the largest component lost on all clips. The context: every fold picks 0.05 at
full size (+1.8 points over 0.25 held out), but at half size 0.05-0.5 tie and 0.05 loses two
objects of tests/runtime/test_edits.py's half-size frame; 0.25 is above plain GrabCut on every
split, at both sizes and with boxes 10 % loose, 0.5 and 1.0 lose to it. Tried earlier on the first
frames and not kept: 10 iterations, a sure-foreground ellipse at the box centre, the box's inner
border as probable background, a downscaled pass refined at full resolution, Lab / bilateral /
mean-shift filtered input, votes over contexts or seeds, a second pass seeded with the first mask's
eroded core, a colour start.

Torch-free; errors are :class:`~mast.core.errors.InputError` with a one-line message.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from mast.core.errors import InputError

Box = tuple[int, int, int, int]     # x0, y0, x1, y1 in pixels (x1, y1 exclusive)
Click = tuple[int, int, bool]       # x, y in pixels; True = foreground, False = background


@dataclass(frozen=True)
class GrabCutConfig:
    """How one box is segmented (see the module docstring; defaults = the measured best)."""

    iterations: int = 5             # GrabCut iterations
    context: float = 0.25           # crop margin per side, fraction of the box's width/height; < 0: whole image
                                    # (benchmarks/bench_mask.py --select; docs/USAGE.md, "First masks from boxes")
    click_radius: float = 0.01      # radius of a click's disc, fraction of the box's diagonal (at least 2 px)
    seed: int = 0                   # OpenCV RNG seed of GrabCut's k-means start (the same box, the same mask)


@dataclass
class BoxResult:
    """One box's segmentation: ``mask`` bool ``[H, W]`` (inside the box only), ``warning`` or None."""

    mask: np.ndarray
    warning: str | None = None


# -- parsing -----------------------------------------------------------------------------------------
def parse_box(text: str) -> Box:
    """``"X0,Y0,X1,Y1"`` (integers, pixels) -> :data:`Box`; InputError for anything else."""
    parts = [p.strip() for p in text.split(",")]
    try:
        x0, y0, x1, y1 = (int(p) for p in parts)
    except ValueError:
        raise InputError(f"--box {text!r} is not a box: expected X0,Y0,X1,Y1 in integer pixels "
                         "(X1, Y1 exclusive), e.g. --box 10,20,110,220") from None
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"--box {text!r} is empty: X1 must exceed X0 and Y1 exceed Y0 (X1, Y1 exclusive)")
    return x0, y0, x1, y1


def parse_click(text: str) -> Click:
    """``"X,Y"`` or ``"X,Y:fg"`` / ``"X,Y:bg"`` -> :data:`Click` (default foreground); InputError otherwise."""
    point, _, kind = text.partition(":")
    kind = kind.strip().lower() or "fg"
    try:
        x, y = (int(p.strip()) for p in point.split(","))
    except ValueError:
        raise InputError(f"--click {text!r} is not a click: expected X,Y[:fg|bg] in integer pixels, "
                         "e.g. --click 40,60:bg") from None
    if kind not in ("fg", "bg"):
        raise InputError(f"--click {text!r}: the kind after ':' must be fg or bg")
    return x, y, kind == "fg"


def clip_box(box: Box, hw: tuple[int, int]) -> Box:
    """``box`` clipped to an image of ``hw`` (H, W) pixels; InputError when nothing of it is left."""
    h, w = hw
    x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
    if x1 <= x0 or y1 <= y0:
        raise InputError(f"box {','.join(map(str, box))} lies outside the {w}x{h} image (empty after "
                         f"clipping): give X0,Y0,X1,Y1 within 0..{w} and 0..{h}")
    return x0, y0, x1, y1


# -- one box -----------------------------------------------------------------------------------------
def _crop(box: Box, hw: tuple[int, int], context: float) -> Box:
    """The region GrabCut sees: ``box`` grown by ``context`` x its size per side, clipped to ``hw``
    (the whole image when ``context`` < 0)."""
    h, w = hw
    if context < 0:
        return 0, 0, w, h
    x0, y0, x1, y1 = box
    mx, my = int(round(context * (x1 - x0))), int(round(context * (y1 - y0)))
    return max(x0 - mx, 0), max(y0 - my, 0), min(x1 + mx, w), min(y1 + my, h)


def _seed(shape: tuple[int, int], box: Box, clicks: Sequence[Click], radius: int) -> np.ndarray:
    """GrabCut labels ``uint8 [h, w]`` of a crop: outside ``box`` sure background, inside probable
    foreground, clicks as sure foreground / background discs of ``radius`` px (coordinates in the crop)."""
    seed = np.full(shape, cv2.GC_BGD, np.uint8)
    x0, y0, x1, y1 = box
    seed[y0:y1, x0:x1] = cv2.GC_PR_FGD
    for x, y, fg in clicks:
        cv2.circle(seed, (x, y), radius, cv2.GC_FGD if fg else cv2.GC_BGD, -1)
    return seed


def _grabcut(image: np.ndarray, seed: np.ndarray, iterations: int, rng_seed: int) -> np.ndarray:
    """Run GrabCut from ``seed`` labels on ``image`` ``uint8 [h, w, 3]``; the labels after it.
    OpenCV's RNG (GrabCut's k-means start) is seeded with ``rng_seed`` first: deterministic results."""
    cv2.setRNGSeed(rng_seed)
    labels = seed.copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(image, labels, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)
    return labels


def _foreground(labels: np.ndarray) -> np.ndarray:
    return (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)


def segment_box(bgr: np.ndarray, box: Box, clicks: Sequence[Click] = (),
                config: GrabCutConfig = GrabCutConfig()) -> BoxResult:
    """The object in ``box`` of ``bgr`` ``uint8 [H, W, 3]``: a bool mask ``[H, W]`` inside the box.

    ``box`` must lie within the image (see :func:`clip_box`); ``clicks`` (image pixels) inside it
    are sure foreground / background. When GrabCut finds nothing (or cannot run, e.g. a box of a few
    pixels) the box itself is returned with a warning.
    """
    h, w = bgr.shape[:2]
    cx0, cy0, cx1, cy1 = _crop(box, (h, w), config.context)
    local = (box[0] - cx0, box[1] - cy0, box[2] - cx0, box[3] - cy0)
    radius = max(2, int(round(config.click_radius * np.hypot(box[2] - box[0], box[3] - box[1]))))
    local_clicks = [(x - cx0, y - cy0, fg) for x, y, fg in clicks]
    crop = np.ascontiguousarray(bgr[cy0:cy1, cx0:cx1])
    seed = _seed(crop.shape[:2], local, local_clicks, radius)
    try:
        labels = _grabcut(crop, seed, config.iterations, config.seed)
    except cv2.error:
        labels = None
    inside = np.zeros(seed.shape, bool)
    inside[local[1]:local[3], local[0]:local[2]] = True
    fg = _foreground(labels) & inside if labels is not None else np.zeros_like(inside)
    full = np.zeros((h, w), bool)
    if not fg.any():
        full[box[1]:box[3], box[0]:box[2]] = True
        return BoxResult(full, f"GrabCut found no object in box {','.join(map(str, box))}: "
                               "using the whole box as its mask")
    full[cy0:cy1, cx0:cx1] = fg
    return BoxResult(full)


# -- several boxes -----------------------------------------------------------------------------------
def boxes_to_mask(bgr: np.ndarray, boxes: Sequence[Box], clicks: Sequence[Click] = (),
                  config: GrabCutConfig = GrabCutConfig()) -> tuple[np.ndarray, list[str]]:
    """Object ids ``uint8 [H, W]`` of ``bgr`` ``uint8 [H, W, 3]``: box k (0-based) -> id k + 1, a
    later box painted over an earlier one where they overlap. Boxes are clipped to the image
    (InputError when one is empty after it); a click belongs to every box that contains it (InputError
    for a foreground click in no box). Returns (ids, warnings)."""
    if not boxes:
        raise InputError("no box given: give at least one --box X0,Y0,X1,Y1")
    if len(boxes) > 255:
        raise InputError(f"{len(boxes)} boxes: at most 255 objects fit a palette mask")
    hw = bgr.shape[:2]
    clipped = [clip_box(b, hw) for b in boxes]
    for x, y, fg in clicks:
        if fg and not any(box_contains(b, x, y) for b in clipped):
            raise InputError(f"foreground click {x},{y} lies in no box: put it inside the box of its object")
    ids, warnings = np.zeros(hw, np.uint8), []
    for k, box in enumerate(clipped, start=1):
        result = segment_box(bgr, box, [c for c in clicks if box_contains(box, c[0], c[1])], config)
        ids[result.mask] = k
        if result.warning:
            warnings.append(result.warning)
    return ids, warnings


def box_contains(box: Box, x: int, y: int) -> bool:
    """True when pixel ``(x, y)`` lies inside ``box`` (X1/Y1 exclusive)."""
    return box[0] <= x < box[2] and box[1] <= y < box[3]


def mask_box(mask: np.ndarray) -> Box:
    """The extent :data:`Box` of the non-zero pixels of ``mask`` ``[H, W]`` (X1/Y1 exclusive)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise InputError("the mask has no object pixel: it has no box")
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


__all__ = ["Box", "Click", "GrabCutConfig", "BoxResult", "parse_box", "parse_click", "clip_box",
           "segment_box", "boxes_to_mask", "box_contains", "mask_box"]
