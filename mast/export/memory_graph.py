"""The ROI memory attention as exportable torch modules: the pieces of ``memory_read.onnx``.

Same semantics as :func:`mast.core.attention.roi_memory_attention` (docs/DESIGN.md step 5, specified by
:mod:`mast.core.attention_spec`), for one query frame over the whole fixed-size bank; standard ONNX
operators only.

``memory_read.onnx`` (assembled by :mod:`mast.export.compose`) takes, with shapes fixed at export
(:class:`ReadSpec`):

- ``query``     ``[1, C, h, w]`` float32: the encoder's output for the frame being predicted.
- ``keys``      ``[S, C, h, w]`` float32: the bank's keys, one per slot.
- ``labels``    ``[S, h, w]`` int64: each slot's label-channel map (0 .. max_labels-1, strided centres).
- ``distances`` ``[S]`` int64: frame distance t - m of each slot to read; ``<= 0``: not read.

and returns ``probs`` ``[max_labels, h, w]`` float32 (channels above the tracker's label count are 0:
the graph reads only the label channels 0 .. the bank's largest id, so one tracked object costs
3 value columns, not ``max_labels + 1``).

How it is computed (exportable, memory-bounded):

- **Which slots.** ``TopK(distances, reads)`` lists the (at most ``reads``) slots read this frame.
  Each pick is folded into a running softmax state (per query pixel: max score, sum of weights,
  weighted values) by an ``If`` node: distance <= 0 leaves the state as it is (an empty slot costs
  nothing), d <= roi_threshold (15) runs :class:`SlotRead` ``roi=False``, d above it ``roi=True``. Folding slot by
  slot (online softmax) gives the one softmax over all candidates of all slots.
- **Restricted window** (d <= roi_threshold): the reference's ``T x T`` query tiles against their
  ``(T+2R)^2`` zero-padded key neighbourhood, one batched MatMul per band of tile rows with the
  window mask (-inf outside each pixel's window).
- **ROI localisation** (d > roi_threshold): the dilation gamma = min(max_dilation, d // dilation_step + 1)
  (:meth:`~mast.core.config.AttentionConfig.dilation`) is data, so the coarse
  search runs on a *phase mosaic*: the ``gamma x gamma`` phase grids of the frame side by side with
  ``R`` zero rows/columns between them, gathered with per-gamma index tables made at export
  (:class:`PhaseTables`). The dilated search is then the restricted-window search of the mosaic's
  tiles (about as many as the frame's, whatever gamma is). Its soft-argmax gives o_p.
- **Fine window** (ROI): pixels are sorted by the ``T x T`` bucket of p + floor(o_p) (where their
  window lands) and cut into chunks of ``T*T``; each chunk's queries are matched against the key
  rectangle holding its pixels' integer ``(2R+2)^2`` windows (sides ``2R + 2`` + the chunk's spread
  of p + floor(o_p) along each axis, computed in the graph: dynamic ``Range``s; chunks sorted by
  rectangle area first).
  The scores are blended with each pixel's bilinear weights into the fractional grid (one
  depthwise 2x2 ``Conv``, a channel per pixel) and masked
  to its window; the weighted values are one MatMul with the square's four corner-shifted value
  grids (:class:`_FineFrame`), scattered back into the tile-layout state. Keys are padded by
  ``max_dilation * R + R + T + 3`` so every square fits.
- Peak extra memory is that of one band (chunk) of one slot (figures in BENCHMARKS.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mast.core.config import EXP_FLOOR, NO_SCORE, AttentionConfig, MemoryConfig
from mast.core.tiling import Tiles
from mast.export.tiling import PaddedMap

MIN_DILATION = 2
# exp arguments are clamped at EXP_FLOOR: onnxruntime's Exp is ~15x slower on -inf and on arguments
# whose result is denormal; NO_SCORE is the running max's finite start (both: mast.core.config).


def _exp(x: torch.Tensor) -> torch.Tensor:
    """exp(max(x, EXP_FLOOR)) (see EXP_FLOOR)."""
    return torch.exp(torch.clamp(x, min=EXP_FLOOR))


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
    def tiles(self) -> Tiles:
        """Tiling of the feature map into query tiles."""
        return Tiles(self.height, self.width, self.attention.tile, self.attention.radius)

    @property
    def state_shape(self) -> tuple[int, int]:
        """Running-softmax state layout: (tiles of the frame, pixels per tile)."""
        t = self.tiles
        return t.nty * t.ntx, t.t * t.t


@dataclass(frozen=True)
class PhaseTables:
    """Where the coarse (dilated) search reads and writes, for each dilation gamma = 2 .. max.

    The gamma x gamma phase grids of the frame (pixels gamma*i + ry, gamma*j + rx) are laid side
    by side on a key mosaic ``Hm x Wm``: block (ry, rx) starts at row ry*(BH + r), column
    rx*(BW + r), BH = ceil(ceil(h / gamma) / t) * t; ``r`` zero rows/columns between blocks keep
    every radius-r window inside its own phase grid (out-of-grid cells read zeros, as the
    reference's zero padding does). Query tiles cover the blocks only (not the gaps), so the
    search costs about as many tiles as the frame has, whatever gamma is.

    ksrc: ``[G, Hm*Wm]`` frame pixel (flat; ``h*w`` = a zero pixel) shown at each mosaic cell.
    qsrc: ``[G, NT*t*t]`` frame pixel of each pixel of each query tile (padding tiles: ``h*w``).
    top, left: ``[G, NT]`` each tile's origin on the mosaic.
    pos:  ``[G, h*w]`` each frame pixel's place among the tiles' pixels (tile * t*t + pixel).
    """

    ksrc: np.ndarray
    qsrc: np.ndarray
    top: np.ndarray
    left: np.ndarray
    pos: np.ndarray
    hm: int
    wm: int

    @property
    def n_tiles(self) -> int:
        return self.top.shape[1]


def phase_tables(h: int, w: int, t: int, r: int, max_dilation: int) -> PhaseTables:
    """The :class:`PhaseTables` of an ``h x w`` map, tiles ``t``, radius ``r``."""
    gammas = list(range(MIN_DILATION, max(max_dilation, MIN_DILATION) + 1))
    blocks = {g: (-(-(-(-h // g)) // t) * t, -(-(-(-w // g)) // t) * t) for g in gammas}   # BH, BW
    hm = max(g * bh + (g - 1) * r for g, (bh, _) in blocks.items())
    wm = max(g * bw + (g - 1) * r for g, (_, bw) in blocks.items())
    n_tiles = max(g * g * (bh // t) * (bw // t) for g, (bh, bw) in blocks.items())
    ksrc = np.full((len(gammas), hm, wm), h * w, np.int64)
    qsrc = np.full((len(gammas), n_tiles, t, t), h * w, np.int64)
    top, left = np.zeros((len(gammas), n_tiles), np.int64), np.zeros((len(gammas), n_tiles), np.int64)
    pos = np.zeros((len(gammas), h * w), np.int64)
    for gi, g in enumerate(gammas):
        bh, bw = blocks[g]
        k = 0
        for ry in range(g):
            for rx in range(g):
                fy, fx = np.arange(bh) * g + ry, np.arange(bw) * g + rx
                frame = np.where((fy[:, None] < h) & (fx[None] < w), fy[:, None] * w + fx[None], h * w)
                y0, x0 = ry * (bh + r), rx * (bw + r)
                ksrc[gi, y0:y0 + bh, x0:x0 + bw] = frame
                for ty in range(bh // t):
                    for tx in range(bw // t):
                        qsrc[gi, k] = frame[ty * t:(ty + 1) * t, tx * t:(tx + 1) * t]
                        top[gi, k], left[gi, k] = y0 + ty * t, x0 + tx * t
                        k += 1
        flat = qsrc[gi].reshape(-1)
        real = flat < h * w
        pos[gi, flat[real]] = np.nonzero(real)[0]
    return PhaseTables(ksrc.reshape(len(gammas), -1), qsrc.reshape(len(gammas), -1), top, left, pos, hm, wm)


def _local_scores(q: torch.Tensor, key: PaddedMap, tiles: Tiles, top, left, bias) -> torch.Tensor:
    """Restricted-window scores of tile queries ``q`` ``[nt, tt, C]``: ``[nt, tt, (t+2r)^2]``, -inf
    outside each pixel's window, 0 for out-of-frame cells."""
    nb = key.squares(top - tiles.r, left - tiles.r, tiles.t + 2 * tiles.r)
    return torch.matmul(q, nb.transpose(1, 2)) + bias


class _DepthwiseConv2x2(torch.autograd.Function):
    """``x`` ``[1, G, H, W]`` convolved with its own 2x2 kernel per channel, ``w`` ``[G, 1, 2, 2]``:
    ``[1, G, H-1, W-1]``. Exported as one ONNX ``Conv`` (group G) with the kernel shape given, which
    the TorchScript exporter cannot infer when ``H``, ``W`` are data."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, groups: int) -> torch.Tensor:  # noqa: ARG004 - autograd signature
        return F.conv2d(x, w, groups=groups)

    @staticmethod
    def symbolic(g, x, w, groups: int):
        return g.op("Conv", x, w, group_i=groups, kernel_shape_i=[2, 2])


class _FineFrame:
    """A slot read through its ROI: the fine window around p + o_p of its keys and values (bilinear,
    zero padded).

    Pixels are grouped by where their window lands, not by where they sit: sorted by the ``T x T``
    bucket of p + floor(o_p) (serpentine row order), they are cut into chunks of ``T*T`` pixels, and each chunk
    is matched against the key rectangle spanning its pixels' integer ``(2R+2)^2`` windows (sides
    ``2R + 2`` + the spread of p + floor(o_p) inside the chunk along each axis, which stays near
    ``T`` however far apart the offsets of neighbouring pixels point; a chunk that crosses into the
    next bucket spreads along one axis only, so a rectangle holds ~20 % fewer cells than a square).
    Chunks are read in batches of one rectangle (the batch's largest sides), sorted by area first."""

    def __init__(self, key, value, offsets, tiles: Tiles, pad: int, max_shift: int) -> None:
        self.tiles = tiles
        h, w, t = tiles.h, tiles.w, tiles.t
        n, tt = h * w, t * t
        base = torch.floor(offsets)
        iy, ix = (c.reshape(-1) for c in torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij"))
        ty, tx = base[0].reshape(-1).long() + iy, base[1].reshape(-1).long() + ix       # [N] p + floor(o_p)
        # bucket of each target in serpentine order (row by row, every other row right to left, so
        # that a chunk crossing into the next row stays at the same end); max_shift bounds
        # |floor(o_p)|, so the bucket coordinates are non-negative
        buckets_x = -(-(w + 2 * max_shift) // t) + 1
        by = torch.div(ty + max_shift, t, rounding_mode="floor")
        bx = torch.div(tx + max_shift, t, rounding_mode="floor")
        bucket = by * buckets_x + torch.where(by % 2 == 0, bx, buckets_x - 1 - bx)
        order = torch.topk(bucket, n, largest=False).indices                          # [N]
        chunks = -(-n // tt)
        # the last chunk is filled up with copies of the last pixel (same result, written twice)
        if chunks * tt > n:
            order = torch.cat([order, order[-1:].expand(chunks * tt - n)])
        order = order.reshape(chunks, tt)
        self.chunks = chunks                                                          # a Python int (static)
        self.pixels = order                                                           # [NC, tt]
        self.ty, self.tx = ty[order], tx[order]
        frac = (offsets - base).reshape(2, n)
        self.fy, self.fx = frac[0][order], frac[1][order]                             # [NC, tt]
        win = 2 * tiles.r + 2
        area = (self.ty.amax(1) - self.ty.amin(1) + win) * (self.tx.amax(1) - self.tx.amin(1) + win)
        self.order = torch.topk(area, chunks, largest=False).indices                  # [NC]
        self.keys, self.values = PaddedMap(key, pad), PaddedMap(value, pad, ones=True)

    @property
    def n_chunks(self) -> int:
        return self.chunks

    def _squares(self, idx: torch.Tensor):
        """For the chunks ``idx`` ``[n]``: the rectangles' sides (rows, columns: 0-d each), their rows
        in the padded maps ``[n, rows*columns]``, and each pixel's integer window start on its
        rectangle (y, x) ``[n, tt]``."""
        tiles, r = self.tiles, self.tiles.r
        ty, tx = self.ty[idx], self.tx[idx]                                           # [n, tt]
        lo_y, lo_x = ty.amin(1, keepdim=True), tx.amin(1, keepdim=True)
        side_y, side_x = (ty - lo_y).amax() + (2 * r + 2), (tx - lo_x).amax() + (2 * r + 2)
        # a square starts at its chunk's first window row/column, moved up/left where it would
        # leave the padded map (it still holds every window of the chunk: the pad covers them)
        top0, left0 = lo_y[:, 0] - r, lo_x[:, 0] - r                                  # [n]
        top = torch.minimum(top0, tiles.h + self.keys.pad - side_y)
        left = torch.minimum(left0, tiles.w + self.keys.pad - side_x)
        oy = ty - lo_y + (top0 - top)[:, None]
        ox = tx - lo_x + (left0 - left)[:, None]
        return side_y, side_x, self.keys.cells(top, left, side_y, side_x), oy, ox

    def chunk(self, q_rows: torch.Tensor, c0: int, c1: int):
        """Fine scores ``[n, tt, (sy-1)(sx-1)]`` (-inf outside each pixel's window) of the chunks
        ``order[c0:c1]`` (queries from ``q_rows`` ``[N, C]``), the weights -> values
        ``[n, tt, L+1]`` map, and those chunks' indices.

        The scores on the square are blended with each pixel's bilinear weights into the grid of
        fractional positions start + k + frac (``sy - 1`` x ``sx - 1``), where a mask keeps the
        pixel's ``(2R+1)^2`` window."""
        idx = self.order[c0:c1]
        sy, sx, rows, oy, ox = self._squares(idx)
        s = torch.matmul(q_rows[self.pixels[idx]], self.keys.rows[rows].transpose(1, 2))   # [n, tt, sy*sx]
        nb, tt = c1 - c0, self.tiles.t * self.tiles.t
        fy, fx = self.fy[idx][..., None], self.fx[idx][..., None]                      # [n, tt, 1]
        # each pixel's bilinear weights of its 2x2 corners: [n, tt, 4, 1]
        mix = torch.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx], 2)
        # the blend as one depthwise 2x2 Conv (a channel per pixel, its weights as the kernel): one
        # pass over the scores instead of two Slice/Sub/Mul/Add lerps (~2.5x faster in onnxruntime)
        s = _DepthwiseConv2x2.apply(s.reshape(1, nb * tt, sy, sx), mix.reshape(nb * tt, 1, 2, 2), nb * tt)
        s = s.reshape(nb, tt, sy - 1, sx - 1)                                          # [n, tt, sy-1, sx-1]
        n = 2 * self.tiles.r + 1
        dy = torch.arange(sy - 1) - oy[..., None]                                     # [n, tt, sy-1]
        dx = torch.arange(sx - 1) - ox[..., None]                                     # [n, tt, sx-1]
        # the window mask as two additive -inf bias vectors (row, column): two broadcast Adds
        row = torch.where((dy >= 0) & (dy < n), 0.0, float("-inf")).to(s.dtype)
        col = torch.where((dx >= 0) & (dx < n), 0.0, float("-inf")).to(s.dtype)
        fine = s + row[..., :, None] + col[..., None, :]

        # the values at the blended positions are the same blend of the square's values: the
        # weighted values are one MatMul with its four corner-shifted value grids, then a 4-term mix
        vals = self.values.rows[rows]
        vals = vals.reshape(vals.shape[0], sy, sx, vals.shape[-1])
        corners = torch.cat([vals[:, :-1, :-1], vals[:, :-1, 1:], vals[:, 1:, :-1], vals[:, 1:, 1:]], -1)
        corners = corners.reshape(vals.shape[0], -1, 4 * vals.shape[-1])                # [n, (sy-1)(sx-1), 4(L+1)]

        def weigh(e: torch.Tensor) -> torch.Tensor:
            out = torch.matmul(e, corners)
            return (out.reshape(out.shape[0], out.shape[1], 4, -1) * mix).sum(2)

        return fine.flatten(2), weigh, idx


class _LocalFrame:
    """A slot read through the restricted window (zero padded)."""

    def __init__(self, key, value, tiles: Tiles, bias) -> None:
        self.tiles, self.bias = tiles, bias
        self.keys = PaddedMap(key, tiles.r + tiles.t)
        self.values = PaddedMap(value, tiles.r + tiles.t, ones=True)

    def band(self, q: torch.Tensor, ty0: int, ty1: int):
        """Scores ``[nt, tt, (t+2r)^2]`` (-inf outside each pixel's window) of tile queries ``q``
        ``[nt, tt, C]`` of tile rows [ty0, ty1), and the weights -> values ``[nt, tt, L+1]`` map."""
        tiles = self.tiles
        top, left = tiles.origins(ty0, ty1)
        s = _local_scores(q, self.keys, tiles, top, left, self.bias)
        rows = self.values.cells(top - tiles.r, left - tiles.r, tiles.t + 2 * tiles.r)
        return s, lambda e: torch.matmul(e, self.values.rows[rows])


class SlotRead(nn.Module):
    """One read slot folded into the running softmax state (the body of one ``If`` branch).

    Inputs: ``query`` ``[1, C, h, w]``, ``keys`` ``[S, C, h, w]``, ``labels`` ``[S, h, w]`` int64,
    ``slot`` and ``distance`` 0-d int64, and the state: ``peak`` ``[NT, tt]`` (running max score of
    each query pixel) and ``acc`` ``[NT, tt, L+1]``, L = the bank's largest label id + 1 (sum of
    exp(score - peak) * value; the last
    channel: of exp(score - peak), the softmax denominator), NT tiles of tt pixels
    (:attr:`ReadSpec.state_shape`). Returns the updated (peak, acc).
    ``roi``: read through ROI localisation (the caller picks it for d > roi_threshold).
    """

    def __init__(self, spec: ReadSpec, roi: bool) -> None:
        super().__init__()
        self.spec, self.roi = spec, roi
        cfg = spec.attention
        self.tiles = spec.tiles
        bias, (dy, dx) = self.tiles.window_mask(), self.tiles.window_offsets()
        self.register_buffer("bias", bias, persistent=False)
        if roi:
            self.phases = phase_tables(spec.height, spec.width, cfg.tile, cfg.radius, cfg.max_dilation)
            for name in ("qsrc", "top", "left", "pos"):
                self.register_buffer(f"phase_{name}", torch.from_numpy(getattr(self.phases, name)), persistent=False)
            # the key mosaic zero padded by R, as rows of the frame's channels-last map (h*w: zero row)
            ph, r = self.phases, cfg.radius
            kpad = np.pad(ph.ksrc.reshape(-1, ph.hm, ph.wm), ((0, 0), (r, r), (r, r)), constant_values=spec.height * spec.width)
            self.register_buffer("phase_kpad", torch.from_numpy(kpad.reshape(kpad.shape[0], -1)), persistent=False)
            self.register_buffer("dy", dy, persistent=False)   # [tt, cells] offset of each cell
            self.register_buffer("dx", dx, persistent=False)
            self.max_shift = max(cfg.max_dilation, 1) * cfg.radius + 1      # bound on |floor(o_p)|
            self.fine_pad = self.max_shift + cfg.radius + cfg.tile + 2
            # each frame pixel's row in the tile-layout state: tile * t*t + place in the tile
            y, x = (c.reshape(-1) for c in torch.meshgrid(torch.arange(spec.height), torch.arange(spec.width), indexing="ij"))
            t = cfg.tile
            state_pos = ((y // t) * self.tiles.ntx + x // t) * t * t + (y % t) * t + x % t
            self.register_buffer("state_pos", state_pos, persistent=False)

    def forward(self, query, keys, labels, slot, distance, peak, acc):
        spec, tiles = self.spec, self.tiles
        q = query[0]
        key = keys[slot].to(q.dtype)
        # label channels 0 .. the bank's largest id (not max_labels): the value MatMuls, the corner
        # grids and the state shrink with the objects tracked; Finish pads the output to max_labels
        channels = torch.arange(labels.max() + 1)
        value = (labels[slot][None] == channels[:, None, None]).to(q.dtype)    # [L, h, w]
        q_pad = tiles.pad_query(q)
        if not self.roi:
            frame = _LocalFrame(key, value, tiles, self.bias)
            parts = []
            for ty0, ty1 in tiles.bands(spec.attention.band_tiles):
                a, b = ty0 * tiles.ntx, ty1 * tiles.ntx
                s, weigh = frame.band(tiles.query(q_pad, ty0, ty1), ty0, ty1)
                parts.append(_fold(s, weigh, peak[a:b], acc[a:b]))
            return torch.cat([p for p, _ in parts], 0), torch.cat([a for _, a in parts], 0)
        zero = torch.zeros(1, q.shape[0], dtype=q.dtype)
        q_rows = torch.cat([q.reshape(q.shape[0], -1).t(), zero], 0)          # [N + 1, C], last: a zero row
        k_rows = torch.cat([key.reshape(key.shape[0], -1).t(), zero], 0)
        frame = _FineFrame(key, value, self._coarse_offsets(q_rows, k_rows, distance), tiles, self.fine_pad,
                           self.max_shift)
        state_pos = self.state_pos[frame.pixels]                             # [NC, tt] rows of the state
        peak_rows, acc_rows = peak.reshape(-1), acc.reshape(-1, acc.shape[-1])
        parts, written = [], []
        for c0, c1 in chunk_batches(frame.n_chunks, spec.attention.band_tiles * tiles.ntx):
            s, weigh, idx = frame.chunk(q_rows, c0, c1)
            pos = state_pos[idx]
            parts.append(_fold(s, weigh, peak_rows[pos], acc_rows[pos]))
            written.append(pos.reshape(-1))
        pos = torch.cat(written)
        new_peak = torch.cat([p for p, _ in parts], 0).reshape(-1)
        new_acc = torch.cat([a for _, a in parts], 0).reshape(pos.shape[0], -1)
        peak_rows = peak_rows.scatter(0, pos, new_peak)
        acc_rows = acc_rows.scatter(0, pos[:, None].expand(-1, acc_rows.shape[1]), new_acc)
        return peak_rows.reshape(peak.shape), acc_rows.reshape(acc.shape)

    def _coarse_offsets(self, q_rows: torch.Tensor, k_rows: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        """ROI centre offsets ``[2, h, w]`` (dy, dx in feature pixels): gamma * soft-argmax over the
        dilated window, computed as the restricted window on the gamma phase mosaic. ``q_rows``,
        ``k_rows``: query and key ``[h*w + 1, C]`` channels-last, a zero row last (gathered by
        row, a contiguous copy per cell)."""
        cfg, ph, t, r = self.spec.attention, self.phases, self.tiles.t, self.tiles.r
        h, w, c = self.spec.height, self.spec.width, q_rows.shape[1]
        gamma = torch.clamp(torch.div(distance, cfg.dilation_step, rounding_mode="trunc") + 1,
                            MIN_DILATION, max(cfg.max_dilation, MIN_DILATION))
        g = gamma - MIN_DILATION
        q_tiles = q_rows[self.phase_qsrc[g]].reshape(ph.n_tiles, t * t, c)             # [NT, tt, C]
        kmap = PaddedMap.from_rows(k_rows[self.phase_kpad[g]], r, ph.wm + 2 * r)
        top, left = self.phase_top[g], self.phase_left[g]
        step = cfg.band_tiles * self.tiles.ntx
        parts = []
        for c0 in range(0, ph.n_tiles, step):
            c1 = min(c0 + step, ph.n_tiles)
            nb = kmap.squares(top[c0:c1] - r, left[c0:c1] - r, t + 2 * r)
            s = torch.matmul(q_tiles[c0:c1], nb.transpose(1, 2)) + self.bias              # [n, tt, cells]
            # Softmax (rounds as the reference's does) of scores raised to >= max + EXP_FLOOR
            prob = torch.softmax(torch.maximum(s, s.amax(-1, keepdim=True) + EXP_FLOOR), -1)
            parts.append(torch.stack([(prob * self.dy).sum(-1), (prob * self.dx).sum(-1)], -1))  # [n, tt, 2]
        offsets = torch.cat(parts, 0).reshape(ph.n_tiles * t * t, 2)[self.phase_pos[g]]    # [h*w, 2]
        return offsets.t().reshape(2, h, w) * gamma.to(offsets.dtype)


def chunk_batches(n: int, step: int) -> list[tuple[int, int]]:
    """Batches ``[c0, c1)`` of ``n`` chunks sorted by spread, narrowest first: at most ``step``
    chunks a batch, and the widest end of the order in batches halving down to one chunk (16, 8,
    4, 2, 1, 1 for step >= 16). A batch's squares take its widest chunk's side, and the few widest
    chunks (sides up to ~100 with trained keys, against ~30 for most) would otherwise set the side
    of a whole batch: with camel at 240x427, 16.8 M score cells per ROI read -> 11.1 M."""
    tail, size = [], 1
    while sum(tail) < n and size < step:
        tail.append(min(size, n - sum(tail)))
        size = size if len(tail) == 1 else size * 2
    head = n - sum(tail)
    sizes = [head % step] * (head % step > 0) + [step] * (head // step) + tail[::-1]
    bounds = [0]
    for k in sizes:
        bounds.append(bounds[-1] + k)
    return list(zip(bounds[:-1], bounds[1:]))


def _fold(s, weigh, peak, acc):
    """Online softmax: fold scores ``s`` ``[n, tt, k]`` (``weigh(e)``: values ``[n, tt, L+1]`` for
    weights ``e``) into the state rows ``peak`` ``[n, tt]``, ``acc`` ``[n, tt, L+1]``."""
    new_peak = torch.maximum(peak, s.amax(-1))
    e = _exp(s - new_peak[..., None])
    return new_peak, acc * _exp(peak - new_peak)[..., None] + weigh(e)


class Finish(nn.Module):
    """State ``acc`` ``[NT, tt, l+1]`` (l label channels read, <= L) -> ``probs`` ``[L, h, w]``:
    values / denominator, tiles back to the map (padding cropped), zeros above channel l."""

    def __init__(self, spec: ReadSpec) -> None:
        super().__init__()
        self.tiles, self.labels = spec.tiles, spec.max_labels

    def forward(self, acc: torch.Tensor) -> torch.Tensor:
        probs = acc[..., :-1] / acc[..., -1:]
        probs = self.tiles.untile(probs, 0, self.tiles.nty).permute(2, 0, 1)        # [l, h, w], l read
        # channels l .. max_labels - 1 (no such label in the bank) read the appended zero map
        probs = torch.cat([probs, torch.zeros_like(probs[:1])], 0)
        pick = torch.clamp(torch.arange(self.labels), max=probs.shape[0] - 1)
        return probs[pick]


def initial_state(spec: ReadSpec, n_labels: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """The empty running-softmax state (peak ``[NT, tt]``, acc ``[NT, tt, n_labels+1]``) of
    :class:`SlotRead`; ``n_labels``: the bank's largest label id + 1."""
    nt, tt = spec.state_shape
    return torch.full((nt, tt), NO_SCORE, dtype=dtype), torch.zeros(nt, tt, n_labels + 1, dtype=dtype)


class MemoryRead(nn.Module):
    """Eager torch twin of ``memory_read.onnx``: ``(query, keys, labels, distances) -> probs``
    (shapes in the module docstring); the ``If`` choices are Python branches here."""

    def __init__(self, spec: ReadSpec) -> None:
        super().__init__()
        self.spec = spec
        self.local, self.roi, self.finish = SlotRead(spec, False), SlotRead(spec, True), Finish(spec)

    def forward(self, query, keys, labels, distances):
        dist, pick = torch.topk(distances, self.spec.reads)
        peak, acc = initial_state(self.spec, int(labels.max()) + 1, query.dtype)
        for d, slot in zip(dist, pick):
            if d <= 0:
                continue
            read = self.roi if self.spec.attention.uses_roi(int(d)) else self.local
            peak, acc = read(query, keys, labels, slot, d, peak, acc)
        return self.finish(acc)
