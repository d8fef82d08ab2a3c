"""DAVIS region (J) and boundary (F) measures with the semantics of the official evaluation code.

Reference: the DAVIS-2017 evaluation repository (``davisvideochallenge/davis2017-evaluation``,
``davis2017/metrics.py`` and ``davis2017/utils.py``). The functions here reproduce its numbers
exactly; they are written independently, torch-free, and need no scikit-image:

- J (:func:`db_eval_iou`): intersection over union of two binary masks, void pixels excluded;
  an empty union scores 1.
- F (:func:`db_eval_boundary`, :func:`f_measure`): 1-pixel boundary maps (:func:`seg2bmap`), each
  dilated by a disk of radius ``ceil(bound_th * ||(H, W)||)`` (:func:`disk`, identical to
  ``skimage.morphology.disk``) through ``cv2.dilate``; precision = fraction of predicted boundary
  pixels within that distance of a ground-truth boundary pixel, recall the converse; F is their
  harmonic mean.
- :func:`db_statistics`: per-object Mean, Recall (fraction of frames scoring > 0.5) and Decay
  (mean of the first quarter of the frames minus mean of the last quarter).

Shapes: masks are ``[H, W]`` (one frame) or ``[T, H, W]`` (T frames) arrays of any dtype; non-zero
means "inside". Scores are floats in [0, 1] (``[T]`` float64 arrays for stacks of frames).
"""
from __future__ import annotations

import warnings

import cv2
import numpy as np

__all__ = [
    "db_eval_iou",
    "db_eval_boundary",
    "f_measure",
    "seg2bmap",
    "disk",
    "boundary_radius",
    "db_statistics",
    "BOUND_TH",
]

#: Default boundary tolerance as a fraction of the image diagonal (official value).
BOUND_TH = 0.008


def db_eval_iou(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void_pixels: np.ndarray | None = None,
) -> float | np.ndarray:
    """Region similarity J: the Jaccard index |A ∩ S| / |A ∪ S|, void pixels left out.

    Args:
        annotation: ground-truth mask ``[H, W]`` or ``[T, H, W]``; non-zero = object.
        segmentation: predicted mask, same shape.
        void_pixels: optional mask of pixels to ignore, same shape.

    Returns:
        a float for ``[H, W]`` inputs, a float64 array ``[T]`` for ``[T, H, W]`` inputs.
        A frame whose union is empty (object absent from both masks) scores 1.
    """
    annotation = np.asarray(annotation).astype(bool)
    segmentation = np.asarray(segmentation).astype(bool)
    if annotation.shape != segmentation.shape:
        raise ValueError(f"annotation {annotation.shape} and segmentation {segmentation.shape} differ in shape")
    keep = np.ones(annotation.shape, bool)
    if void_pixels is not None:
        void_pixels = np.asarray(void_pixels).astype(bool)
        if void_pixels.shape != annotation.shape:
            raise ValueError(f"annotation {annotation.shape} and void pixels {void_pixels.shape} differ in shape")
        keep = ~void_pixels
    inter = np.count_nonzero(annotation & segmentation & keep, axis=(-2, -1))
    union = np.count_nonzero((annotation | segmentation) & keep, axis=(-2, -1))
    j = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
    if j.ndim == 0:
        return float(j)
    return j.astype(np.float64)


def disk(radius: float) -> np.ndarray:
    """A disk structuring element, identical to ``skimage.morphology.disk(radius)``.

    Returns a uint8 array ``[2r+1, 2r+1]`` (for integer r) with 1 where ``x² + y² <= r²``
    over the grid ``arange(-r, r + 1)``.
    """
    grid = np.arange(-radius, radius + 1)
    x, y = np.meshgrid(grid, grid)
    return ((x**2 + y**2) <= radius**2).astype(np.uint8)


def boundary_radius(shape: tuple[int, ...], bound_th: float = BOUND_TH) -> float:
    """Dilation radius in pixels: ``bound_th`` itself when >= 1, else ``ceil(bound_th * ||(H, W)||)``."""
    if bound_th >= 1:
        return bound_th
    return float(np.ceil(bound_th * np.linalg.norm(shape)))


def seg2bmap(seg: np.ndarray) -> np.ndarray:
    """One-pixel-wide boundary map of a binary mask (D. Martin's ``seg2bmap``, as in DAVIS).

    A pixel is a boundary pixel when it differs from its right, lower or lower-right neighbour;
    on the last row only the right neighbour counts, on the last column only the lower one, and
    the bottom-right corner is never a boundary. (The boundary is offset by half a pixel towards
    the origin.)

    Args:
        seg: mask ``[H, W]``; non-zero = inside.

    Returns:
        bool ``[H, W]`` boundary map.
    """
    seg = np.asarray(seg).astype(bool)
    if seg.ndim != 2:
        raise ValueError(f"seg2bmap expects a [H, W] mask, got shape {seg.shape}")
    right = np.zeros_like(seg)
    down = np.zeros_like(seg)
    diag = np.zeros_like(seg)
    right[:, :-1] = seg[:, 1:]
    down[:-1, :] = seg[1:, :]
    diag[:-1, :-1] = seg[1:, 1:]
    bmap = (seg ^ right) | (seg ^ down) | (seg ^ diag)
    bmap[-1, :] = seg[-1, :] ^ right[-1, :]
    bmap[:, -1] = seg[:, -1] ^ down[:, -1]
    bmap[-1, -1] = False
    return bmap


