"""The fused ROI memory attention kernel in Triton (docs/DESIGN.md step 5, "GPU path"; specified by
:mod:`mast.core.attention_spec`).

One launch per frame: program ``i`` takes a ``TILE_H x TILE_W`` tile of query pixels (tiles in
row-major order), reads every bank slot whose distance is > 0 and writes those pixels' label
distribution. The softmax over the candidates of all slots is computed online (a running max
score, denominator and value sum per pixel, updated block by block): the ``(2R+1)^2`` scores are
never stored.

Kernel parameters, in this order (the TensorRT plugin passes inputs, then the int32 extra
arguments, then outputs: :mod:`mast.plugins.kernel_spec`):

- ``query``     ``[C, h, w]`` fp32 or fp16: the key of the frame being predicted.
- ``keys``      ``[S, C, h, w]`` fp32 or fp16: the bank's keys (accumulated in fp32).
- ``labels``    ``[S, h, w]`` int32 (or int64): each slot's label id per feature pixel; the
  one-hot value of ``L`` labels is formed in the kernel (ids outside ``0 .. L-1`` have no value).
- ``distances`` ``[S]`` int32: frame distance d = t - m of each slot; ``<= 0``: slot not read.
- ``height``, ``width``: int32 h, w.
- ``out``       ``[L, h, w]`` fp32: the label distribution (0 where no slot is read).

Constexprs: ``S``, ``C``, ``L`` (bank slots, key channels, labels), the attention configuration (``RADIUS``,
``ROI_THRESHOLD``, ``DILATION_STEP``, ``MAX_DILATION``), the tile ``TILE_H``, ``TILE_W`` and the
block sizes ``BLOCK_C`` / ``BLOCK_L`` / ``BLOCK_N`` (powers of two >= 16 and >= C / L /
TILE_W + 2R), ``DOT_FP16`` (fp16 keys: the score matmuls take fp16 operands, exact products).

Per slot: d <= ROI_THRESHOLD reads the restricted window p + k, k in [-R, R]^2, as matmuls: each
row of the tile's key neighbourhood (``TILE_W + 2R`` cells, zero outside the frame) against all the
tile's queries (``tl.dot``), cells outside a pixel's window masked, the weights against the row's
one-hot values (a second ``tl.dot``, fp32). Otherwise the
coarse search p + gamma*k (gamma = min(MAX_DILATION, d // DILATION_STEP + 1)) gives by its
soft-argmax the offset o_p, and the fine window p + o_p + k is read bilinearly (scores and one-hot
values blended from the four integer neighbours; along a window row each step reads two new
neighbours and reuses the previous step's two). Out-of-frame candidates score 0 with value 0
and stay in the softmax (zero padding).
"""
from __future__ import annotations

import triton
import triton.language as tl

from mast.core.config import NO_SCORE

_NO_SCORE = tl.constexpr(NO_SCORE)   # the running max's finite start (shared with the ONNX graph)


@triton.jit
def _score_at(q, key_ptr, y, x, height, width, offs_c, c_mask):
    """Scores ``[BLOCK_P]`` <q_p, K[y_p, x_p]> (0 out of frame) and the in-frame mask.

    q ``[BLOCK_P, BLOCK_C]`` fp32; key_ptr: the slot's ``[C, h, w]`` keys; y, x ``[BLOCK_P]`` int."""
    inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
    ptrs = key_ptr + offs_c[None, :] * (height * width) + (y * width + x)[:, None]
    k = tl.load(ptrs, mask=inside[:, None] & c_mask[None, :], other=0.0).to(tl.float32)
    return tl.sum(q * k, axis=1), inside


@triton.jit
def _label_at(label_ptr, y, x, inside, width):
    """Label ids ``[BLOCK_P]`` at (y, x); -1 (no value) out of frame."""
    return tl.load(label_ptr + y * width + x, mask=inside, other=-1)


@triton.jit
def _onehot(lab, offs_l):
    """One-hot values ``[BLOCK_P, BLOCK_L]`` fp32 of label ids ``lab`` (0 for ids outside 0 .. L-1)."""
    return (lab[:, None] == offs_l[None, :]).to(tl.float32)


