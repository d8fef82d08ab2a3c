"""Drawing on frames (torch-free, no window): the colour overlay of a mask with the object ids at
their centroids, text with an outline, and the key legends of the windows. Images are BGR
``uint8 [H, W, 3]``; masks are object ids ``uint8 [H, W]`` (0 = background); coordinates in pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

from mast.core.masks import colour_overlay


def _centroids(ids: np.ndarray) -> dict[int, tuple[int, int]]:
    """Centroid ``(x, y)`` in pixels of every object id > 0 present in ``ids`` ``[H, W]``."""
    h, w = ids.shape
    flat = ids.reshape(-1).astype(np.intp)
    count = np.bincount(flat, minlength=256)
    ys, xs = np.divmod(np.arange(h * w), w)
    sx = np.bincount(flat, weights=xs, minlength=256)
    sy = np.bincount(flat, weights=ys, minlength=256)
    return {int(k): (int(round(sx[k] / count[k])), int(round(sy[k] / count[k])))
            for k in np.nonzero(count)[0] if k > 0}


def put_text(img: np.ndarray, text: str, org: tuple[int, int], scale: float) -> None:
    """White text with a black outline at ``org`` (bottom-left, pixels), in place."""
    thick = max(1, int(round(scale * 2)))
    for colour, t in (((0, 0, 0), thick + 2), ((255, 255, 255), thick)):
        cv2.putText(img, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, colour, t, cv2.LINE_AA)


def draw_legend(img: np.ndarray, lines: list[str] | tuple[str, ...], *, bottom: bool = True) -> np.ndarray:
    """Write ``lines`` (the keys of a window) into ``img`` ``uint8 [H, W, 3]`` in place, one per row at
    the left edge, the last row at the bottom (``bottom``) or the first at the top; returns ``img``.
    The text scale follows the image's smaller side (0.4 at 240 px), smaller where the longest line
    would not fit the width."""
    widest = max((cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, 1.0, 1)[0][0] for line in lines), default=1)
    scale = max(0.2, min(max(0.4, min(img.shape[:2]) / 600.0), (img.shape[1] - 24) / widest))
    step = int(round(cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][1] * 1.9))
    first = img.shape[0] - 8 - step * (len(lines) - 1) if bottom else 8 + step
    top, end = max(first - step, 0), min(first + step * (len(lines) - 1) + step // 2, img.shape[0])
    right = min(int(widest * scale) + 16, img.shape[1])
    img[top:end, :right] = img[top:end, :right] // 3          # a dark band under the text
    for row, line in enumerate(lines):
        put_text(img, line, (8, first + row * step), scale)
    return img


def draw_ids(bgr: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A copy of ``bgr`` ``[H, W, 3]`` uint8 with each object's id number written, centred, at the
    object's centroid in ``ids`` ``[H, W]`` (the centroid of a ring-shaped object may lie outside it)."""
    if ids.shape != bgr.shape[:2]:
        raise ValueError(f"mask is {ids.shape[1]}x{ids.shape[0]} but frame is "
                         f"{bgr.shape[1]}x{bgr.shape[0]}: resize the mask to the frame first")
    out = np.ascontiguousarray(bgr, dtype=np.uint8).copy()
    scale = max(0.4, min(bgr.shape[:2]) / 480.0)
    for k, (x, y) in _centroids(ids).items():
        (tw, th), _ = cv2.getTextSize(str(k), cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        put_text(out, str(k), (x - tw // 2, y + th // 2), scale)
    return out


def render(bgr: np.ndarray, ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The frame with the palette colours of ``ids`` blended in (``alpha`` 0..1) and the ids drawn:
    ``uint8 [H, W, 3]`` BGR."""
    return draw_ids(colour_overlay(bgr, ids, alpha), ids)
