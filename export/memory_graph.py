"""The ROI memory attention as an exportable torch module: what ``memory_read.onnx`` computes.

Same semantics as :func:`mast.core.attention.roi_memory_attention` (DESIGN.md step 5), over the whole
fixed-size bank, for one query frame; only standard ONNX operators after tracing.

Inputs (fixed shapes chosen at export, :class:`ReadSpec`):

- ``query``     ``[1, C, h, w]`` float32: the encoder's output for the frame being predicted.
- ``keys``      ``[S, C, h, w]`` float32: the bank's keys, one per slot.
- ``labels``    ``[S, h, w]`` int64: each slot's label-channel map (0 .. max_labels-1, strided centres).
- ``distances`` ``[S]`` int64: frame distance t - m of each slot to read; ``<= 0``: not read (masked out:
  its candidates score -inf).

Output ``probs`` ``[max_labels, h, w]`` float32; channels above the tracker's label count are 0.

How it stays exportable and memory-bounded:

- **Slot selection.** ``TopK(distances, reads)`` picks the (at most ``reads``) slots read this frame,
  farthest first, and gathers their keys and labels; unread picks have distance 0 and are masked.
  Only the first ``roi_reads`` picks can be far enough for ROI localisation (the schedule allows no
  more: :meth:`ReadSpec.for_config`), so only they carry the ROI machinery; the others are always
  restricted windows.
- **Restricted window** (d <= 15): the reference's ``T x T`` query tiles against their ``(T+2R)^2``
  zero-padded key neighbourhood, one batched MatMul per band of tile rows with the window mask.
- **ROI localisation** (d > 15): the dilation gamma = min(4, d // 15 + 1) is data: the coarse search
  runs on a *phase mosaic* of the frame, the ``gamma x gamma`` phase grids laid side by side with
  ``R`` zero columns/rows between them (a Gather with a per-gamma index table made at export), so
  the dilated search is the restricted-window search on one fixed-size map (about 1.5x the frame's
  area at R = 12) whatever gamma is. Its soft-argmax gives o_p; a slot read at d <= 15 takes o = 0,
  for which the fine window below *is* the restricted window (bilinear weights (1, 0, 0, 0)).
- **Fine window**: as the reference, each tile's queries are matched against the key square that
  holds every pixel's integer ``(2R+2)^2`` window at p + floor(o_p); its side is
  ``T + 2R + 2 + spread`` with the band's spread of floor(o_p) computed in the graph (a dynamic
  ``Range``), then GatherElements + bilinear blend of scores, ScatterElements of the weights back
  onto the square, MatMul with the value square. Keys are padded by ``max_dilation * R + R + T + 2``
  so every square is inside the map.
- One softmax over all candidates of all read slots (max subtracted per query pixel, per band).
  Peak extra memory is that of one band: ~100 MB at 480x854 for offsets of a few pixels; the worst
  case (offsets spread over +-48 px inside one band) is bounded by ``band_tiles`` (see BENCHMARKS.md).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mast.core.attention import _PaddedMap, _Tiles
from mast.core.config import AttentionConfig, MemoryConfig

MIN_DILATION = 2


@dataclass(frozen=True)
class ReadSpec:
    """Fixed shapes of ``memory_read.onnx``.

    height, width: feature map h, w (frame size / stride, rounded up).
    key_dim:       key channels C.
    n_slots:       bank slots S.
    reads:         most slots read for one frame (TopK size).
    roi_reads:     most of them that can be past the ROI threshold.
    max_labels:    label channels L (background + max objects).
    attention:     radius, thresholds, tile and band sizes.
    """

    height: int
    width: int
    key_dim: int = 64
    n_slots: int = 7
    reads: int = 5
    roi_reads: int = 2
    max_labels: int = 16
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    @classmethod
    def for_config(cls, feature_size: tuple[int, int], memory: MemoryConfig, attention: AttentionConfig,
                   max_labels: int, key_dim: int = 64) -> ReadSpec:
        """The spec the schedule needs: every long-term frame and every short-term distance can be
        read at once; long-term frames and short-term distances past the threshold can be ROI reads."""
        reads = len(memory.long_term) + len(memory.short_term)
        roi = len(memory.long_term) + sum(attention.uses_roi(s) for s in memory.short_term)
        return cls(feature_size[0], feature_size[1], key_dim, memory.n_slots, min(reads, memory.n_slots),
                   min(roi, reads, memory.n_slots), max_labels, attention)


def mosaic_tables(h: int, w: int, r: int, max_dilation: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Phase mosaics for gamma = 2 .. max_dilation on one common ``Hm x Wm`` canvas.

    Returns ``src`` ``[G, Hm*Wm]``: the frame pixel (flat, ``h*w`` = a zero pixel) shown at each
    mosaic cell; ``pos`` ``[G, h*w]``: the mosaic cell of each frame pixel; and ``(Hm, Wm)``.
    Phase (ry, rx) (frame pixels gamma*i + ry, gamma*j + rx) is the block at rows ry*(bh + r) + i,
    columns rx*(bw + r) + j, bh = ceil(h / gamma): ``r`` zero rows/columns between blocks keep every
    radius-r window inside its own phase grid."""
    gammas = range(MIN_DILATION, max(max_dilation, MIN_DILATION) + 1)
    hm = max(g * math.ceil(h / g) + (g - 1) * r for g in gammas)
    wm = max(g * math.ceil(w / g) + (g - 1) * r for g in gammas)
    src = np.full((len(gammas), hm, wm), h * w, np.int64)
    pos = np.zeros((len(gammas), h * w), np.int64)
    for gi, g in enumerate(gammas):
        bh, bw = math.ceil(h / g), math.ceil(w / g)
        for ry in range(g):
            for rx in range(g):
                fy, fx = np.arange(bh) * g + ry, np.arange(bw) * g + rx
                my, mx = ry * (bh + r) + np.arange(bh), rx * (bw + r) + np.arange(bw)
                ok_y, ok_x = fy < h, fx < w
                frame = (fy[ok_y, None] * w + fx[None, ok_x])
                src[gi][np.ix_(my[ok_y], mx[ok_x])] = frame
                pos[gi][frame.reshape(-1)] = (my[ok_y, None] * wm + mx[None, ok_x]).reshape(-1)
    return src.reshape(len(gammas), -1), pos, (hm, wm)


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column index of each cell of an ``n x n`` grid, flattened ``[n*n]`` each."""
    a = torch.arange(n)
    y, x = torch.meshgrid(a, a, indexing="ij")
    return y.reshape(-1), x.reshape(-1)


def _local_scores(q: torch.Tensor, key: _PaddedMap, tiles: _Tiles, top, left, bias) -> torch.Tensor:
    """Restricted-window scores of tile queries ``q`` ``[nt, tt, C]``: ``[nt, tt, (t+2r)^2]``, -inf
    outside each pixel's window, 0 for out-of-frame cells."""
    nb = key.squares(top - tiles.r, left - tiles.r, tiles.t + 2 * tiles.r)
    return torch.matmul(q, nb.transpose(1, 2)) + bias


