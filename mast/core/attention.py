"""ROI memory attention, reference semantics in pure PyTorch (docs/DESIGN.md, per-frame step 5;
specified per pixel by :mod:`mast.core.attention_spec`, against which it is tested).

Memory-bounded CPU implementation built from batched matmuls. Each memory map is zero padded and
laid out channels-last; groups of query pixels read one square key neighbourhood from it and score
it with one matmul.

- restricted window (d <= ``cfg.roi_threshold``, 15 by default): the query is cut into ``T x T`` tiles; a tile reads the square
  grown by R and a constant mask keeps each pixel's own ``(2R+1)^2`` window. Zero padding makes
  out-of-frame candidates score 0 with value 0, as the published code does.
- ROI localisation (d > ``cfg.roi_threshold``): the coarse dilated search is the restricted window on the
  ``gamma x gamma`` phase grids of the frame (query p = gamma*q + r reads keys gamma*(q + k) + r);
  its soft-argmax gives a fractional offset o_p per pixel. The fine window around p + o_p is
  read from the integer ``(2R+2)^2`` window at p + floor(o_p), whose scores are blended with the
  bilinear weights of frac(o_p); the softmax weights are spread back with the same weights onto
  the values: exactly bilinear sampling of keys and values, zeros outside the frame. Pixels are
  grouped by where their window lands (``T x T`` buckets of p + floor(o_p), at most ``T*T``
  pixels a group), not by where they sit, so each group's key square stays ``(T+2R+1)^2`` however
  much the offsets of neighbouring pixels differ.

One softmax runs over the candidates of all memory frames together: each frame yields per pixel
its peak score and its exp-weighted values (with the weights' sum as an extra channel), and the
frames are merged by rescaling to the common peak (the log-sum-exp merge). Peak extra memory is
that of one band of ``band_tiles`` tile rows (or as many ROI groups), whatever the frame size.

On CPU without autograd, :func:`roi_memory_attention` runs the fused C kernel of
:mod:`mast.core.attention_native` instead (one pass per pixel for scores, softmax and values; the
same semantics, tested against the same specification) when it can be built here; the PyTorch
implementation above serves autograd, float64, CUDA tensors and hosts without a C compiler.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch
from torch.nn import functional as F

from mast.core import attention_native as native
from mast.core.config import EXP_FLOOR, AttentionConfig
from mast.core.tiling import Tiles

# "auto": the fused C kernel where it applies and builds (CPU, no autograd), else PyTorch;
# "fused": the C kernel or an error; "torch": the PyTorch implementation of this module.
Kernel = Literal["auto", "fused", "torch"]


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
        c = self.rows.shape[1]
        runs = self.rows.as_strided((self.rows.shape[0] - side + 1, side * c), (c, 1))  # side pixels from each
        start = (top + self.pad) * self.width + (left + self.pad)
        lines = start[:, None] + torch.arange(side, device=top.device)[None] * self.width
        return runs[lines].view(top.shape[0], side * side, c)


# Shifted scores are floored at EXP_FLOOR (see there): on CPU, exp() below about -87 takes a slow
# path (measured 35 ns instead of 0.5 ns per element, -inf included).

# Per pixel of one memory frame, or of several merged: (peak [N, 1], acc [N, L + 1]) where acc
# holds sum exp(score - peak) * value over the candidates and, in its last column, sum exp(score - peak).
_Part = tuple[torch.Tensor, torch.Tensor]


def _softmax_terms(s: torch.Tensor, dims: int | tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Peak of ``s`` over ``dims`` (kept) and exp(s - peak), floored; in place unless autograd needs ``s``."""
    peak = s.amax(dims, keepdim=True)
    if s.requires_grad:
        return peak, torch.exp((s - peak).clamp(min=EXP_FLOOR))
    return peak, s.sub_(peak).clamp_(min=EXP_FLOOR).exp_()


