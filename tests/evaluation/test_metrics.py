"""DAVIS J / F / statistics against fixtures worked out by hand (official semantics)."""
from __future__ import annotations

import numpy as np
import pytest

from mast.evaluation.metrics import (
    boundary_radius,
    db_eval_boundary,
    db_eval_iou,
    db_statistics,
    disk,
    f_measure,
    seg2bmap,
)


def box(shape, rows, cols):
    """Bool mask with ones on rows[0]..rows[1] x cols[0]..cols[1] (inclusive)."""
    m = np.zeros(shape, bool)
    m[rows[0] : rows[1] + 1, cols[0] : cols[1] + 1] = True
    return m


# ---------------------------------------------------------------- J


def test_iou_hand_computed():
    gt = box((4, 4), (0, 1), (0, 1))  # 4 px
    pred = box((4, 4), (0, 1), (0, 2))  # 6 px, contains gt
    assert db_eval_iou(gt, pred) == pytest.approx(4 / 6)
    # 3x3 squares two columns apart overlap in one column: 3 / 15
    assert db_eval_iou(box((10, 10), (2, 4), (2, 4)), box((10, 10), (2, 4), (4, 6))) == pytest.approx(0.2)


def test_iou_empty_union_is_one_and_disjoint_is_zero():
    empty = np.zeros((5, 6), np.uint8)
    assert db_eval_iou(empty, empty) == 1.0
    assert db_eval_iou(box((5, 6), (0, 0), (0, 0)), empty) == 0.0


def test_iou_void_pixels_are_left_out():
    gt = box((4, 4), (0, 1), (0, 1))
    pred = box((4, 4), (0, 1), (0, 2))
    void = np.zeros((4, 4), bool)
    void[:, 2] = True  # hides the 2 extra predicted pixels
    assert db_eval_iou(gt, pred, void) == 1.0


def test_iou_stack_returns_per_frame_array():
    gt = np.stack([box((4, 4), (0, 1), (0, 1)), np.zeros((4, 4), bool)])
    pred = np.stack([box((4, 4), (0, 1), (0, 2)), np.zeros((4, 4), bool)])
    j = db_eval_iou(gt, pred)
    assert j.shape == (2,)
    np.testing.assert_allclose(j, [4 / 6, 1.0])


def test_iou_shape_mismatch_raises():
    with pytest.raises(ValueError):
        db_eval_iou(np.zeros((3, 3)), np.zeros((3, 4)))


# ---------------------------------------------------------------- boundary map, disk, radius


