"""The ROI memory attention as exportable torch modules: the pieces of ``memory_read.onnx``.

Same semantics as :func:`mast.core.attention.roi_memory_attention` (DESIGN.md step 5), for one query
frame over the whole fixed-size bank; standard ONNX operators only.

``memory_read.onnx`` (assembled by :mod:`mast.export.compose`) takes, with shapes fixed at export
(:class:`ReadSpec`):

- ``query``     ``[1, C, h, w]`` float32: the encoder's output for the frame being predicted.
- ``keys``      ``[S, C, h, w]`` float32: the bank's keys, one per slot.
- ``labels``    ``[S, h, w]`` int64: each slot's label-channel map (0 .. max_labels-1, strided centres).
- ``distances`` ``[S]`` int64: frame distance t - m of each slot to read; ``<= 0``: not read.

and returns ``probs`` ``[max_labels, h, w]`` float32 (channels above the tracker's label count are 0).

How it is computed (exportable, memory-bounded):

- **Which slots.** ``TopK(distances, reads)`` lists the (at most ``reads``) slots read this frame.
  Each pick is folded into a running softmax state (per query pixel: max score, sum of weights,
  weighted values) by an ``If`` node: distance <= 0 leaves the state as it is (an empty slot costs
  nothing), d <= 15 runs :class:`SlotRead` ``roi=False``, d > 15 runs ``roi=True``. Folding slot by
  slot (online softmax) gives the one softmax over all candidates of all slots.
- **Restricted window** (d <= 15): the reference's ``T x T`` query tiles against their
  ``(T+2R)^2`` zero-padded key neighbourhood, one batched MatMul per band of tile rows with the
  window mask (-inf outside each pixel's window).
- **ROI localisation** (d > 15): the dilation gamma = min(4, d // 15 + 1) is data, so the coarse
  search runs on a *phase mosaic*: the ``gamma x gamma`` phase grids of the frame side by side with
  ``R`` zero rows/columns between them, gathered with a per-gamma index table made at export. The
  dilated search is then the restricted-window search on one fixed-size map (about 1.5x the frame's
  area at R = 12) whatever gamma is. Its soft-argmax gives o_p. The fine window is read as the
  reference does: each tile's queries against the key square holding every pixel's integer
  ``(2R+2)^2`` window at p + floor(o_p) (side ``T + 2R + 2 + spread``, the band's spread of
  floor(o_p) computed in the graph: a dynamic ``Range``), GatherElements and a bilinear blend of the
  scores, the weights spread back with the same bilinear weights (ScatterElements) and multiplied
  with the value square. Keys are padded by ``max_dilation * R + R + T + 2`` so every square fits.
- Peak extra memory is that of one band of one slot (see BENCHMARKS.md for the figures).
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
NO_SCORE = -3.0e38  # initial running max: finite, so that exp(NO_SCORE - NO_SCORE) stays defined


@dataclass(frozen=True)
class ReadSpec:
    """Fixed shapes of ``memory_read.onnx``.

    height, width: feature map h, w (frame size / stride, rounded up).
    key_dim:       key channels C.
    n_slots:       bank slots S.
    reads:         most slots read for one frame (TopK size).
    max_labels:    label channels L (background + max objects).
    attention:     radius, thresholds, tile and band sizes.
    """

    height: int
    width: int
    key_dim: int = 64
    n_slots: int = 7
    reads: int = 5
    max_labels: int = 16
    attention: AttentionConfig = field(default_factory=AttentionConfig)

    @classmethod
    def for_config(cls, feature_size: tuple[int, int], memory: MemoryConfig, attention: AttentionConfig,
                   max_labels: int, key_dim: int = 64) -> ReadSpec:
        """The spec a schedule needs: every long-term frame and every short-term distance read at once."""
        reads = min(len(memory.long_term) + len(memory.short_term), memory.n_slots)
        return cls(feature_size[0], feature_size[1], key_dim, memory.n_slots, reads, max_labels, attention)

    @property
    def tiles(self) -> _Tiles:
        return _Tiles(self.height, self.width, self.attention.tile, self.attention.radius)

    @property
    def state_shape(self) -> tuple[int, int]:
        """Running-softmax state layout: (tiles of the frame, pixels per tile)."""
        t = self.tiles
        return t.nty * t.ntx, t.t * t.t


def mosaic_tables(h: int, w: int, r: int, max_dilation: int) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """Phase mosaics for gamma = 2 .. max_dilation on one common ``Hm x Wm`` canvas.

    Returns ``src`` ``[G, Hm*Wm]``: the frame pixel (flat; ``h*w`` = a zero pixel) shown at each
    mosaic cell; ``pos`` ``[G, h*w]``: the mosaic cell of each frame pixel; and ``(Hm, Wm)``.
    Phase (ry, rx) (frame pixels gamma*i + ry, gamma*j + rx) is the block at rows ry*(bh + r) + i,
    columns rx*(bw + r) + j, bh = ceil(h / gamma): ``r`` zero rows/columns between blocks keep every
    radius-r window inside its own phase grid, out-of-grid cells reading zeros as the reference's
    zero padding does."""
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
                frame = fy[ok_y, None] * w + fx[None, ok_x]
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
    """A slot read through its ROI: the fine window around p + o_p of its keys and values (bilinear,
    zero padded), for the tile queries of any band."""

    def __init__(self, key, value, offsets, tiles: _Tiles, pad: int, pix, win) -> None:
        self.tiles, self.pix, self.win = tiles, pix, win
        base = torch.floor(offsets)
        self.frac = tiles.pad_query(offsets - base)                    # [2, Hq, Wq] in [0, 1)
        self.base = tiles.pad_query(base).long()                       # [2, Hq, Wq]
        self.keys, self.values = _PaddedMap(key, pad), _PaddedMap(value, pad)

    def scores(self, q: torch.Tensor, ty0: int, ty1: int, top0, left0):
        """Fine scores ``[nt, tt, (2R+1)^2]`` of tile queries ``q`` ``[nt, tt, C]`` and the state
        ``aggregate`` needs."""
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
        rows = start[:, None] + cells[None]                             # [nt, side^2]
        s = torch.matmul(q, self.keys.rows[rows].transpose(1, 2))       # [nt, tt, side^2]
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
        return fine.flatten(2), (s, cell, wts, rows)

    def aggregate(self, e: torch.Tensor, state) -> torch.Tensor:
        """Weighted values ``[nt, tt, L]`` for unnormalised weights ``e`` ``[nt, tt, (2R+1)^2]``:
        each weight spread bilinearly onto the 4 integer cells it was read from."""
        s, cell, wts, rows = state
        n = 2 * self.tiles.r + 1
        e = e.reshape(e.shape[0], e.shape[1], n, n)
        spread = (F.pad(wts[0] * e, (0, 1, 0, 1)) + F.pad(wts[1] * e, (1, 0, 0, 1))
                  + F.pad(wts[2] * e, (0, 1, 1, 0)) + F.pad(wts[3] * e, (1, 0, 1, 0)))
        full = torch.zeros_like(s).scatter(2, cell, spread.flatten(2))  # [nt, tt, side^2]
        return torch.matmul(full, self.values.rows[rows])


class SlotRead(nn.Module):
    """One read slot folded into the running softmax state (the body of one ``If`` branch).

    Inputs: ``query`` ``[1, C, h, w]``, ``keys`` ``[S, C, h, w]``, ``labels`` ``[S, h, w]`` int64,
    ``slot`` and ``distance`` 0-d int64, and the state ``peak`` ``[NT, tt]`` (running max score),
    ``total`` ``[NT, tt]`` (sum of exp(score - peak)), ``acc`` ``[NT, tt, L]`` (weighted values), NT
    tiles of tt pixels (:attr:`ReadSpec.state_shape`). Returns the updated state.
    ``roi``: read through ROI localisation (the caller picks it for d > roi_threshold).
    """

    def __init__(self, spec: ReadSpec, roi: bool) -> None:
        super().__init__()
        self.spec, self.roi = spec, roi
        cfg = spec.attention
        self.tiles = spec.tiles
        bias, dy, dx = self.tiles.window_mask(torch.device("cpu"))
        self.register_buffer("bias", bias, persistent=False)
        self.register_buffer("dy", dy, persistent=False)
        self.register_buffer("dx", dx, persistent=False)
        if roi:
            src, pos, (hm, wm) = mosaic_tables(spec.height, spec.width, cfg.radius, cfg.max_dilation)
            self.coarse_tiles = _Tiles(hm, wm, cfg.tile, cfg.radius)
            self.register_buffer("mosaic_src", torch.from_numpy(src), persistent=False)
            self.register_buffer("mosaic_pos", torch.from_numpy(pos), persistent=False)
            self.fine_pad = max(cfg.max_dilation, 1) * cfg.radius + cfg.radius + cfg.tile + 2
            self.pix, self.win = _grid(cfg.tile), _grid(2 * cfg.radius + 2)

    def forward(self, query, keys, labels, slot, distance, peak, total, acc):
        spec, tiles = self.spec, self.tiles
        q = query[0]
        key = keys[slot].to(q.dtype)
        channels = torch.arange(spec.max_labels, device=labels.device)
        value = (labels[slot][None] == channels[:, None, None]).to(q.dtype)    # [L, h, w]
        if self.roi:
            offsets = self._coarse_offsets(q, key, distance)
            frame = _FineFrame(key, value, offsets, tiles, self.fine_pad, self.pix, self.win)
            band_scores = self._fine_band(frame)
        else:
            pad = spec.attention.radius + spec.attention.tile
            band_scores = self._local_band(_PaddedMap(key, pad), _PaddedMap(value, pad))
        q_pad = tiles.pad_query(q)
        out = []
        for ty0, ty1 in tiles.bands(spec.attention.band_tiles):
            a, b = ty0 * tiles.ntx, ty1 * tiles.ntx
            s, weigh = band_scores(tiles.query(q_pad, ty0, ty1), ty0, ty1)
            out.append(_fold(s, weigh, peak[a:b], total[a:b], acc[a:b]))
        return tuple(torch.cat(parts, 0) for parts in zip(*out))

    def _local_band(self, kmap: _PaddedMap, vmap: _PaddedMap):
        tiles = self.tiles

        def band(q, ty0, ty1):
            top, left = tiles.origins(ty0, ty1, q.device)
            s = _local_scores(q, kmap, tiles, top, left, self.bias)
            nb = vmap.squares(top - tiles.r, left - tiles.r, tiles.t + 2 * tiles.r)
            return s, lambda e: torch.matmul(e, nb)
        return band

    def _fine_band(self, frame: _FineFrame):
        def band(q, ty0, ty1):
            top, left = self.tiles.origins(ty0, ty1, q.device)
            s, state = frame.scores(q, ty0, ty1, top, left)
            return s, lambda e: frame.aggregate(e, state)
        return band

    def _coarse_offsets(self, q: torch.Tensor, key: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        """ROI centre offsets ``[2, h, w]`` (dy, dx in feature pixels): gamma * soft-argmax over the
        dilated window, computed as the restricted window on the gamma phase mosaic."""
        cfg, ct = self.spec.attention, self.coarse_tiles
        h, w, c = self.spec.height, self.spec.width, q.shape[0]
        gamma = torch.clamp(torch.div(distance, cfg.dilation_step, rounding_mode="trunc") + 1,
                            MIN_DILATION, max(cfg.max_dilation, MIN_DILATION))
        src, pos = self.mosaic_src[gamma - MIN_DILATION], self.mosaic_pos[gamma - MIN_DILATION]
        zero = torch.zeros(c, 1, dtype=q.dtype, device=q.device)

        def mosaic(x: torch.Tensor) -> torch.Tensor:
            return torch.cat([x.reshape(c, h * w), zero], 1)[:, src].reshape(c, ct.h, ct.w)

        q_pad, kmap = ct.pad_query(mosaic(q)), _PaddedMap(mosaic(key), cfg.radius + cfg.tile)
        parts = []
        for ty0, ty1 in ct.bands(cfg.band_tiles):
            top, left = ct.origins(ty0, ty1, q.device)
            prob = torch.softmax(_local_scores(ct.query(q_pad, ty0, ty1), kmap, ct, top, left, self.bias), -1)
            o = torch.stack([(prob * self.dy).sum(-1), (prob * self.dx).sum(-1)], -1)   # [nt, tt, 2]
            parts.append(ct.untile(o, ty0, ty1))
        offsets = torch.cat(parts, 1).reshape(2, ct.h * ct.w)[:, pos].reshape(2, h, w)
        return offsets * gamma.to(offsets.dtype)


def _fold(s, weigh, peak, total, acc):
    """Online softmax: fold scores ``s`` ``[nt, tt, n]`` (values ``weigh(e)`` ``[nt, tt, L]`` for
    weights ``e``) into the state (peak, total ``[nt, tt]``, acc ``[nt, tt, L]``)."""
    new_peak = torch.maximum(peak, s.amax(-1))
    scale = torch.exp(peak - new_peak)
    e = torch.exp(s - new_peak[..., None])
    return new_peak, total * scale + e.sum(-1), acc * scale[..., None] + weigh(e)


class Finish(nn.Module):
    """State -> ``probs`` ``[L, h, w]``: acc / total, tiles back to the map (padding cropped)."""

    def __init__(self, spec: ReadSpec) -> None:
        super().__init__()
        self.tiles = spec.tiles

    def forward(self, total: torch.Tensor, acc: torch.Tensor) -> torch.Tensor:
        return self.tiles.untile(acc / total[..., None], 0, self.tiles.nty)


def initial_state(spec: ReadSpec, dtype: torch.dtype = torch.float32):
    """The empty running-softmax state (peak, total, acc) of :class:`SlotRead`."""
    nt, tt = spec.state_shape
    return (torch.full((nt, tt), NO_SCORE, dtype=dtype), torch.zeros(nt, tt, dtype=dtype),
            torch.zeros(nt, tt, spec.max_labels, dtype=dtype))


class MemoryRead(nn.Module):
    """Eager torch twin of ``memory_read.onnx``: ``(query, keys, labels, distances) -> probs``
    (shapes in the module docstring); the ``If`` choices are Python branches here."""

    def __init__(self, spec: ReadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.local, self.roi, self.finish = SlotRead(spec, False), SlotRead(spec, True), Finish(spec)

    def forward(self, query, keys, labels, distances):
        dist, pick = torch.topk(distances, self.spec.reads)
        state = initial_state(self.spec, query.dtype)
        for d, slot in zip(dist, pick):
            if d <= 0:
                continue
            read = self.roi if self.spec.attention.uses_roi(int(d)) else self.local
            state = read(query, keys, labels, slot, d, *state)
        return self.finish(state[1], state[2])