@triton.jit
def _fold(m, den, acc, s, v):
    """Online softmax: fold one candidate (scores ``s`` ``[BLOCK_P]``, values ``v`` ``[BLOCK_P,
    BLOCK_L]``) into the running max ``m``, denominator ``den`` and value sum ``acc``."""
    m_new = tl.maximum(m, s)
    scale = tl.exp(m - m_new)
    e = tl.exp(s - m_new)
    return m_new, den * scale + e, acc * scale[:, None] + e[:, None] * v


@triton.jit
def _local_read(q, key_ptr, label_ptr, ty0, tx0, ty, tx, height, width, offs_c, c_mask, offs_l, m, den, acc,
                RADIUS: tl.constexpr, TILE_H: tl.constexpr, BLOCK_N: tl.constexpr, DOT_FP16: tl.constexpr):
    """Restricted window of one slot for the tile at (ty0, tx0) folded into (m, den, acc).

    q ``[BLOCK_P, BLOCK_C]`` in the keys' dtype; ty, tx ``[BLOCK_P]``: each pixel's place in the tile."""
    j = tl.arange(0, BLOCK_N)
    xs = tx0 - RADIUS + j                                       # [BLOCK_N] columns of the neighbourhood
    x_ok = (xs >= 0) & (xs < width)
    dx = j[None, :] - tx[:, None]
    x_win = (dx >= 0) & (dx <= 2 * RADIUS)                      # [BLOCK_P, BLOCK_N]
    for r in range(TILE_H + 2 * RADIUS):
        y = ty0 - RADIUS + r
        cell_ok = x_ok & (y >= 0) & (y < height)
        dy = r - ty
        win = x_win & ((dy >= 0) & (dy <= 2 * RADIUS))[:, None]
        k = tl.load(key_ptr + offs_c[:, None] * (height * width) + (y * width + xs)[None, :],
                    mask=c_mask[:, None] & cell_ok[None, :], other=0.0)
        if DOT_FP16:
            s = tl.dot(q, k, out_dtype=tl.float32)
        else:
            s = tl.dot(q, k, input_precision="ieee")
        s = tl.where(win, s, float("-inf"))
        v = _onehot(_label_at(label_ptr, y, xs, cell_ok, width), offs_l)       # [BLOCK_N, BLOCK_L]
        m_new = tl.maximum(m, tl.max(s, axis=1))
        scale = tl.exp(m - m_new)
        e = tl.exp(s - m_new[:, None])
        den = den * scale + tl.sum(e, axis=1)
        acc = acc * scale[:, None] + tl.dot(e, v, input_precision="ieee")
        m = m_new
    return m, den, acc


@triton.jit
def _roi_offsets(q, key_ptr, py, px, height, width, offs_c, c_mask, gamma, RADIUS: tl.constexpr):
    """ROI centre offsets (dy, dx) ``[BLOCK_P]`` fp32: gamma * soft-argmax of the dilated search."""
    side: tl.constexpr = 2 * RADIUS + 1
    m = tl.full(py.shape, float("-inf"), tl.float32)
    den = tl.zeros(py.shape, tl.float32)
    sy = tl.zeros(py.shape, tl.float32)
    sx = tl.zeros(py.shape, tl.float32)
    for k in range(side * side):
        ky = k // side - RADIUS
        kx = k % side - RADIUS
        s, _ = _score_at(q, key_ptr, py + gamma * ky, px + gamma * kx, height, width, offs_c, c_mask)
        m_new = tl.maximum(m, s)
        scale = tl.exp(m - m_new)
        e = tl.exp(s - m_new)
        den = den * scale + e
        sy = sy * scale + e * ky
        sx = sx * scale + e * kx
        m = m_new
    g = gamma.to(tl.float32)
    return g * sy / den, g * sx / den


