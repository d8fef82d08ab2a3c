"""Drawing on frames (mast.runtime.drawing): object ids at their centroids, nothing else touched."""
from __future__ import annotations

import numpy as np
import pytest

from mast.runtime import drawing
from mast.runtime.drawing import draw_ids, draw_legend

W, H = 96, 64


def _ids() -> np.ndarray:
    ids = np.zeros((H, W), np.uint8)
    ids[5:25, 5:30] = 1
    ids[30:60, 50:90] = 3
    ids[40:50, 10:20] = 200
    return ids


def test_centroids() -> None:
    cents = drawing._centroids(_ids())
    assert set(cents) == {1, 3, 200}
    assert cents[1] == (17, 14) and cents[3] == (70, 44) and cents[200] == (14, 44)


def test_draw_ids_marks_centroids_only() -> None:
    frame = np.full((H, W, 3), 128, np.uint8)
    before = frame.copy()
    out = draw_ids(frame, _ids())
    np.testing.assert_array_equal(frame, before)  # input untouched
    changed = np.any(out != frame, axis=2)
    assert changed[40:50, 60:80].any()  # text around id 3's centroid (70, 44)
    assert not changed[:, 92:].any() and not changed[:2].any()
    np.testing.assert_array_equal(draw_ids(frame, np.zeros((H, W), np.uint8)), frame)
    with pytest.raises(ValueError, match="resize the mask"):
        draw_ids(frame, np.zeros((10, 10), np.uint8))


def test_draw_legend_writes_in_place_at_the_bottom() -> None:
    img = np.full((240, 427, 3), 200, np.uint8)
    out = draw_legend(img, ["space: pause   q/Esc: quit"])
    assert out is img
    changed = np.any(img != 200, axis=2)
    assert changed[200:].any() and not changed[:150].any()
