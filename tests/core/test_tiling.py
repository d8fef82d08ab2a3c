"""Query tiling shared by the reference attention and the exported graph."""
from __future__ import annotations

import pytest
import torch

from mast.core.tiling import Tiles, window_mask, window_offsets


@pytest.mark.parametrize("h, w, t", [(9, 13, 4), (8, 8, 8), (5, 17, 3)])
def test_query_then_untile_gives_the_map_back(h, w, t):
    tiles = Tiles(h, w, t, 2)
    x = torch.arange(3 * h * w, dtype=torch.float32).reshape(3, h, w)
    q_pad = tiles.pad_query(x)
    assert q_pad.shape == (3, tiles.nty * t, tiles.ntx * t)
    rows = [tiles.untile(tiles.query(q_pad, ty0, ty1), ty0, ty1) for ty0, ty1 in tiles.bands(2)]
    assert torch.equal(torch.cat(rows, 0), x.permute(1, 2, 0))


def test_origins_are_the_tiles_top_left_pixels():
    top, left = Tiles(9, 13, 4, 2).origins(1, 3)
    assert top.tolist() == [4] * 4 + [8] * 4 and left.tolist() == [0, 4, 8, 12] * 2


@pytest.mark.parametrize("t, r", [(4, 2), (8, 12), (1, 3)])
def test_each_pixel_keeps_its_own_window(t, r):
    mask, (dy, dx) = window_mask(t, r, "cpu"), window_offsets(t, r, "cpu")
    assert mask.shape == dy.shape == dx.shape == (t * t, (t + 2 * r) ** 2)
    inside = mask == 0
    assert (inside.sum(1) == (2 * r + 1) ** 2).all()
    assert torch.equal(inside, (dy.abs() <= r) & (dx.abs() <= r))
    assert ((dy == 0) & (dx == 0)).sum(1).eq(1).all()  # the pixel itself, once