@triton.jit
def _roi_read(q, key_ptr, label_ptr, py, px, height, width, offs_c, c_mask, offs_l, m, den, acc, gamma,
              RADIUS: tl.constexpr):
    """ROI read of one slot (coarse search, then the bilinear fine window) folded into (m, den, acc)."""
    side: tl.constexpr = 2 * RADIUS + 1
    oy, ox = _roi_offsets(q, key_ptr, py, px, height, width, offs_c, c_mask, gamma, RADIUS)
    fy_base = tl.floor(oy)
    fx_base = tl.floor(ox)
    fy = oy - fy_base
    fx = ox - fx_base
    y_base = py + fy_base.to(tl.int32)
    x_base = px + fx_base.to(tl.int32)
    w00 = (1.0 - fy) * (1.0 - fx)
    w01 = (1.0 - fy) * fx
    w10 = fy * (1.0 - fx)
    w11 = fy * fx
    for ky in range(side):
        y = y_base + (ky - RADIUS)
        x = x_base - RADIUS
        # the left corners (x) of the first candidate of the row; then each step reads the right
        # corners (x + 1) only: they are the next candidate's left corners
        s0, i0 = _score_at(q, key_ptr, y, x, height, width, offs_c, c_mask)
        s1, i1 = _score_at(q, key_ptr, y + 1, x, height, width, offs_c, c_mask)
        l0 = _label_at(label_ptr, y, x, i0, width)
        l1 = _label_at(label_ptr, y + 1, x, i1, width)
        for kx in range(side):
            x = x_base + (kx - RADIUS + 1)
            s2, i2 = _score_at(q, key_ptr, y, x, height, width, offs_c, c_mask)
            s3, i3 = _score_at(q, key_ptr, y + 1, x, height, width, offs_c, c_mask)
            l2 = _label_at(label_ptr, y, x, i2, width)
            l3 = _label_at(label_ptr, y + 1, x, i3, width)
            s = w00 * s0 + w01 * s2 + w10 * s1 + w11 * s3
            v = (w00[:, None] * _onehot(l0, offs_l) + w01[:, None] * _onehot(l2, offs_l)
                 + w10[:, None] * _onehot(l1, offs_l) + w11[:, None] * _onehot(l3, offs_l))
            m, den, acc = _fold(m, den, acc, s, v)
            s0, s1, l0, l1 = s2, s3, l2, l3
    return m, den, acc


@triton.jit
def roi_attention_kernel(query_ptr, keys_ptr, labels_ptr, distances_ptr, height, width, out_ptr,
                         S: tl.constexpr, C: tl.constexpr, L: tl.constexpr, RADIUS: tl.constexpr, ROI_THRESHOLD: tl.constexpr,
                         DILATION_STEP: tl.constexpr, MAX_DILATION: tl.constexpr, TILE_H: tl.constexpr,
                         TILE_W: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_N: tl.constexpr,
                         DOT_FP16: tl.constexpr):
    """Label distribution of one tile of query pixels over all read slots (module docstring)."""
    hw = height * width
    n_cols = tl.cdiv(width, TILE_W)
    ty0 = (tl.program_id(0) // n_cols) * TILE_H
    tx0 = (tl.program_id(0) % n_cols) * TILE_W
    i = tl.arange(0, TILE_H * TILE_W)
    ty = i // TILE_W
    tx = i % TILE_W
    py = ty0 + ty
    px = tx0 + tx
    p = py * width + px
    p_mask = (py < height) & (px < width)
    offs_c = tl.arange(0, BLOCK_C)
    c_mask = offs_c < C
    offs_l = tl.arange(0, BLOCK_L)
    q_raw = tl.load(query_ptr + offs_c[None, :] * hw + p[:, None], mask=p_mask[:, None] & c_mask[None, :], other=0.0)
    q = q_raw.to(tl.float32)
    # a finite start: a pixel none of whose cells a matmul block reaches keeps m (exp(m - m) = 1)
    m = tl.full([TILE_H * TILE_W], _NO_SCORE, tl.float32)
    den = tl.zeros([TILE_H * TILE_W], tl.float32)
    acc = tl.zeros([TILE_H * TILE_W, BLOCK_L], tl.float32)
    for slot in range(S):
        d = tl.load(distances_ptr + slot)
        key_ptr = keys_ptr + slot * (C * hw)
        label_ptr = labels_ptr + slot * hw
        if d > ROI_THRESHOLD:
            gamma = tl.minimum(d // DILATION_STEP + 1, MAX_DILATION)
            m, den, acc = _roi_read(q, key_ptr, label_ptr, py, px, height, width, offs_c, c_mask, offs_l,
                                    m, den, acc, gamma, RADIUS)
        elif d > 0:
            m, den, acc = _local_read(q_raw, key_ptr, label_ptr, ty0, tx0, ty, tx, height, width, offs_c, c_mask,
                                      offs_l, m, den, acc, RADIUS, TILE_H, BLOCK_N, DOT_FP16)
    probs = acc / tl.where(den > 0, den, 1.0)[:, None]
    tl.store(out_ptr + offs_l[None, :] * hw + p[:, None], probs, mask=p_mask[:, None] & (offs_l < L)[None, :])
