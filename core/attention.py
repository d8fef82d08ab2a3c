"""ROI memory attention, reference semantics in pure PyTorch (DESIGN.md, per-frame step 5).

Memory-bounded CPU implementation. The query is cut into ``T x T`` tiles. Each memory map is
zero padded and laid out channels-last, and every tile reads one square key neighbourhood from
it (a row gather); the tile's scores against that neighbourhood are one batched matmul:

- restricted window (d <= 15): the neighbourhood is the tile grown by R; a constant mask keeps
  each query pixel's own ``(2R+1)^2`` window. Zero padding makes out-of-frame candidates score 0
  with value 0, as the published code does.
- ROI localisation (d > 15): the coarse dilated search is the restricted window on the
  ``gamma x gamma`` phase grids of the frame (query p = gamma*q + r reads keys gamma*(q + k) + r);
  its soft-argmax gives a fractional offset o_p per pixel. The fine window around p + o_p is
  read from the integer ``(2R+2)^2`` window at p + floor(o_p), whose scores are gathered from the
  tile's matmul and blended with the bilinear weights of frac(o_p); the softmax weights are spread
  back with the same weights onto the values: exactly bilinear sampling of keys and values, zeros
  outside the frame.

One softmax runs over the candidates of all memory frames together. Peak extra memory is that of
one band of ``band_tiles`` tile rows, whatever the frame size.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch.nn import functional as F

from mast.core.config import AttentionConfig


@dataclass(frozen=True)
class _Tiles:
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
        return band.reshape(-1, t * t, c)

    def untile(self, x: torch.Tensor, ty0: int, ty1: int) -> torch.Tensor:
        """``[ntiles, t*t, L]`` of tile rows [ty0, ty1) -> ``[L, rows, w]`` (padding cropped)."""
        t, n = self.t, ty1 - ty0
        x = x.reshape(n, self.ntx, t, t, -1).permute(4, 0, 2, 1, 3).reshape(-1, n * t, self.ntx * t)
        return x[:, : min(self.h, ty1 * t) - ty0 * t, : self.w]

    def origins(self, ty0: int, ty1: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Top-left pixel (row, column) of each tile of rows [ty0, ty1): ``[ntiles]`` each."""
        ty, tx = torch.meshgrid(torch.arange(ty0, ty1, device=device),
                                torch.arange(self.ntx, device=device), indexing="ij")
        return (ty * self.t).reshape(-1), (tx * self.t).reshape(-1)

    def window_mask(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Over (pixel in tile, cell of the ``(t+2r)^2`` neighbourhood), each ``[t*t, (t+2r)^2]``:
        additive mask (0 inside the pixel's window, -inf outside) and the cell's offset dy, dx."""
        return _window_mask(self.t, self.r, str(device))


@lru_cache(maxsize=16)
def _window_mask(t: int, r: int, device: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    s = t + 2 * r
    iy, ix = _grid(t, torch.device(device))
    ay, ax = _grid(s, torch.device(device))
    dy = ay.reshape(1, -1) - iy.reshape(-1, 1) - r
    dx = ax.reshape(1, -1) - ix.reshape(-1, 1) - r
    inside = (dy.abs() <= r) & (dx.abs() <= r)
    bias = torch.zeros(inside.shape, device=device).masked_fill_(~inside, float("-inf"))
    return bias, dy.float(), dx.float()


def _grid(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    a = torch.arange(n, device=device)
    return torch.meshgrid(a, a, indexing="ij")


class _PaddedMap:
    """A map ``[C, h, w]`` zero padded by ``pad`` and laid out channels-last ``[(h+2p)(w+2p), C]``,
    from which square neighbourhoods are gathered."""

    def __init__(self, x: torch.Tensor, pad: int, ones: bool = False) -> None:
        self.pad = pad
        self.width = x.shape[2] + 2 * pad
        self.rows = F.pad(x, (pad, pad, pad, pad)).flatten(1).t().contiguous()
        if ones:  # append a channel of ones, padding included: its weighted sum is the softmax denominator
            self.rows = torch.cat([self.rows, self.rows.new_ones(self.rows.shape[0], 1)], 1)

    def tile_squares(self, top: int, left: int, rows: int, cols: int, step: int, side: int) -> torch.Tensor:
        """``[rows*cols, side^2, C]``: squares on a regular grid, the first with top-left corner
        (top, left) (unpadded pixel coordinates), the others ``step`` apart (a strided copy)."""
        c, wp = self.rows.shape[1], self.width
        start = ((top + self.pad) * wp + left + self.pad) * c
        view = self.rows.as_strided((rows, cols, side, side, c), (step * wp * c, step * c, wp * c, c, 1), start)
        return view.reshape(rows * cols, side * side, c)

    def squares(self, top: torch.Tensor, left: torch.Tensor, side: int) -> torch.Tensor:
        """``[n, side^2, C]``: the squares whose top-left corners are (top, left) ``[n]`` in
        unpadded pixel coordinates."""
        a = torch.arange(side, device=top.device)
        cells = (a[:, None] * self.width + a[None, :]).reshape(-1)
        start = (top + self.pad) * self.width + (left + self.pad)
        return self.rows[start[:, None] + cells[None]]


def _local_squares(x: _PaddedMap, tiles: _Tiles, ty0: int, ty1: int) -> torch.Tensor:
    """The ``(t+2r)^2`` neighbourhoods of the tiles of rows [ty0, ty1): ``[nt, (t+2r)^2, C]``."""
    t, r = tiles.t, tiles.r
    return x.tile_squares(ty0 * t - r, -r, ty1 - ty0, tiles.ntx, t, t + 2 * r)


def _local_scores(q: torch.Tensor, key: _PaddedMap, tiles: _Tiles, ty0: int, ty1: int, bias) -> torch.Tensor:
    """Restricted-window scores of tile queries ``q`` ``[nt, tt, C]``: ``[nt, tt, (t+2r)^2]``
    (-inf outside each pixel's window)."""
    return torch.baddbmm(bias.to(q.dtype), q, _local_squares(key, tiles, ty0, ty1).transpose(1, 2))


def _coarse_offsets(query: torch.Tensor, key: torch.Tensor, gamma: int, cfg: AttentionConfig) -> torch.Tensor:
    """ROI centre offsets ``[2, h, w]`` (dy, dx, feature pixels) of one memory frame:
    o_p = gamma * sum_k softmax_k(<Q_p, K[p + gamma k]>) k, k in [-R, R]^2 (0 out of frame)."""
    h, w = query.shape[1:]
    offsets = query.new_zeros(2, h, w)
    for ry in range(min(gamma, h)):
        for rx in range(min(gamma, w)):
            q, k = query[:, ry::gamma, rx::gamma], key[:, ry::gamma, rx::gamma]
            tiles = _Tiles(q.shape[1], q.shape[2], cfg.tile, cfg.radius)
            bias, dy, dx = tiles.window_mask(query.device)
            dy, dx = dy.to(query.dtype), dx.to(query.dtype)
            q_pad, k_map = tiles.pad_query(q), _PaddedMap(k, cfg.radius + cfg.tile)
            for ty0, ty1 in tiles.bands(cfg.band_tiles):
                prob = torch.softmax(_local_scores(tiles.query(q_pad, ty0, ty1), k_map, tiles, ty0, ty1, bias), -1)
                o = torch.stack([(prob * dy).sum(-1), (prob * dx).sum(-1)], -1) * gamma  # [nt, tt, 2]
                rows = slice(ry + ty0 * cfg.tile * gamma, ry + ty1 * cfg.tile * gamma, gamma)
                offsets[:, rows, rx::gamma] = tiles.untile(o, ty0, ty1)
    return offsets


class _RoiFrame:
    """A memory frame read through its ROI: the fine window around p + o_p, bilinear, zero padded."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor, offsets: torch.Tensor, tiles: _Tiles) -> None:
        self.tiles = tiles
        r, t = tiles.r, tiles.t
        base = offsets.floor()
        self.frac = tiles.pad_query(offsets - base)                   # [2, Hq, Wq] in [0, 1)
        self.base = tiles.pad_query(base).long()                      # [2, Hq, Wq] floor(o_p)
        # a tile's square spans its pixels' window bases (each within +-max|base|) plus the window
        pad = 2 * int(base.abs().max().item()) + r + t + 2
        self.keys, self.values = _PaddedMap(key, pad), _PaddedMap(value, pad, ones=True)
        iy, ix = _grid(t, key.device)
        self.pix = (iy.reshape(-1), ix.reshape(-1))                   # pixel position in its tile
        ay, ax = _grid(2 * r + 2, key.device)
        self.win = (ay.reshape(-1), ax.reshape(-1))                   # cell of the (2R+2)^2 window

    def scores(self, q: torch.Tensor, ty0: int, ty1: int):
        """Fine-window scores ``[nt, tt, (2R+1)^2]`` for tile queries ``q`` ``[nt, tt, C]``, and the
        state ``aggregate`` needs."""
        tiles, t, r = self.tiles, self.tiles.t, self.tiles.r
        by = tiles.query(self.base[:1], ty0, ty1)[..., 0]             # [nt, tt]
        bx = tiles.query(self.base[1:], ty0, ty1)[..., 0]
        lo_y, lo_x = by.amin(1), bx.amin(1)                           # [nt]
        side = t + 2 * r + 2 + int(max((by.amax(1) - lo_y).max(), (bx.amax(1) - lo_x).max()))
        top, left = tiles.origins(ty0, ty1, q.device)
        top, left = top + lo_y - r, left + lo_x - r
        s = torch.bmm(q, self.keys.squares(top, left, side).transpose(1, 2))      # [nt, tt, side^2]
        # each pixel's (2R+2)^2 integer window inside its tile's square
        wy = self.pix[0][None, :, None] + (by - lo_y[:, None])[..., None] + self.win[0][None, None]
        wx = self.pix[1][None, :, None] + (bx - lo_x[:, None])[..., None] + self.win[1][None, None]
        cell = wy * side + wx                                          # [nt, tt, (2R+2)^2]
        n, m = 2 * r + 1, 2 * r + 2
        s = torch.gather(s, 2, cell).view(*cell.shape[:2], m, m)
        fy = tiles.query(self.frac[:1], ty0, ty1)[..., None]          # [nt, tt, 1, 1]
        fx = tiles.query(self.frac[1:], ty0, ty1)[..., None]
        wts = ((1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx)
        fine = (wts[0] * s[..., :n, :n] + wts[1] * s[..., :n, 1:]
                + wts[2] * s[..., 1:, :n] + wts[3] * s[..., 1:, 1:])
        return fine.flatten(2), (top, left, side, cell, wts)

    def aggregate(self, e: torch.Tensor, state) -> torch.Tensor:
        """Weighted values ``[nt, tt, L]`` for unnormalised weights ``e`` ``[nt, tt, (2R+1)^2]``."""
        top, left, side, cell, wts = state
        n = 2 * self.tiles.r + 1
        e = e.view(*e.shape[:2], n, n)
        spread = e.new_zeros(*e.shape[:2], n + 1, n + 1)
        spread[..., :n, :n] += wts[0] * e
        spread[..., :n, 1:] += wts[1] * e
        spread[..., 1:, :n] += wts[2] * e
        spread[..., 1:, 1:] += wts[3] * e
        full = e.new_zeros(*e.shape[:2], side * side).scatter_(2, cell, spread.flatten(2))
        return torch.bmm(full, self.values.squares(top, left, side))


def roi_memory_attention(
    query: torch.Tensor,
    keys: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    distances: Sequence[int],
    cfg: AttentionConfig = AttentionConfig(),
) -> torch.Tensor:
    """Label distribution of the query frame read from memory frames.

    query:     ``[C, h, w]`` key of the frame being predicted.
    keys:      M tensors ``[C, h, w]``, the memory frames' keys.
    values:    M tensors ``[L, h, w]``, their label maps (one-hot at the strided centres).
    distances: M frame distances d = t - m >= 1 (d > cfg.roi_threshold: ROI localisation).
    Returns ``[L, h, w]`` float32: the softmax-weighted sum of the candidates' values, one softmax
    over the (2R+1)^2 candidates of every memory frame together.
    """
    if not (len(keys) == len(values) == len(distances)) or not keys:
        raise ValueError("keys, values and distances need the same, non-zero length")
    query = query if query.dtype == torch.float64 else query.float()
    h, w = query.shape[1:]
    tiles = _Tiles(h, w, cfg.tile, cfg.radius)
    bias, _, _ = tiles.window_mask(query.device)
    local, roi = [], []
    for k, v, d in zip(keys, values, distances):
        k, v = k.to(query.dtype), v.to(query.dtype)
        if cfg.uses_roi(d):
            roi.append(_RoiFrame(k, v, _coarse_offsets(query, k, cfg.dilation(d), cfg), tiles))
        else:
            pad = cfg.radius + cfg.tile
            local.append((_PaddedMap(k, pad), _PaddedMap(v, pad, ones=True)))
    q_pad = tiles.pad_query(query)
    out = query.new_empty(values[0].shape[0], h, w)  # [L, h, w]
    for ty0, ty1 in tiles.bands(cfg.band_tiles):
        band = _read_band(tiles.query(q_pad, ty0, ty1), tiles, ty0, ty1, bias, local, roi)
        out[:, ty0 * cfg.tile: min(h, ty1 * cfg.tile)] = tiles.untile(band, ty0, ty1)
    return out


def _read_band(q: torch.Tensor, tiles: _Tiles, ty0: int, ty1: int, bias, local, roi) -> torch.Tensor:
    """Joint-softmax read for tile queries ``q`` ``[nt, tt, C]`` of rows [ty0, ty1): ``[nt, tt, L]``."""
    scores = [_local_scores(q, k, tiles, ty0, ty1, bias) for k, _ in local]
    roi_parts = [frame.scores(q, ty0, ty1) for frame in roi]
    peak = torch.stack([s.amax(-1) for s in scores] + [s.amax(-1) for s, _ in roi_parts]).amax(0)[..., None]
    acc = 0  # [nt, tt, L + 1]: weighted values, and in the last column the softmax denominator
    for s, (_, v) in zip(scores, local):
        acc = acc + torch.bmm(_exp_shifted(s, peak), _local_squares(v, tiles, ty0, ty1))
    for frame, (s, state) in zip(roi, roi_parts):
        acc = acc + frame.aggregate(_exp_shifted(s, peak), state)
    return acc[..., :-1] / acc[..., -1:]


def _exp_shifted(s: torch.Tensor, peak: torch.Tensor) -> torch.Tensor:
    """exp(s - peak), in place unless autograd needs ``s``."""
    return torch.exp(s - peak) if s.requires_grad else s.sub_(peak).exp_()