class _FineFrame:
    """One ROI-capable read slot: the fine window around p + o_p of its keys and values (bilinear,
    zero padded), for tile queries of any band."""

    def __init__(self, key, value, offsets, tiles: _Tiles, pad: int, mask, pix, win) -> None:
        self.tiles, self.mask, self.pix, self.win = tiles, mask, pix, win
        base = torch.floor(offsets)
        self.frac = tiles.pad_query(offsets - base)                    # [2, Hq, Wq] in [0, 1)
        self.base = tiles.pad_query(base).long()                       # [2, Hq, Wq]
        self.keys, self.values = _PaddedMap(key, pad), _PaddedMap(value, pad)

    def scores(self, q: torch.Tensor, ty0: int, ty1: int, top0, left0):
        """Fine scores ``[nt, tt, (2R+1)^2]`` (masked slot: -inf) and the state for ``aggregate``."""
        t, r = self.tiles.t, self.tiles.r
        by = self.tiles.query(self.base[:1], ty0, ty1)[..., 0]          # [nt, tt]
        bx = self.tiles.query(self.base[1:], ty0, ty1)[..., 0]
        lo_y, lo_x = by.amin(1, keepdim=True), bx.amin(1, keepdim=True)
        spread = torch.maximum((by - lo_y).amax(), (bx - lo_x).amax())
        side = spread + (t + 2 * r + 2)                                 # 0-d, data-dependent
        a = torch.arange(side)
        cells = (a[:, None] * self.keys.width + a[None, :]).reshape(-1)  # [side^2]
        top, left = top0 + lo_y[:, 0] - r, left0 + lo_x[:, 0] - r
        start = (top + self.keys.pad) * self.keys.width + (left + self.keys.pad)
        s = torch.matmul(q, self.keys.rows[start[:, None] + cells[None]].transpose(1, 2))  # [nt, tt, side^2]
        wy = self.pix[0][None, :, None] + (by - lo_y)[..., None] + self.win[0][None, None]
        wx = self.pix[1][None, :, None] + (bx - lo_x)[..., None] + self.win[1][None, None]
        cell = wy * side + wx                                           # [nt, tt, (2R+2)^2]
        n, m = 2 * r + 1, 2 * r + 2
        g = torch.gather(s, 2, cell).reshape(cell.shape[0], cell.shape[1], m, m)
        fy = self.tiles.query(self.frac[:1], ty0, ty1)[..., None]      # [nt, tt, 1, 1]
        fx = self.tiles.query(self.frac[1:], ty0, ty1)[..., None]
        wts = ((1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx)
        fine = (wts[0] * g[..., :n, :n] + wts[1] * g[..., :n, 1:]
                + wts[2] * g[..., 1:, :n] + wts[3] * g[..., 1:, 1:])
        return fine.flatten(2) + self.mask, (s, cell, wts, start, cells)

    def aggregate(self, e: torch.Tensor, state) -> torch.Tensor:
        """Weighted values ``[nt, tt, L]`` for unnormalised weights ``e`` ``[nt, tt, (2R+1)^2]``:
        each weight spread bilinearly onto the 4 integer cells it was read from."""
        s, cell, wts, start, cells = state
        n = 2 * self.tiles.r + 1
        e = e.reshape(e.shape[0], e.shape[1], n, n)
        spread = (F.pad(wts[0] * e, (0, 1, 0, 1)) + F.pad(wts[1] * e, (1, 0, 0, 1))
                  + F.pad(wts[2] * e, (0, 1, 1, 0)) + F.pad(wts[3] * e, (1, 0, 1, 0)))
        full = torch.zeros_like(s).scatter(2, cell, spread.flatten(2))  # [nt, tt, side^2]
        return torch.matmul(full, self.values.rows[start[:, None] + cells[None]])


