"""Masks at feature resolution: one sample per stride cell, at the configured pixel."""
from __future__ import annotations

import numpy as np

from mast.core.labels import PUBLISHED_LABEL_OFFSET, feature_labels


def test_published_offset_is_the_strided_top_left_sample():
    mask = np.arange(11 * 13).reshape(11, 13)
    assert np.array_equal(feature_labels(mask, 4, PUBLISHED_LABEL_OFFSET, (3, 4)), mask[::4, ::4])


def test_offset_samples_inside_each_cell_and_clamps_a_partial_last_cell():
    mask = np.arange(6 * 10).reshape(6, 10)           # key map ceil(6/4) x ceil(10/4) = 2 x 3
    got = feature_labels(mask, 4, 2, (2, 3))
    rows, cols = [2, 5], [2, 6, 9]                   # 6 -> last row 5, 10 -> last column 9
    assert np.array_equal(got, mask[np.ix_(rows, cols)])
    assert got.dtype == mask.dtype
