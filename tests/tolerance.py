"""Tolerances derived from the float32 rounding of the computation under test, not from one machine.

Two float32 evaluations of the same formula (AVX2, AVX-512 or AMX kernels; MLAS, oneDNN or numpy;
tiled or batched) may sum in any order. For a sum of n products, any order gives
``|fl(sum x_i y_i) - sum x_i y_i| <= gamma_n sum |x_i y_i|`` with ``gamma_n = n u / (1 - n u)`` and
``u`` the unit roundoff (Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., eq. 3.5),
so two evaluations differ by at most twice that. The helpers below turn that into a bound on the
label distribution of step 5 (docs/DESIGN.md) from the data of the test; every bound still fails
on a real error (a wrong candidate, offset or label moves the output by 1e-2 .. 1).

Loaded by the ``tol`` fixture (tests/conftest.py).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

U32 = 2.0 ** -24   # unit roundoff of float32 (half its machine epsilon)
U16 = 2.0 ** -11   # unit roundoff of float16


def gamma(n: int, u: float = U32) -> float:
    """Higham's ``gamma_n``: the relative error bound of any float sum of ``n`` terms."""
    assert n * u < 1, (n, u)
    return n * u / (1 - n * u)


def _norms(x, channel_axis: int) -> np.ndarray:
    """Euclidean norms along ``channel_axis`` of ``x`` (torch tensor or array), in float64."""
    a = np.asarray(x.detach().cpu().double() if hasattr(x, "detach") else x, np.float64)
    return np.sqrt((a * a).sum(axis=channel_axis))


def score_bound(query, keys) -> float:
    """An upper bound of ``sum_c |q_c k_c|`` over every query pixel and key position (Cauchy-Schwarz:
    ``max ||q_p|| * max ||k_m||``). ``query`` ``[C, h, w]``; ``keys`` ``[..., C, h, w]`` (channels third
    from the end)."""
    return float(_norms(query, 0).max() * _norms(keys, -3).max())


def key_gradient(keys) -> float:
    """The largest norm of the difference of two neighbouring keys (rows or columns) of ``keys``
    ``[..., C, h, w]``: how fast a bilinearly sampled key moves per pixel of offset."""
    a = np.asarray(keys.detach().cpu().double() if hasattr(keys, "detach") else keys, np.float64)
    dy = np.sqrt((np.diff(a, axis=-2) ** 2).sum(axis=-3)).max(initial=0.0)
    dx = np.sqrt((np.diff(a, axis=-1) ** 2).sum(axis=-3)).max(initial=0.0)
    return float(max(dy, dx))


def coarse_spread(query, key, dilation: int, radius: int) -> float:
    """``dilation * max_p sum_k softmax_k (|k_y - o_y| + |k_x - o_x|)`` in pixels: how far the coarse
    candidates of the ROI search (step 5) lie from their soft-argmax, weighted by the softmax, at the
    worst query pixel. ``query`` ``[C, h, w]``, ``key`` ``[C, h, w]`` (float64 here)."""
    q = np.asarray(query.detach().cpu().double() if hasattr(query, "detach") else query, np.float64)
    k = np.asarray(key.detach().cpu().double() if hasattr(key, "detach") else key, np.float64)
    c, h, w = q.shape
    steps = np.arange(-radius, radius + 1)
    ky, kx = (a.ravel() for a in np.meshgrid(steps, steps, indexing="ij"))
    ys, xs = np.arange(h)[:, None] + dilation * ky, np.arange(w)[:, None] + dilation * kx   # [h, n], [w, n]
    inside = ((ys >= 0) & (ys < h))[:, None, :] & ((xs >= 0) & (xs < w))[None, :, :]       # [h, w, n]
    cand = k[:, ys.clip(0, h - 1)[:, None, :], xs.clip(0, w - 1)[None, :, :]]              # [C, h, w, n]
    scores = np.where(inside, np.einsum("chw,chwn->hwn", q, cand), 0.0)                    # 0 out of frame
    p = np.exp(scores - scores.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    oy, ox = (p * ky).sum(-1, keepdims=True), (p * kx).sum(-1, keepdims=True)
    return float(dilation * (p * (np.abs(ky - oy) + np.abs(kx - ox))).sum(-1).max())


def read_atol(query, keys, candidates: int, *, roi: Sequence[tuple[object, int]] = (), radius: int = 0,
              u: float = U32) -> float:
    """Max abs difference of the label distributions that two evaluations of one ROI memory read
    (step 5: scores, one softmax over ``candidates`` candidates, weighted mean of one-hot values)
    can show, each in the precision of unit roundoff ``u`` with its own summation order.

    - each score is within ``gamma_C S`` of the exact one (``S``: :func:`score_bound`), so the two
      evaluations differ by ``d = 2 gamma_C S``;
    - scores moved by at most ``d`` move the softmax weights by at most ``expm1(2 d)`` in L1 norm,
      hence a mean of values in [0, 1] by as much;
    - ``roi``: ``(key [C, h, w], dilation)`` of each memory frame read through its ROI (window
      ``radius``): the soft-argmax offset ``gamma sum_k p_k k`` moves by at most
      ``2 d`` x :func:`coarse_spread` pixels (``dp_k = p_k (ds_k - mean ds)``), a bilinearly sampled
      key by that times :func:`key_gradient`, a fine score by ``max ||q||`` times that;
    - the normaliser and the weighted sum are sums of ``candidates`` terms: ``2 gamma_n`` each.
    """
    channels = int(np.shape(query)[0])
    d = 2 * gamma(channels, u) * score_bound(query, keys)
    shift = max((2 * d * coarse_spread(query, key, dilation, radius) for key, dilation in roi), default=0.0)
    d += float(_norms(query, 0).max()) * key_gradient(keys) * shift
    return math.expm1(2 * d) + 4 * gamma(candidates, u)


def tracker_read_atol(tracker, frame, cfg) -> float:
    """:func:`read_atol` of the next read of a ``mast.runtime.tracker.Tracker`` (call it before
    ``tracker.step(frame)``): its bank's keys (``backend.keys [S, C, h, w]``), the key of ``frame``
    (which must have the working size) and the attention configuration ``cfg``."""
    bank = tracker.backend
    pairs = tracker.slots.read_slots(tracker.t + 1)
    keys = np.asarray(bank.keys.float().cpu() if hasattr(bank.keys, "float") else bank.keys, np.float64)
    query = bank.encode(frame)
    query = np.asarray(query.float().cpu() if hasattr(query, "float") else query, np.float64)
    roi = [(keys[s], min(cfg.max_dilation, d // cfg.dilation_step + 1)) for s, d in pairs if d > cfg.roi_threshold]
    return read_atol(query, keys[[s for s, _ in pairs]], len(pairs) * (2 * cfg.radius + 1) ** 2,
                     roi=roi, radius=cfg.radius)