def _merge(a: _Part | None, b: _Part) -> _Part:
    """One softmax over the candidates of both parts: rescale each to the common peak."""
    if a is None:
        return b
    peak = torch.maximum(a[0], b[0])
    scale_a = (a[0] - peak).clamp(min=EXP_FLOOR).exp()
    scale_b = (b[0] - peak).clamp(min=EXP_FLOOR).exp()
    return peak, a[1] * scale_a + b[1] * scale_b


def _local_squares(x: _PaddedMap, tiles: Tiles, ty0: int, ty1: int) -> torch.Tensor:
    """The ``(t+2r)^2`` neighbourhoods of the tiles of rows [ty0, ty1): ``[nt, (t+2r)^2, C]``."""
    t, r = tiles.t, tiles.r
    return x.tile_squares(ty0 * t - r, -r, ty1 - ty0, tiles.ntx, t, t + 2 * r)


def _local_scores(q: torch.Tensor, key: _PaddedMap, tiles: Tiles, ty0: int, ty1: int, bias) -> torch.Tensor:
    """Restricted-window scores of tile queries ``q`` ``[nt, tt, C]``: ``[nt, tt, (t+2r)^2]``
    (-inf outside each pixel's window)."""
    return torch.baddbmm(bias.to(q.dtype), q, _local_squares(key, tiles, ty0, ty1).transpose(1, 2))


def _local_read(q_pad: torch.Tensor, key: torch.Tensor, value: torch.Tensor, tiles: Tiles,
                band_tiles: int) -> _Part:
    """Restricted-window read of one memory frame for the ``pad_query`` map ``q_pad``."""
    pad = tiles.r + tiles.t
    k_map, v_map = _PaddedMap(key, pad), _PaddedMap(value, pad, ones=True)
    bias = tiles.window_mask(q_pad.device)
    peak = q_pad.new_empty(tiles.h, tiles.w, 1)
    acc = q_pad.new_empty(tiles.h, tiles.w, v_map.rows.shape[1])
    for ty0, ty1 in tiles.bands(band_tiles):
        s = _local_scores(tiles.query(q_pad, ty0, ty1), k_map, tiles, ty0, ty1, bias)
        p, e = _softmax_terms(s, -1)
        rows = slice(ty0 * tiles.t, min(tiles.h, ty1 * tiles.t))
        peak[rows] = tiles.untile(p, ty0, ty1)
        acc[rows] = tiles.untile(torch.bmm(e, _local_squares(v_map, tiles, ty0, ty1)), ty0, ty1)
    return peak.view(-1, 1), acc.view(tiles.h * tiles.w, -1)


