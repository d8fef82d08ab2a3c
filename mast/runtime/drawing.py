"""Drawing on frames (torch-free, no window): the colour overlay of a mask with the object ids at
their centroids, text with an outline, and the key legends of the windows. Images are BGR
``uint8 [H, W, 3]``; masks are object ids ``uint8 [H, W]`` (0 = background); coordinates in pixels.

Every frame of ``mast-run`` is drawn here, so the work is kept to the objects' bounding box and to
OpenCV's uint8 kernels (no float copies of the frame): :func:`render` takes ~0.3 ms at 240x427
(BENCHMARKS.md, "The loop around the model").
"""
from __future__ import annotations

import cv2
import numpy as np

from mast.core.masks import davis_palette

_PALETTE_BGR = np.ascontiguousarray(davis_palette()[:, ::-1])   # [256, 3] uint8, the colour of each id


def _objects_box(ids: np.ndarray) -> tuple[int, int, int, int]:
    """``(x, y, w, h)`` in pixels of the smallest box holding every pixel of ``ids`` ``[H, W]`` > 0
    (``w == 0`` when there is none)."""
    return cv2.boundingRect(np.ascontiguousarray(ids, dtype=np.uint8))


def _centroids(ids: np.ndarray) -> dict[int, tuple[int, int]]:
    """Centroid ``(x, y)`` in pixels (rounded half to even) of every object id > 0 present in
    ``ids`` ``[H, W]``: pixel counts and coordinate sums (exact integers in float64) per id."""
    ids = np.asarray(ids, dtype=np.uint8)
    x0, y0, w, h = _objects_box(ids)
    if w == 0:
        return {}
    roi = ids[y0:y0 + h, x0:x0 + w]
    present = np.nonzero(cv2.calcHist([roi], [0], None, [256], [0, 256]).ravel()[1:])[0] + 1
    out = {}
    for k in present:
        m = cv2.moments((roi == k).view(np.uint8), binaryImage=True)
        n = m["m00"]
        out[int(k)] = (int(round((m["m10"] + x0 * n) / n)), int(round((m["m01"] + y0 * n) / n)))
    return out


def blend_colours(bgr: np.ndarray, ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A copy of ``bgr`` ``uint8 [H, W, 3]`` with the palette colour of each object of ``ids``
    ``[H, W]`` blended in: ``(1 - alpha) * pixel + alpha * colour``, rounded to nearest (OpenCV's
    ``addWeighted``), on object pixels only; background pixels are copied as they are. The blend runs
    on the objects' bounding box alone."""
    out = np.array(bgr, dtype=np.uint8, order="C")
    x, y, w, h = _objects_box(ids)
    if w == 0:
        return out
    roi, sel = out[y:y + h, x:x + w], np.ascontiguousarray(ids[y:y + h, x:x + w], dtype=np.uint8)
    blend = cv2.addWeighted(roi, 1.0 - alpha, np.take(_PALETTE_BGR, sel, axis=0), alpha, 0.0)
    cv2.copyTo(blend, sel, roi)          # object pixels only, into the view of ``out``
    return out


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


def draw_status(img: np.ndarray, status: str, legend: list[str] | tuple[str, ...]) -> np.ndarray:
    """A window's text, in ``img`` ``uint8 [H, W, 3]`` in place: ``status`` (e.g. the live frame rate)
    at the top left, scaled with the image's smaller side (0.5 up to 300 px), and the key ``legend``
    at the bottom (:func:`draw_legend`); returns ``img``."""
    scale = max(0.5, min(img.shape[:2]) / 600.0)
    put_text(img, status, (10, int(30 * scale) + 5), scale)
    return draw_legend(img, legend)


def draw_ids(bgr: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """A copy of ``bgr`` ``[H, W, 3]`` uint8 with each object's id number written, centred, at the
    object's centroid in ``ids`` ``[H, W]`` (the centroid of a ring-shaped object may lie outside it)."""
    if ids.shape != bgr.shape[:2]:
        raise ValueError(f"mask is {ids.shape[1]}x{ids.shape[0]} but frame is "
                         f"{bgr.shape[1]}x{bgr.shape[0]}: resize the mask to the frame first")
    return _write_ids(np.array(bgr, dtype=np.uint8, order="C"), ids)


def _write_ids(out: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Write each object's id at its centroid into ``out`` ``[H, W, 3]`` in place; returns it."""
    scale = max(0.4, min(out.shape[:2]) / 480.0)
    for k, (x, y) in _centroids(ids).items():
        (tw, th), _ = cv2.getTextSize(str(k), cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        put_text(out, str(k), (x - tw // 2, y + th // 2), scale)
    return out


def render(bgr: np.ndarray, ids: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The frame with the palette colours of ``ids`` blended in (``alpha`` 0..1,
    :func:`blend_colours`) and the ids drawn: a new ``uint8 [H, W, 3]`` BGR image."""
    if ids.shape != bgr.shape[:2]:
        raise ValueError(f"mask is {ids.shape[1]}x{ids.shape[0]} but frame is "
                         f"{bgr.shape[1]}x{bgr.shape[0]}: resize the mask to the frame first")
    return _write_ids(blend_colours(bgr, ids, alpha), ids)
