"""ROI memory attention, reference semantics in pure PyTorch (DESIGN.md, per-frame step 5).

Memory-bounded CPU implementation. The query is cut into ``T x T`` tiles; the scores of a tile
against its ``(T + 2R)^2`` key neighbourhood are one batched matmul, and a constant mask keeps
each query pixel's own ``(2R+1)^2`` window. Key and value maps are zero padded, so out-of-frame
candidates score 0 and carry value 0. Memory frames at distance d > 15 first find their ROI: the
coarse dilated search is the same tiled window on the ``gamma x gamma`` phase grids of the frame
(query p = gamma*q + r reads keys gamma*(q + k) + r), its soft-argmax gives a fractional offset
o_p per pixel, and the fine window around p + o_p is read by gathering the integer
``(2R+2)^2`` window at p + floor(o_p) and blending the scores (and spreading the weights over
the values) with the bilinear weights of the fractional part: exactly bilinear sampling of keys
and values with zeros outside the frame. One softmax runs over the candidates of all frames.
Peak extra memory is a band of ``band_tiles`` tile rows, independent of the frame count.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from mast.core.config import AttentionConfig

_GATHER_CHUNK = 1024  # query pixels per gather of the ROI fine window


@dataclass(frozen=True)
class _Tiles:
    """Tiling of an ``h x w`` map into ``t x t`` tiles with neighbourhoods of radius ``r``."""

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

    @property
    def side(self) -> int:
        """Side of a tile's key neighbourhood."""
        return self.t + 2 * self.r

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``[C, h, w]`` to ``[C, nty*t + 2r, ntx*t + 2r]`` (r on top/left)."""
        r = self.r
        return F.pad(x, (r, r + self.ntx * self.t - self.w, r, r + self.nty * self.t - self.h))

    def pad_query(self, q: torch.Tensor) -> torch.Tensor:
        """Zero-pad ``[C, h, w]`` to whole tiles ``[C, nty*t, ntx*t]``."""
        return F.pad(q, (0, self.ntx * self.t - self.w, 0, self.nty * self.t - self.h))

    def query(self, q_pad: torch.Tensor, ty0: int, ty1: int) -> torch.Tensor:
        """Query pixels of tile rows [ty0, ty1) of a ``pad_query`` map as ``[ntiles, t*t, C]``."""
        c, t = q_pad.shape[0], self.t
        band = q_pad[:, ty0 * t: ty1 * t].reshape(c, ty1 - ty0, t, self.ntx, t).permute(1, 3, 2, 4, 0)
        return band.reshape(-1, t * t, c)

    def neighbourhoods(self, x_pad: torch.Tensor, ty0: int, ty1: int) -> torch.Tensor:
        """Key neighbourhoods of tile rows [ty0, ty1) from a padded map: ``[ntiles, C, side^2]``."""
        c, t = x_pad.shape[0], self.t
        band = x_pad[:, ty0 * t: ty1 * t + 2 * self.r]
        cols = F.unfold(band[None], kernel_size=self.side, stride=t)  # [1, C*side^2, ntiles]
        return cols.view(c, self.side * self.side, -1).permute(2, 0, 1)

    def window(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For each (pixel in tile, neighbourhood cell): additive mask (0 inside the pixel's
        window, -inf outside) and the offsets dy, dx of the cell from the pixel; each ``[t*t, side^2]``."""
        t, s = self.t, self.side
        iy, ix = torch.meshgrid(torch.arange(t, device=device), torch.arange(t, device=device), indexing="ij")
        ay, ax = torch.meshgrid(torch.arange(s, device=device), torch.arange(s, device=device), indexing="ij")
        dy = ay.reshape(1, -1) - iy.reshape(-1, 1) - self.r
        dx = ax.reshape(1, -1) - ix.reshape(-1, 1) - self.r
        inside = (dy.abs() <= self.r) & (dx.abs() <= self.r)
        bias = torch.zeros(inside.shape, device=device).masked_fill_(~inside, float("-inf"))
        return bias, dy.float(), dx.float()

    def untile(self, x: torch.Tensor, ty0: int, ty1: int) -> torch.Tensor:
        """``[ntiles, t*t, L]`` of tile rows [ty0, ty1) -> ``[L, rows, w]`` (padding cropped)."""
        t, n = self.t, ty1 - ty0
        x = x.reshape(n, self.ntx, t, t, -1).permute(4, 0, 2, 1, 3).reshape(-1, n * t, self.ntx * t)
        return x[:, : min(self.h, ty1 * t) - ty0 * t, : self.w]

    def pixel_coords(self, ty0: int, ty1: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column of every query pixel of tile rows [ty0, ty1), in tile order: ``[N]`` each."""
        t = self.t
        ty, tx, iy, ix = torch.meshgrid(
            torch.arange(ty0, ty1, device=device), torch.arange(self.ntx, device=device),
            torch.arange(t, device=device), torch.arange(t, device=device), indexing="ij")
        return (ty * t + iy).reshape(-1), (tx * t + ix).reshape(-1)


def _coarse_offsets(query: torch.Tensor, key: torch.Tensor, gamma: int, cfg: AttentionConfig) -> torch.Tensor:
    """ROI centre offsets ``[2, h, w]`` (dy, dx in feature pixels) of one memory frame.

    Soft-argmax of the softmax over the dilated window: o_p = gamma * sum_k softmax(<Q_p, K[p + gamma k]>) k.
    """
    h, w = query.shape[1:]
    offsets = query.new_zeros(2, h, w)
    for ry in range(min(gamma, h)):
        for rx in range(min(gamma, w)):
            q, k = query[:, ry::gamma, rx::gamma], key[:, ry::gamma, rx::gamma]
            tiles = _Tiles(q.shape[1], q.shape[2], cfg.tile, cfg.radius)
            bias, dy, dx = tiles.window(query.device)
            q_pad, k_pad = tiles.pad_query(q), tiles.pad(k)
            for ty0 in range(0, tiles.nty, cfg.band_tiles):
                ty1 = min(ty0 + cfg.band_tiles, tiles.nty)
                prob = torch.softmax(torch.bmm(tiles.query(q_pad, ty0, ty1), tiles.neighbourhoods(k_pad, ty0, ty1)) + bias, -1)
                o = torch.stack([(prob * dy).sum(-1), (prob * dx).sum(-1)], -1) * gamma  # [ntiles, t*t, 2]
                rows = slice(ry + ty0 * cfg.tile * gamma, ry + ty1 * cfg.tile * gamma, gamma)
                offsets[:, rows, rx::gamma] = tiles.untile(o, ty0, ty1)
    return offsets


class _RoiFrame:
    """A memory frame read through its ROI: fine window around p + o_p, bilinear, zero padded."""

    def __init__(self, key: torch.Tensor, value: torch.Tensor, offsets: torch.Tensor, radius: int, tile: int) -> None:
        self.r = radius
        self.side = 2 * radius + 2  # integer window that covers the bilinear taps
        # margin for the largest offset, the window and the query's tile padding
        self.pad = int(offsets.abs().max().ceil().item()) + radius + 2 + tile
        p = self.pad
        k_pad, v_pad = F.pad(key, (p, p, p, p)), F.pad(value, (p, p, p, p))
        self.width = k_pad.shape[2]
        self.keys = k_pad.flatten(1).t().contiguous()      # [(h+2p)(w+2p), C]
        self.values = v_pad.flatten(1).t().contiguous()    # [(h+2p)(w+2p), L]
        self.offsets = offsets
        a = torch.arange(self.side, device=key.device)
        self.cells = (a[:, None] * self.width + a[None, :]).reshape(-1)  # [side^2] flat window

    def scores(self, q: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor):
        """Fine-window scores ``[N, (2R+1)^2]`` of query keys ``q`` ``[N, C]`` at pixels (ys, xs),
        with what ``aggregate`` needs."""
        h, w = self.offsets.shape[1:]
        inside = (ys < h) & (xs < w)
        o = self.offsets[:, ys.clamp(max=h - 1), xs.clamp(max=w - 1)] * inside  # [2, N]
        base = o.floor()
        fy, fx = o[0] - base[0], o[1] - base[1]
        by = ys + base[0].long() + self.pad - self.r
        bx = xs + base[1].long() + self.pad - self.r
        idx = (by * self.width + bx)[:, None] + self.cells[None]  # [N, side^2]
        s = torch.bmm(self.keys[idx], q[:, :, None]).view(-1, self.side, self.side)
        n = 2 * self.r + 1
        wy = torch.stack([1 - fy, fy])[:, :, None, None]
        wx = torch.stack([1 - fx, fx])[:, :, None, None]
        fine = (wy[0] * wx[0] * s[:, :n, :n] + wy[0] * wx[1] * s[:, :n, 1:]
                + wy[1] * wx[0] * s[:, 1:, :n] + wy[1] * wx[1] * s[:, 1:, 1:])
        return fine.reshape(-1, n * n), (idx, wy, wx)

    def aggregate(self, e: torch.Tensor, state) -> torch.Tensor:
        """Weighted values ``[N, L]`` for unnormalised weights ``e`` ``[N, (2R+1)^2]``."""
        idx, wy, wx = state
        n = 2 * self.r + 1
        e = e.view(-1, n, n)
        spread = e.new_zeros(e.shape[0], self.side, self.side)
        spread[:, :n, :n] += wy[0] * wx[0] * e
        spread[:, :n, 1:] += wy[0] * wx[1] * e
        spread[:, 1:, :n] += wy[1] * wx[0] * e
        spread[:, 1:, 1:] += wy[1] * wx[1] * e
        return torch.bmm(spread.view(e.shape[0], 1, -1), self.values[idx]).squeeze(1)


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
    query = query.float()
    h, w = query.shape[1:]
    tiles = _Tiles(h, w, cfg.tile, cfg.radius)
    bias, _, _ = tiles.window(query.device)
    local, roi = [], []
    for k, v, d in zip(keys, values, distances):
        k, v = k.float(), v.float()
        if cfg.uses_roi(d):
            roi.append(_RoiFrame(k, v, _coarse_offsets(query, k, cfg.dilation(d), cfg), cfg.radius, cfg.tile))
        else:
            local.append((tiles.pad(k), tiles.pad(v)))
    q_pad = tiles.pad_query(query)
    out = query.new_empty(values[0].shape[0], h, w)
    for ty0 in range(0, tiles.nty, cfg.band_tiles):
        ty1 = min(ty0 + cfg.band_tiles, tiles.nty)
        band = _band(q_pad, tiles, ty0, ty1, bias, local, roi)
        out[:, ty0 * cfg.tile: min(h, ty1 * cfg.tile)] = tiles.untile(band, ty0, ty1)
    return out


def _band(q_pad, tiles: _Tiles, ty0: int, ty1: int, bias, local, roi) -> torch.Tensor:
    """Joint softmax read for the query pixels of tile rows [ty0, ty1): ``[ntiles, t*t, L]``."""
    query = q_pad
    q = tiles.query(q_pad, ty0, ty1)                                   # [nt, tt, C]
    nt, tt, _ = q.shape
    local_s = [torch.bmm(q, tiles.neighbourhoods(k, ty0, ty1)) + bias for k, _ in local]
    roi_s = []
    if roi:
        ys, xs = tiles.pixel_coords(ty0, ty1, query.device)
        qf = q.reshape(nt * tt, -1)
        for frame in roi:
            parts = [frame.scores(qf[i:i + _GATHER_CHUNK], ys[i:i + _GATHER_CHUNK], xs[i:i + _GATHER_CHUNK])
                     for i in range(0, nt * tt, _GATHER_CHUNK)]
            roi_s.append(parts)
    peak = torch.stack([s.amax(-1) for s in local_s], 0).amax(0) if local_s else None
    for parts in roi_s:
        m = torch.cat([s.amax(-1) for s, _ in parts]).view(nt, tt)
        peak = m if peak is None else torch.maximum(peak, m)
    total = query.new_zeros(nt, tt)
    acc = 0
    for s, (_, v) in zip(local_s, local):
        e = torch.exp(s - peak[..., None])
        total += e.sum(-1)
        acc = acc + torch.bmm(e, tiles.neighbourhoods(v, ty0, ty1).transpose(1, 2))
    flat_peak = peak.reshape(-1)
    for frame, parts in zip(roi, roi_s):
        outs, sums, i = [], [], 0
        for s, state in parts:
            e = torch.exp(s - flat_peak[i:i + s.shape[0], None])
            sums.append(e.sum(-1))
            outs.append(frame.aggregate(e, state))
            i += s.shape[0]
        total += torch.cat(sums).view(nt, tt)
        acc = acc + torch.cat(outs).view(nt, tt, -1)
    return acc / total[..., None]