def test_seg2bmap_square_hand_computed():
    seg = box((4, 4), (1, 2), (1, 2))
    expected = np.array(
        [
            [1, 1, 1, 0],
            [1, 0, 1, 0],
            [1, 1, 1, 0],
            [0, 0, 0, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_seg2bmap_border_rules():
    # a full mask has no boundary: last row / column only compare within the image
    assert not seg2bmap(np.ones((3, 3), bool)).any()
    # object on the last row: last-row pixels compare with their right neighbour only
    seg = np.zeros((3, 4), bool)
    seg[2, 1:3] = True
    expected = np.array(
        [
            [0, 0, 0, 0],
            [1, 1, 1, 0],  # row above: differs from below / diagonal
            [1, 0, 1, 0],  # last row: seg ^ right
        ],
        bool,
    )
    np.testing.assert_array_equal(seg2bmap(seg), expected)
    # object on the last column: last-column pixels compare with the pixel below only
    seg = np.zeros((4, 3), bool)
    seg[1:3, 2] = True
    expected = np.array(
        [
            [0, 1, 1],
            [0, 1, 0],
            [0, 1, 1],
            [0, 0, 0],  # bottom-right corner is never a boundary
        ],
        bool,
    )
    np.testing.assert_array_equal(seg2bmap(seg), expected)


def test_disk_matches_skimage_definition():
    np.testing.assert_array_equal(disk(1), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(
        disk(2),
        [
            [0, 0, 1, 0, 0],
            [0, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
            [0, 1, 1, 1, 0],
            [0, 0, 1, 0, 0],
        ],
    )
    d8 = disk(8.0)  # the radius used on 854x480 frames
    assert d8.shape == (17, 17) and d8.dtype == np.uint8
    # row y (-8..8) holds the x with x^2 <= 64 - y^2: 1, 7, 11, 13, 13, 15, 15, 15, 17, ... pixels
    np.testing.assert_array_equal(d8.sum(1), [1, 7, 11, 13, 13, 15, 15, 15, 17, 15, 15, 15, 13, 13, 11, 7, 1])
    np.testing.assert_array_equal(d8, d8.T)
    assert d8.sum() == 197


def test_boundary_radius():
    assert boundary_radius((480, 854)) == 8.0  # ceil(0.008 * 979.6)
    assert boundary_radius((10, 10)) == 1.0  # ceil(0.008 * 14.1)
    assert boundary_radius((480, 854), bound_th=3) == 3  # >= 1: pixels


# ---------------------------------------------------------------- F


def test_f_measure_shifted_square_hand_computed():
    # 10x10 image -> radius 1 (cross-shaped disk). Each 3x3 square has a 12-pixel ring boundary
    # (the 4x4 box one pixel up-left of it, minus its 2x2 interior). Shifted by 2 columns, 8 of the
    # 12 predicted boundary pixels lie within 1 px (4-neighbourhood) of the ground-truth ring, and
    # vice versa: precision = recall = 2/3, F = 2/3.
    gt = box((10, 10), (2, 4), (2, 4))
    pred = box((10, 10), (2, 4), (4, 6))
    assert seg2bmap(gt).sum() == 12 and seg2bmap(pred).sum() == 12
    assert f_measure(pred, gt) == pytest.approx(2 / 3)
    assert db_eval_boundary(gt, pred) == pytest.approx(2 / 3)


def test_f_measure_asymmetric_precision_recall():
    # gt 3x3 ring (12 px); pred 1x1 at the gt's top-left -> its boundary is the 2x2 block
    # rows 1-2, cols 1-2 (4 px). With radius 1 all 4 predicted px touch the gt ring
    # (precision 1); gt ring pixels within 1 px of that 2x2 block: (1,1),(1,2),(2,1),(1,3),(3,1)
    # -> recall 5/12; F = 2 * 1 * 5/12 / (1 + 5/12) = 10/17.
    gt = box((10, 10), (2, 4), (2, 4))
    pred = box((10, 10), (2, 2), (2, 2))
    assert seg2bmap(pred).sum() == 4
    assert f_measure(pred, gt) == pytest.approx(10 / 17)


def test_f_measure_edge_cases():
    empty = np.zeros((10, 10), bool)
    square = box((10, 10), (2, 4), (2, 4))
    assert f_measure(empty, empty) == 1.0  # no boundary on either side: P = R = 1
    assert f_measure(empty, square) == 0.0  # P = 1, R = 0
    assert f_measure(square, empty) == 0.0  # P = 0, R = 1
    assert f_measure(square, square) == 1.0
    full = np.ones((10, 10), bool)  # a full mask has no boundary
    assert f_measure(full, full) == 1.0
    assert f_measure(full, square) == 0.0


def test_f_measure_void_pixels_removed_from_both_masks():
    gt = box((10, 10), (2, 4), (2, 4))
    pred = box((10, 10), (2, 4), (2, 7))
    void = np.zeros((10, 10), bool)
    void[:, 5:] = True
    assert f_measure(pred, gt) < 1.0
    assert f_measure(pred, gt, void) == 1.0


def _f_brute_force(pred, gt, radius):
    """Precision / recall by explicit distances on the boundary maps (independent of cv2)."""
    bp, bg = seg2bmap(pred), seg2bmap(gt)
    p_pts, g_pts = np.argwhere(bp), np.argwhere(bg)
    if len(p_pts) == 0 or len(g_pts) == 0:
        return None
    d = ((p_pts[:, None, :] - g_pts[None, :, :]) ** 2).sum(-1)
    precision = (d.min(1) <= radius**2).mean()
    recall = (d.min(0) <= radius**2).mean()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


@pytest.mark.parametrize("seed", range(6))
def test_f_measure_matches_brute_force_distances(seed):
    rng = np.random.default_rng(seed)
    h, w = 60, 90  # radius ceil(0.008 * 108.2) = 1; also test an explicit larger one
    gt = np.zeros((h, w), bool)
    pred = np.zeros((h, w), bool)
    for m in (gt, pred):
        for _ in range(3):
            y, x = rng.integers(0, h - 5), rng.integers(0, w - 5)
            m[y : y + rng.integers(2, 20), x : x + rng.integers(2, 30)] = True
    for bound_th, radius in ((0.008, 1), (4, 4), (0.05, 6)):
        expected = _f_brute_force(pred, gt, radius)
        assert boundary_radius((h, w), bound_th) == radius
        assert f_measure(pred, gt, bound_th=bound_th) == pytest.approx(expected, abs=1e-12)


def test_db_eval_boundary_stack_and_argument_order():
    gt = np.stack([box((10, 10), (2, 4), (2, 4))] * 2)
    pred = np.stack([box((10, 10), (2, 2), (2, 2)), box((10, 10), (2, 4), (2, 4))])
    f = db_eval_boundary(gt, pred)  # (annotation, segmentation)
    np.testing.assert_allclose(f, [10 / 17, 1.0])
    with pytest.raises(ValueError):
        db_eval_boundary(np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)))


# ---------------------------------------------------------------- statistics


def test_statistics_six_frames():
    # ids = round(linspace(1, 6, 5) + 1e-10) - 1 = round([1, 2.25, 3.5, 4.75, 6]) - 1 = [0, 1, 3, 4, 5]
    # bin 0 = v[0:2] = (1.0, 0.8) -> 0.9 ; bin 3 = v[4:6] = (0.2, 0.0) -> 0.1 ; decay 0.8
    values = np.array([1.0, 0.8, 0.6, 0.4, 0.2, 0.0])
    mean, recall, decay = db_statistics(values)
    assert mean == pytest.approx(0.5)
    assert recall == pytest.approx(3 / 6)  # 1.0, 0.8, 0.6 are > 0.5
    assert decay == pytest.approx(0.8)


def test_statistics_recall_is_strictly_above_half():
    assert db_statistics(np.array([0.5, 0.5, 0.51, 0.49]))[1] == pytest.approx(0.25)


def test_statistics_half_index_rounds_up():
    # T = 7: linspace(1, 7, 5) = [1, 2.5, 4, 5.5, 7]; + 1e-10 makes 2.5 -> 3 and 5.5 -> 6 (numpy's
    # round-half-to-even alone gives 2 and 6), so ids = [0, 2, 3, 5, 6]:
    # bin 0 = v[0:3] = (1, 1, 0.1) -> 0.7 ; bin 3 = v[5:7] = (0.3, 0.1) -> 0.2 ; decay 0.5
    values = np.array([1.0, 1.0, 0.1, 0.5, 0.5, 0.3, 0.1])
    assert db_statistics(values)[2] == pytest.approx(0.5)


def test_statistics_long_sequence_uses_int_indices():
    # T = 300: ids = [0, 75, 150, 224, 299] (the official uint8 cast would wrap 299 to 43)
    values = np.arange(300, dtype=np.float64)
    mean, _, decay = db_statistics(values)
    assert mean == pytest.approx(149.5)
    assert decay == pytest.approx(np.mean(values[0:76]) - np.mean(values[224:300]))
    assert decay == pytest.approx(37.5 - 261.5)


def test_statistics_single_frame_and_nan():
    assert db_statistics(np.array([0.7])) == pytest.approx((0.7, 1.0, 0.0))
    mean, recall, decay = db_statistics(np.array([1.0, np.nan, 0.0, 1.0]))
    assert mean == pytest.approx(2 / 3)  # nanmean
