"""Drawing on frames (mast.runtime.drawing): the colour overlay, object ids at their centroids,
the window's text; nothing else touched."""
from __future__ import annotations

import numpy as np
import pytest

from mast.core.masks import colour_overlay, davis_palette
from mast.runtime import drawing
from mast.runtime.drawing import draw_ids, draw_legend, render

W, H = 96, 64



def test_centroids(toy_ids) -> None:
    cents = drawing._centroids(toy_ids())
    assert set(cents) == {1, 3, 200}
    assert cents[1] == (17, 14) and cents[3] == (70, 44) and cents[200] == (14, 44)


def test_draw_ids_marks_centroids_only(toy_ids) -> None:
    frame = np.full((H, W, 3), 128, np.uint8)
    before = frame.copy()
    out = draw_ids(frame, toy_ids())
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


def _centroids_by_sums(ids: np.ndarray) -> dict[int, tuple[int, int]]:
    """The definition: mean pixel coordinates per id, rounded half to even (float64 sums)."""
    ys, xs = np.indices(ids.shape)
    out = {}
    for k in np.unique(ids)[np.unique(ids) > 0]:
        n = (ids == k).sum()
        out[int(k)] = (int(round(xs[ids == k].sum() / n)), int(round(ys[ids == k].sum() / n)))
    return out


def test_centroids_match_the_definition_on_random_masks() -> None:
    rng = np.random.default_rng(0)
    for trial in range(40):
        h, w = rng.integers(1, 70, 2)
        ids = (rng.integers(0, 7, (h, w)) * (rng.random((h, w)) < rng.random())).astype(np.uint8)
        if trial % 4 == 0:
            ids[:] = 0
            ids[rng.integers(h), rng.integers(w)] = 255   # a single pixel, the highest id
        assert drawing._centroids(ids) == _centroids_by_sums(ids)


def test_blend_colours_is_the_palette_overlay(toy_ids) -> None:
    """Object pixels: (1 - alpha) * pixel + alpha * palette colour (BGR), rounded (the float
    reference truncates: at most 1 apart); background pixels: untouched, copied bit for bit."""
    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    ids = toy_ids()
    for alpha in (0.5, 0.3, 1.0):
        out = drawing.blend_colours(frame, ids, alpha)
        colours = davis_palette()[ids][..., ::-1].astype(np.float64)
        exact = (1 - alpha) * frame + alpha * colours
        fg = ids > 0
        assert np.abs(out[fg].astype(np.float64) - exact[fg]).max() <= 0.5 + 1e-6
        np.testing.assert_array_equal(out[~fg], frame[~fg])
        assert np.abs(out.astype(int) - colour_overlay(frame, ids, alpha).astype(int)).max() <= 1
    empty = drawing.blend_colours(frame, np.zeros((H, W), np.uint8))
    assert empty is not frame and np.array_equal(empty, frame)
    view = frame[:, ::-1]                                 # any layout, any integer ids
    np.testing.assert_array_equal(drawing.blend_colours(view, ids.astype(np.int64)),
                                  drawing.blend_colours(view.copy(), ids))
    assert drawing._centroids(ids.astype(np.int32)) == drawing._centroids(ids)


def test_render_is_a_new_image_with_colours_and_ids(toy_ids) -> None:
    frame = np.full((H, W, 3), 128, np.uint8)
    out = render(frame, toy_ids())
    assert out.shape == frame.shape and out.dtype == np.uint8 and (frame == 128).all()
    assert np.array_equal(out[0, 0], frame[0, 0])                     # background
    assert not np.array_equal(out[6, 6], frame[6, 6])                 # object 1, away from its id text
    with pytest.raises(ValueError, match="resize the mask"):
        render(frame, np.zeros((10, 10), np.uint8))


def test_draw_status_writes_the_rate_at_the_top_and_the_keys_at_the_bottom() -> None:
    img = np.full((240, 427, 3), 200, np.uint8)
    assert drawing.draw_status(img, "12.5 fps", ("q: quit",)) is img
    changed = np.any(img != 200, axis=2)
    assert changed[:40, :120].any() and changed[200:].any() and not changed[60:180].any()
