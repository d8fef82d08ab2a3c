"""Query tiling and padded channels-last maps for the exported attention graph.

The same tiling as the reference (:mod:`mast.core.attention`), kept here so that the exported graph
does not change when the reference's internals are optimised (strided views, caches) in ways that
do not trace: only reshapes, pads and Gathers with constant or tensor indices.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class Tiles:
    """Tiling of an ``h x w`` query map into ``t x t`` tiles; windows of radius ``r``."""

    h: int
    w: int
    t: int
    r: int

    @property
    def nty(self) -> int:
        return -(-self.h // self.t)

    @property
    def ntx(self) -> int:
        return -(-self.w // self.t)

    def bands(self, band_tiles: int) -> list[tuple[int, int]]:
        """Tile-row ranges [ty0, ty1) processed together."""
        return [(y, min(y + band_tiles, self.nty)) for y in range(0, self.nty, band_tiles)]

    def pad_query(self, q: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``[C, h, w]`` to whole tiles ``[C, nty*t, ntx*t]``."""
        return F.pad(q, (0, self.ntx * self.t - self.w, 0, self.nty * self.t - self.h))

    def query(self, q_pad: torch.Tensor, ty0: int, ty1: int) -> torch.Tensor:
        """Pixels of tile rows [ty0, ty1) of a ``pad_query`` map as ``[ntiles, t*t, C]``."""
        c, t = q_pad.shape[0], self.t
        band = q_pad[:, ty0 * t: ty1 * t].reshape(c, ty1 - ty0, t, self.ntx, t).permute(1, 3, 2, 4, 0)
        return band.reshape((ty1 - ty0) * self.ntx, t * t, c)

    def untile(self, x: torch.Tensor, ty0: int, ty1: int) -> torch.Tensor:
        """``[ntiles, t*t, L]`` of tile rows [ty0, ty1) -> ``[L, rows, w]`` (padding cropped)."""
        t, n = self.t, ty1 - ty0
        x = x.reshape(n, self.ntx, t, t, x.shape[-1]).permute(4, 0, 2, 1, 3).reshape(x.shape[-1], n * t, self.ntx * t)
        return x[:, : min(self.h, ty1 * t) - ty0 * t, : self.w]

    def origins(self, ty0: int, ty1: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-left pixel (row, column) of each tile of rows [ty0, ty1): ``[ntiles]`` int64 each."""
        ty, tx = torch.meshgrid(torch.arange(ty0, ty1), torch.arange(self.ntx), indexing="ij")
        return (ty * self.t).reshape(-1), (tx * self.t).reshape(-1)

    def window_mask(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Over (pixel in tile, cell of the ``(t+2r)^2`` neighbourhood), each ``[t*t, (t+2r)^2]``:
        additive mask (0 inside the pixel's window, -inf outside) and the cell's offset dy, dx."""
        iy, ix = grid(self.t)
        ay, ax = grid(self.t + 2 * self.r)
        dy, dx = ay[None] - iy[:, None] - self.r, ax[None] - ix[:, None] - self.r
        inside = (dy.abs() <= self.r) & (dx.abs() <= self.r)
        bias = torch.zeros(inside.shape).masked_fill(~inside, float("-inf"))
        return bias, dy.float(), dx.float()


def grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column index of each cell of an ``n x n`` grid, flattened ``[n*n]`` each."""
    a = torch.arange(n)
    y, x = torch.meshgrid(a, a, indexing="ij")
    return y.reshape(-1), x.reshape(-1)


class PaddedMap:
    """A map ``[C, h, w]`` zero padded by ``pad`` and laid out channels-last ``[(h+2p)(w+2p), C]``,
    from which square neighbourhoods are gathered. ``ones``: a last channel of ones (padding
    included), whose weighted sum is the softmax denominator."""

    def __init__(self, x: torch.Tensor, pad: int, ones: bool = False) -> None:
        self.pad = pad
        self.width = x.shape[2] + 2 * pad
        self.rows = F.pad(x, (pad, pad, pad, pad)).flatten(1).t()
        if ones:
            self.rows = torch.cat([self.rows, torch.ones_like(self.rows[:, :1])], 1)

    def cells(self, top: torch.Tensor, left: torch.Tensor, side) -> torch.Tensor:
        """Row indices ``[n, side^2]`` of the squares with top-left corners (top, left) ``[n]``
        (unpadded pixel coordinates); ``side`` an int or a 0-d tensor."""
        a = torch.arange(side)
        cells = (a[:, None] * self.width + a[None, :]).reshape(-1)
        start = (top + self.pad) * self.width + (left + self.pad)
        return start[:, None] + cells[None]

    def squares(self, top: torch.Tensor, left: torch.Tensor, side: int) -> torch.Tensor:
        """``[n, side^2, C]``: the squares whose top-left corners are (top, left) ``[n]``."""
        return self.rows[self.cells(top, left, side)]
