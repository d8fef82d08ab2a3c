"""Query tiling shared by the reference attention (:mod:`mast.core.attention`) and the exported
graph (:mod:`mast.export.memory_graph`): reshapes and pads only, so it also traces to ONNX.

A ``h x w`` query map is cut into ``t x t`` tiles (padded to whole tiles); each tile is matched
against the ``(t+2r)^2`` square of keys around it, and a per-pixel mask keeps each pixel's own
``(2r+1)^2`` window of that square.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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
        """``[ntiles, t*t, L]`` of tile rows [ty0, ty1) -> ``[rows, w, L]`` (padding cropped)."""
        t, n = self.t, ty1 - ty0
        x = x.reshape(n, self.ntx, t, t, -1).permute(0, 2, 1, 3, 4).reshape(n * t, self.ntx * t, -1)
        return x[: min(self.h, ty1 * t) - ty0 * t, : self.w]

    def origins(self, ty0: int, ty1: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-left pixel (row, column) of each tile of rows [ty0, ty1): ``[ntiles]`` int64 each."""
        ty, tx = torch.meshgrid(torch.arange(ty0, ty1, device=device), torch.arange(self.ntx, device=device),
                                indexing="ij")
        return (ty * self.t).reshape(-1), (tx * self.t).reshape(-1)

    def window_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """``[t*t, (t+2r)^2]`` additive mask (see :func:`window_mask`)."""
        return window_mask(self.t, self.r, str(device))

    def window_offsets(self, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """``[t*t, (t+2r)^2]`` each: offsets dy, dx (see :func:`window_offsets`)."""
        return window_offsets(self.t, self.r, str(device))


@lru_cache(maxsize=16)
def window_mask(t: int, r: int, device: str) -> torch.Tensor:
    """``[t*t, (t+2r)^2]`` float32 over (pixel i of a ``t x t`` block, cell of the block's square):
    0 where the cell lies in the pixel's ``(2r+1)^2`` window (cells i .. i + 2r), -inf elsewhere.
    Cached: do not modify in place."""
    iy, ix = (c.reshape(-1, 1) for c in grid(t, torch.device(device)))
    ay, ax = (c.reshape(1, -1) for c in grid(t + 2 * r, torch.device(device)))
    inside = (ay - iy >= 0) & (ay - iy <= 2 * r) & (ax - ix >= 0) & (ax - ix <= 2 * r)
    return torch.zeros(inside.shape, device=device).masked_fill_(~inside, float("-inf"))


@lru_cache(maxsize=16)
def window_offsets(t: int, r: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``[t*t, (t+2r)^2]`` float32 each: the offset (dy, dx) of each cell of a block's square from
    each pixel's own position (0 at the pixel). Cached: do not modify in place."""
    iy, ix = (c.reshape(-1, 1) for c in grid(t, torch.device(device)))
    ay, ax = (c.reshape(1, -1) for c in grid(t + 2 * r, torch.device(device)))
    return (ay - iy - r).float(), (ax - ix - r).float()


def grid(n: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column index of each cell of an ``n x n`` grid: ``[n, n]`` each."""
    a = torch.arange(n, device=device)
    return torch.meshgrid(a, a, indexing="ij")
