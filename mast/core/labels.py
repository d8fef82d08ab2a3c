"""Object masks at feature resolution (docs/DESIGN.md, per-frame step 3; torch-free).

Keys have one pixel per ``stride x stride`` cell of the working frame; the memory stores one label
per key pixel, read from the mask at one point of each cell. The prediction goes back to the frame
by bilinear upsampling with half-pixel centres (step 6), which puts key pixel ``i`` at frame
coordinate ``stride * i + (stride - 1) / 2`` (1.5 for stride 4): the cell's centre. The published
MAST code reads the labels at the cell's top-left pixel (``mask[::4, ::4]``, offset 0), 1.5 px
before where the prediction is put back, so every propagated frame moves the mask 1.5 working
pixels down and right, and the error compounds along the memory chain (a static video: IoU 0.85
with the first mask after 30 frames instead of 0.94; docs/RESULTS.md, "Label alignment"). ``offset`` 1
samples half a pixel before the centre: the drift stops.
"""
from __future__ import annotations

import numpy as np

PUBLISHED_LABEL_OFFSET = 0
"""The published code's sample point in each stride cell (its top-left pixel): the parity setting."""


def cell_points(size: int, cells: int, stride: int, offset: int) -> np.ndarray:
    """Pixel index ``stride * i + offset`` of each of ``cells`` cells along an axis of ``size``
    pixels (int64 ``[cells]``); a point past the last pixel (a partial last cell) is that pixel."""
    return np.minimum(np.arange(cells) * stride + offset, size - 1)


def feature_labels(mask: np.ndarray, stride: int, offset: int, shape: tuple[int, int]) -> np.ndarray:
    """The mask read at ``(stride * i + offset, stride * j + offset)`` for every key pixel (i, j).

    mask:   ``[H, W]`` (ids or label channels, any dtype) at the working size.
    shape:  (h, w) of the key map, ``ceil(H / stride)``, ``ceil(W / stride)``.
    Returns ``[h, w]``, same dtype (``cell_points`` on each axis).
    """
    rows = cell_points(mask.shape[0], shape[0], stride, offset)
    cols = cell_points(mask.shape[1], shape[1], stride, offset)
    return mask[np.ix_(rows, cols)]