def f_measure(
    foreground_mask: np.ndarray,
    gt_mask: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> float:
    """Boundary F-measure of one frame.

    Args:
        foreground_mask: predicted mask ``[H, W]``; non-zero = object.
        gt_mask: ground-truth mask ``[H, W]``.
        void_pixels: optional ``[H, W]`` mask of pixels removed from both masks first.
        bound_th: tolerance; a fraction of the image diagonal when < 1, pixels when >= 1.

    Returns:
        F in [0, 1]. Edge cases as the official code: no predicted and no ground-truth boundary
        -> precision = recall = 1 (F = 1); only one of them empty -> F = 0.
    """
    fg = np.asarray(foreground_mask).astype(bool)
    gt = np.asarray(gt_mask).astype(bool)
    if fg.ndim != 2 or fg.shape != gt.shape:
        raise ValueError(f"f_measure expects two [H, W] masks of one shape, got {fg.shape} and {gt.shape}")
    if void_pixels is not None:
        keep = ~np.asarray(void_pixels).astype(bool)
        fg = fg & keep
        gt = gt & keep

    radius = boundary_radius(fg.shape, bound_th)
    fg_boundary = seg2bmap(fg)
    gt_boundary = seg2bmap(gt)
    n_fg = int(np.count_nonzero(fg_boundary))
    n_gt = int(np.count_nonzero(gt_boundary))

    if n_fg == 0 and n_gt > 0:
        precision, recall = 1.0, 0.0
    elif n_fg > 0 and n_gt == 0:
        precision, recall = 0.0, 1.0
    elif n_fg == 0 and n_gt == 0:
        precision, recall = 1.0, 1.0
    else:
        kernel = disk(radius)
        fg_dil = cv2.dilate(fg_boundary.astype(np.uint8), kernel) > 0
        gt_dil = cv2.dilate(gt_boundary.astype(np.uint8), kernel) > 0
        precision = np.count_nonzero(fg_boundary & gt_dil) / float(n_fg)
        recall = np.count_nonzero(gt_boundary & fg_dil) / float(n_gt)

    if precision + recall == 0:
        return 0.0
    return float(2 * precision * recall / (precision + recall))


def db_eval_boundary(
    annotation: np.ndarray,
    segmentation: np.ndarray,
    void_pixels: np.ndarray | None = None,
    bound_th: float = BOUND_TH,
) -> float | np.ndarray:
    """Boundary measure F of ``segmentation`` against ``annotation``.

    Args:
        annotation: ground truth ``[H, W]`` or ``[T, H, W]``.
        segmentation: prediction, same shape.
        void_pixels: optional ignore mask, same shape.
        bound_th: see :func:`f_measure`.

    Returns:
        a float for one frame, a float64 array ``[T]`` for a stack.
    """
    annotation = np.asarray(annotation)
    segmentation = np.asarray(segmentation)
    if annotation.shape != segmentation.shape:
        raise ValueError(f"annotation {annotation.shape} and segmentation {segmentation.shape} differ in shape")
    if void_pixels is not None and np.shape(void_pixels) != annotation.shape:
        raise ValueError(f"annotation {annotation.shape} and void pixels {np.shape(void_pixels)} differ in shape")
    if annotation.ndim == 2:
        return f_measure(segmentation, annotation, void_pixels, bound_th=bound_th)
    if annotation.ndim == 3:
        out = np.zeros(annotation.shape[0], np.float64)
        for t in range(annotation.shape[0]):
            void_t = None if void_pixels is None else void_pixels[t]
            out[t] = f_measure(segmentation[t], annotation[t], void_t, bound_th=bound_th)
        return out
    raise ValueError(f"db_eval_boundary supports [H, W] or [T, H, W] masks, got {annotation.ndim} dimensions")


def db_statistics(per_frame_values: np.ndarray) -> tuple[float, float, float]:
    """Mean, Recall and Decay of one object's per-frame scores ``[T]`` (J or F).

    - Mean: ``nanmean`` of the scores.
    - Recall: fraction of frames scoring strictly more than 0.5.
    - Decay: the frames are cut into 4 bins at indices ``round(linspace(1, T, 5) + 1e-10) - 1``;
      bin i spans ``values[ids[i] : ids[i+1] + 1]`` (neighbouring bins share their edge frame);
      Decay = mean of bin 0 - mean of bin 3 (positive when quality falls over time).

    Returns ``(mean, recall, decay)`` as floats; NaN for an empty input (as the official code).
    """
    values = np.asarray(per_frame_values, dtype=np.float64).reshape(-1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        mean = float(np.nanmean(values))
        recall = float(np.nanmean(values > 0.5))

    n_bins = 4
    # The official code casts these indices to uint8, which wraps around past 255 frames; an int
    # dtype gives the same indices for every sequence up to 256 frames and correct ones beyond.
    ids = (np.round(np.linspace(1, len(values), n_bins + 1) + 1e-10) - 1).astype(np.int64)
    bins = [values[ids[i] : ids[i + 1] + 1] for i in range(n_bins)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        decay = float(np.nanmean(bins[0]) - np.nanmean(bins[3]))
    return mean, recall, decay
