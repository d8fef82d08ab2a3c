"""Object masks at feature resolution (docs/DESIGN.md, per-frame step 3; torch-free).

Keys have one pixel per ``stride x stride`` cell of the working frame; the memory stores one label
per key pixel, read from the mask at one point of each cell. The prediction goes back to the frame
by bilinear upsampling with half-pixel centres (step 6), which puts key pixel ``i`` at frame
coordinate ``stride * i + (stride - 1) / 2`` (1.5 for stride 4): the cell's centre. The published
MAST code reads the labels at the cell's top-left pixel (``mask[::4, ::4]``, offset 0), 1.5 px
before where the prediction is put back, so every propagated frame moves the mask 1.5 working
pixels down and right, and the error compounds along the memory chain (a static video: IoU 0.85
with the first mask after 30 frames instead of 0.94; README, "Label alignment"). ``offset`` 1
samples half a pixel before the centre: the drift stops.
"""
from __future__ import annotations

import numpy as np

PUBLISHED_LABEL_OFFSET = 0
"""The published code's sample point in each stride cell (its top-left pixel): the parity setting."""


def feature_labels(mask: np.ndarray, stride: int, offset: int, shape: tuple[int, int]) -> np.ndarray:
    """The mask read at ``(stride * i + offset, stride * j + offset)`` for every key pixel (i, j).

    mask:   ``[H, W]`` (ids or label channels, any dtype) at the working size.
    shape:  (h, w) of the key map, ``ceil(H / stride)``, ``ceil(W / stride)``.
    Returns ``[h, w]``, same dtype. A sample point past the last row or column (a partial last cell
    and ``offset`` > 0) reads that last row or column.
    """
    rows = np.minimum(np.arange(shape[0]) * stride + offset, mask.shape[0] - 1)
    cols = np.minimum(np.arange(shape[1]) * stride + offset, mask.shape[1] - 1)
    return mask[np.ix_(rows, cols)]