def _phases(x: torch.Tensor, gamma: int) -> torch.Tensor:
    """``[C, h, w]`` -> its ``gamma^2`` dilation phases ``[gamma^2, C, ceil(h/gamma), ceil(w/gamma)]``:
    phase ``ry * gamma + rx`` holds pixels ``(ry + gamma i, rx + gamma j)``, zeros beyond the frame."""
    c, h, w = x.shape
    hp, wp = -(-h // gamma), -(-w // gamma)
    x = F.pad(x, (0, wp * gamma - w, 0, hp * gamma - h)).view(c, hp, gamma, wp, gamma)
    return x.permute(2, 4, 0, 1, 3).reshape(gamma * gamma, c, hp, wp)


def _coarse_offsets(query: torch.Tensor, key: torch.Tensor, gamma: int, cfg: AttentionConfig) -> torch.Tensor:
    """ROI centre offsets ``[2, h, w]`` (dy, dx, feature pixels) of one memory frame:
    o_p = gamma * sum_k softmax_k(<Q_p, K[p + gamma k]>) k, k in [-R, R]^2 (0 out of frame).

    The dilated window of p is the restricted window of p's dilation phase (the pixels congruent to
    p modulo gamma), zero padded: the phases are tiled in batches."""
    h, w = query.shape[1:]
    t, r = cfg.tile, cfg.radius
    qs, ks = _phases(query, gamma), _phases(key, gamma)                  # [B, C, hp, wp]
    tiles = Tiles(qs.shape[2], qs.shape[3], t, r)
    bias = tiles.window_mask(query.device).to(query.dtype)
    dy, dx = (d.to(query.dtype) for d in tiles.window_offsets(query.device))   # [tt, (t+2r)^2] each
    # as many phases at once as make up the tiles of one band of the full map (same peak memory)
    per_batch = max(1, cfg.band_tiles * -(-w // t) // (tiles.nty * tiles.ntx))
    out = []
    for b0 in range(0, qs.shape[0], per_batch):
        q = tiles.pad_query(qs[b0: b0 + per_batch])                     # [b, C, nty*t, ntx*t]
        s = torch.baddbmm(bias, _phase_tiles(q, t), _phase_squares(ks[b0: b0 + per_batch], tiles).transpose(1, 2))
        _, e = _softmax_terms(s, -1)                                     # [b*nt, tt, (t+2r)^2]
        # normalised before the moments: sums of terms <= R (a matmul of e with (dy, dx, 1) is
        # cheaper but ~10x less accurate on ill-conditioned pixels, whose offsets then move 1e-4)
        prob = e / e.sum(-1, keepdim=True)
        out.append(torch.stack([(prob * dy).sum(-1), (prob * dx).sum(-1)], -1) * gamma)
    o = torch.cat(out).view(-1, tiles.nty, tiles.ntx, t, t, 2).permute(0, 1, 3, 2, 4, 5)
    o = o.reshape(gamma, gamma, tiles.nty * t, tiles.ntx * t, 2)[:, :, : tiles.h, : tiles.w]
    return o.permute(4, 2, 0, 3, 1).reshape(2, tiles.h * gamma, tiles.w * gamma)[:, :h, :w]


def _phase_tiles(q_pad: torch.Tensor, t: int) -> torch.Tensor:
    """Tile queries of a batch of whole-tile maps ``[B, C, nty*t, ntx*t]``: ``[B*nty*ntx, t*t, C]``."""
    b, c, hh, ww = q_pad.shape
    x = q_pad.view(b, c, hh // t, t, ww // t, t).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b * (hh // t) * (ww // t), t * t, c)


def _phase_squares(k: torch.Tensor, tiles: Tiles) -> torch.Tensor:
    """The ``(t+2r)^2`` key squares of every tile of a batch of maps ``[B, C, h, w]`` (zero padded):
    ``[B*nty*ntx, (t+2r)^2, C]``."""
    t, r = tiles.t, tiles.r
    side = t + 2 * r
    pad_y, pad_x = tiles.nty * t - tiles.h + r, tiles.ntx * t - tiles.w + r
    x = F.pad(k, (r, pad_x, r, pad_y)).permute(0, 2, 3, 1).contiguous()       # [B, H', W', C]
    b, hh, ww, c = x.shape
    view = x.as_strided((b, tiles.nty, tiles.ntx, side, side, c),
                        (hh * ww * c, t * ww * c, t * c, ww * c, c, 1))
    return view.reshape(b * tiles.nty * tiles.ntx, side * side, c)


@dataclass(frozen=True)
class _Groups:
    """Query pixels grouped by where their ROI window lands.

    index: ``[G, P]`` pixel indices (row-major, ``N`` = an empty slot) of each group.
    top, left: ``[G]`` top-left pixel of each group's ``side x side`` key square.
    rel: ``[2, N + 1]`` each pixel's integer window corner inside its group's square (0 for the
        empty slot).
    """

    index: torch.Tensor
    top: torch.Tensor
    left: torch.Tensor
    rel: torch.Tensor


def _group_by_target(target: torch.Tensor, size: int, cap: int, r: int) -> _Groups:
    """Bucket pixels by ``target // size`` (``target`` ``[2, N]``: integer window centres) and cut
    each bucket into groups of at most ``cap`` pixels."""
    n = target.shape[1]
    cell = torch.div(target, size, rounding_mode="floor")
    lo = cell.amin(1)
    cols = int(cell[1].max() - lo[1]) + 1
    bucket = (cell[0] - lo[0]) * cols + (cell[1] - lo[1])
    order = torch.argsort(bucket, stable=True)
    counts = torch.bincount(bucket)
    n_groups = -(-counts // cap)
    first_group = torch.cumsum(n_groups, 0) - n_groups
    first_pixel = torch.cumsum(counts, 0) - counts
    sorted_bucket = bucket[order]
    pos = torch.arange(n, device=target.device) - first_pixel[sorted_bucket]
    index = torch.full((int(n_groups.sum()), cap), n, dtype=torch.long, device=target.device)
    index[first_group[sorted_bucket] + pos // cap, pos % cap] = order
    group_bucket = torch.repeat_interleave(torch.arange(counts.numel(), device=target.device), n_groups)
    top = (lo[0] + group_bucket // cols) * size - r
    left = (lo[1] + group_bucket % cols) * size - r
    rel = F.pad(target - cell * size, (0, 1))
    return _Groups(index, top, left, rel)


def _corner_squares(v_map: _PaddedMap, top: torch.Tensor, left: torch.Tensor, side: int) -> torch.Tensor:
    """Values of each group's square at the four bilinear corners of the blended grid:
    ``[G, (side-1)^2, 4 * C]`` (corner (0,0), (0,1), (1,0), (1,1), each C channels)."""
    sq = v_map.squares(top, left, side).view(top.shape[0], side, side, -1)
    return torch.cat([sq[:, :-1, :-1], sq[:, :-1, 1:], sq[:, 1:, :-1], sq[:, 1:, 1:]], -1).flatten(1, 2)


def _roi_read(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, offsets: torch.Tensor,
              cfg: AttentionConfig, max_groups: int) -> _Part:
    """ROI read of one memory frame: each pixel's fine window around p + o_p (``offsets``
    ``[2, h, w]``), bilinear, zero padded.

    A group's scores against its key square are blended with each pixel's bilinear weights into a
    ``(side-1)^2`` grid of fractional positions, where a mask keeps the pixel's ``(2R+1)^2``
    window. The values are the same blend of the square's four corner-shifted value grids, so the
    weighted values are one matmul against those grids and a 4-term mix per pixel."""
    h, w = query.shape[1:]
    r, size = cfg.radius, cfg.tile
    side = size + 2 * r + 1
    base = offsets.floor()
    iy, ix = torch.meshgrid(torch.arange(h, device=query.device), torch.arange(w, device=query.device), indexing="ij")
    target = base.long() + torch.stack([iy, ix])                      # [2, h, w] p + floor(o_p)
    groups = _group_by_target(target.flatten(1), size, size * size, r)
    pad = int(base.abs().max()) + r + size + 2
    k_map, v_map = _PaddedMap(key, pad), _PaddedMap(value, pad, ones=True)
    # the window as a row and a column bias (0 inside, -inf outside) per window corner in the square
    cells = torch.arange(side - 1, device=query.device)
    first = torch.arange(size, device=query.device)[:, None]
    band = torch.where((cells >= first) & (cells <= first + 2 * r), 0.0, float("-inf")).to(query.dtype)
    row_bias, col_bias = band[groups.rel[0]], band[groups.rel[1]]      # [N + 1, side-1] each
    q_rows = F.pad(query.flatten(1).t(), (0, 0, 0, 1))                 # [N + 1, C], empty slot last
    frac = F.pad((offsets - base).flatten(1), (0, 1))                  # [2, N + 1]
    peak = query.new_empty(h * w + 1, 1)
    acc = query.new_empty(h * w + 1, v_map.rows.shape[1])
    # groups by pixel count, fullest first: each batch is trimmed to its fullest group's count
    fill = (groups.index < h * w).sum(1)
    by_fill = torch.argsort(fill, descending=True, stable=True)
    for g0 in range(0, by_fill.shape[0], max_groups):
        sel = by_fill[g0: g0 + max_groups]
        idx = groups.index[sel, : int(fill[sel[0]])]                   # [G, P]
        top, left = groups.top[sel], groups.left[sel]
        fy, fx = frac[0, idx][..., None, None], frac[1, idx][..., None, None]   # [G, P, 1, 1]
        s = torch.bmm(q_rows[idx], k_map.squares(top, left, side).transpose(1, 2))
        s = s.view(*idx.shape, side, side)
        s = torch.lerp(s[..., :-1], s[..., 1:], fx)
        s = torch.lerp(s[..., :-1, :], s[..., 1:, :], fy)             # [G, P, side-1, side-1]
        s.add_(row_bias[idx][..., :, None]).add_(col_bias[idx][..., None, :])
        p, e = _softmax_terms(s.flatten(2), -1)
        mix = torch.bmm(e, _corner_squares(v_map, top, left, side)).unflatten(-1, (4, -1))
        fy, fx = fy[..., 0], fx[..., 0]                                # [G, P, 1]
        weights = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], 2)
        acc[idx] = (mix * weights).sum(2)
        peak[idx] = p
    return peak[:-1], acc[:-1]


@lru_cache(maxsize=1)
def fused_builds() -> bool:
    """Whether the fused kernel builds here (asked once; warns with the reason when it does not)."""
    reason = native.available()
    if reason is not None:
        warnings.warn(f"ROI attention: using the slower PyTorch implementation ({reason})", stacklevel=3)
    return reason is None


def roi_memory_attention(
    query: torch.Tensor,
    keys: Sequence[torch.Tensor],
    values: Sequence[torch.Tensor],
    distances: Sequence[int],
    cfg: AttentionConfig = AttentionConfig(),
    kernel: Kernel = "auto",
) -> torch.Tensor:
    """Label distribution of the query frame read from memory frames.

    query:     ``[C, h, w]`` key of the frame being predicted.
    keys:      M tensors ``[C, h, w]``, the memory frames' keys.
    values:    M tensors ``[L, h, w]``, their label maps (one-hot at the strided centres).
    distances: M frame distances d = t - m >= 1 (d > cfg.roi_threshold: ROI localisation).
    Returns ``[L, h, w]`` float32: the softmax-weighted sum of the candidates' values, one softmax
    over the (2R+1)^2 candidates of every memory frame together.
    kernel:    which implementation (:data:`Kernel`); "fused" raises DependencyError where the C
               kernel cannot be built and ValueError for inputs outside it (``native.supports``).
    """
    if not (len(keys) == len(values) == len(distances)) or not keys:
        raise ValueError("keys, values and distances need the same, non-zero length")
    if kernel == "fused" or (kernel == "auto" and native.supports(query, keys, values, cfg) and fused_builds()):
        return native.native_memory_read(query, keys, values, distances, cfg)
    query = query if query.dtype == torch.float64 else query.float()
    h, w = query.shape[1:]
    tiles = Tiles(h, w, cfg.tile, cfg.radius)
    q_pad = tiles.pad_query(query)
    total: _Part | None = None
    for k, v, d in zip(keys, values, distances):
        k, v = k.to(query.dtype), v.to(query.dtype)
        if cfg.uses_roi(d):
            offsets = _coarse_offsets(query, k, cfg.dilation(d), cfg)
            part = _roi_read(query, k, v, offsets, cfg, cfg.band_tiles * tiles.ntx)
        else:
            part = _local_read(q_pad, k, v, tiles, cfg.band_tiles)
        total = _merge(total, part)
    acc = total[1]
    return (acc[:, :-1] / acc[:, -1:]).t().reshape(-1, h, w)
