"""Batched, differentiable ROI memory attention for training (same semantics as the core's).

``mast.core.attention.roi_memory_attention`` is the inference reference: one frame at a time,
memory-bounded tiles, and (since it serves inference) free to use in-place operations that
autograd cannot differentiate. Training needs gradients and a batch whose samples have different
reference distances (the memory stage draws them per sample), so this module computes the same
function (docs/DESIGN.md step 5; ``mast.core.attention_spec`` spells it out per pixel) another way:

* For a chunk of query pixels, the scores against every key of the rows its candidates can
  reach (all rows for ROI at small sizes; R rows around the chunk for restricted windows),
  ``S = Q^T K`` ``[B, n, rows*w]``, are one batched matmul; every candidate score the attention
  needs is then a ``gather`` from S (0 when the candidate lies outside the frame, as zero padding
  gives). S lives only while its chunk is read.
* Every reference goes through one path: the coarse search (dilation gamma = ``cfg.dilation(d)``,
  candidates p + gamma*k, k in [-R, R]^2), its soft-argmax offset o_p, then the fine window at
  p + o_p + delta, delta in [-R, R]^2, read bilinearly from the integer (2R+2)^2 window at
  p + floor(o_p) with the weights of frac(o_p). For references with d <= 15 (restricted window)
  o_p is 0, so the fine window is exactly the integer window. Gradients reach o_p through the
  bilinear weights (and from there the coarse scores), as in the paper's bilinear sampler.
* One softmax over the candidates of all references of a sample together; the output is the
  softmax-weighted sum of the candidates' values (bilinear, zeros outside the frame).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mast.core.config import AttentionConfig

DEFAULT_CHUNK_BYTES = 64 * 2**20  # bound on one score block S [B, n, h*w] (float32)


@dataclass(frozen=True)
class _Geometry:
    """Key map size ``h x w``, window radius ``r``; candidate offsets as flat tensors."""

    h: int
    w: int
    r: int
    device: torch.device

    def offsets(self, lo: int, hi: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(dy, dx) ``[(hi-lo+1)^2]`` int64 over the square [lo, hi]^2, row-major."""
        a = torch.arange(lo, hi + 1, device=self.device)
        dy, dx = torch.meshgrid(a, a, indexing="ij")
        return dy.reshape(-1), dx.reshape(-1)


def _gather_scores(s: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, g: _Geometry, top: int = 0):
    """Scores at integer positions: ``s`` ``[B, n, rows*w]`` (key rows ``top ..``, holding every
    in-frame position asked for), ys/xs ``[B or 1, n, N]`` -> (``[B, n, N]`` with 0 outside the
    frame, flat frame index and inside mask, both ``[B or 1, n, N]``)."""
    inside = (ys >= 0) & (ys < g.h) & (xs >= 0) & (xs < g.w)
    idx = ys.clamp(0, g.h - 1) * g.w + xs.clamp(0, g.w - 1)
    band = (idx - top * g.w).clamp(0, s.shape[2] - 1)                # out-of-frame cells: any index, masked
    return s.gather(2, band.expand(s.shape[0], -1, -1)) * inside, idx, inside


def _coarse_offset(s, py, px, gamma, roi, g: _Geometry, top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ROI centre offsets (dy, dx) ``[B, n]``: gamma * soft-argmax over the dilated window; 0 where
    ``roi`` ``[B]`` is False. ``gamma`` ``[B]`` int64, ``py``/``px`` ``[n]`` query pixel rows/columns;
    ``s`` holds key rows ``top ..``."""
    ky, kx = g.offsets(-g.r, g.r)
    ys = py[None, :, None] + gamma[:, None, None] * ky
    xs = px[None, :, None] + gamma[:, None, None] * kx
    scores, _, _ = _gather_scores(s, ys, xs, g, top)
    prob = torch.softmax(scores, -1)
    scale = (gamma * roi).to(s.dtype)[:, None]
    return (prob * ky.to(s.dtype)).sum(-1) * scale, (prob * kx.to(s.dtype)).sum(-1) * scale


def _blend(x: torch.Tensor, fy: torch.Tensor, fx: torch.Tensor, n: int) -> torch.Tensor:
    """Bilinear blend of ``x`` ``[..., (n+1)^2]`` (integer window) with weights of (fy, fx)
    ``[..., 1, 1]`` -> ``[..., n^2]``: the window shifted by the fraction."""
    x = x.unflatten(-1, (n + 1, n + 1))
    out = ((1 - fy) * (1 - fx) * x[..., :n, :n] + (1 - fy) * fx * x[..., :n, 1:]
           + fy * (1 - fx) * x[..., 1:, :n] + fy * fx * x[..., 1:, 1:])
    return out.flatten(-2)


def _key_rows(py: torch.Tensor, gamma: torch.Tensor, roi: torch.Tensor, g: _Geometry) -> tuple[int, int]:
    """Key rows [top, bottom) that the candidates of query rows ``py`` can reach: R around them
    for restricted windows; for ROI, the coarse search (gamma R) and the fine window around an
    offset of at most gamma R (rows floor(o) - R .. floor(o) + R + 1)."""
    reach = g.r + (int((gamma * roi).max()) * g.r + 1 if bool(roi.any()) else 0)
    return max(0, int(py.min()) - reach), min(g.h, int(py.max()) + reach + 1)


def _read_reference(q, k, v, gamma, roi, py, px, g: _Geometry):
    """Fine-window scores ``[B, n, N]`` and values ``[B, L, n, N]`` of one reference slot.

    q ``[B, n, C]`` query pixels; k ``[B, C, h*w]``; v ``[B, L, h*w]``; gamma, roi ``[B]``. The
    scores are computed against the key rows the candidates can reach only.
    """
    top, bottom = _key_rows(py, gamma, roi, g)
    s = torch.bmm(q, k[:, :, top * g.w: bottom * g.w])                # [B, n, rows*w]
    if not bool(roi.any()):  # restricted window only: one index set shared by the batch
        wy, wx = g.offsets(-g.r, g.r)
        scores, idx, inside = _gather_scores(s, py[None, :, None] + wy, px[None, :, None] + wx, g, top)
        return scores, _gather_values(v, idx.expand(s.shape[0], -1, -1), inside)
    oy, ox = _coarse_offset(s, py, px, gamma, roi, g, top)
    by, bx = oy.detach().floor(), ox.detach().floor()
    fy, fx = (oy - by)[..., None, None], (ox - bx)[..., None, None]  # [B, n, 1, 1]
    wy, wx = g.offsets(-g.r, g.r + 1)
    ys = py[None, :, None] + by.long()[..., None] + wy
    xs = px[None, :, None] + bx.long()[..., None] + wx
    scores, idx, inside = _gather_scores(s, ys, xs, g, top)           # [B, n, (2R+2)^2]
    vals = _gather_values(v, idx, inside)
    n_side = 2 * g.r + 1
    return _blend(scores, fy, fx, n_side), _blend(vals, fy[:, None], fx[:, None], n_side)


def _gather_values(v: torch.Tensor, idx: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Values ``v`` ``[B, L, h*w]`` at flat indices ``idx`` ``[B, n, N]`` -> ``[B, L, n, N]``,
    0 where ``inside`` (broadcastable to idx) is False."""
    b, n, m = idx.shape
    vals = v.gather(2, idx.reshape(b, 1, n * m).expand(-1, v.shape[1], -1)).reshape(b, -1, n, m)
    return vals * inside[:, None]


def batched_memory_attention(query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                             distances: torch.Tensor, cfg: AttentionConfig = AttentionConfig(radius=6),
                             chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> torch.Tensor:
    """ROI memory attention of a batch, differentiable w.r.t. query, keys and values.

    query:     ``[B, C, h, w]`` keys of the frames being reconstructed.
    keys:      ``[B, M, C, h, w]`` keys of their M references.
    values:    ``[B, M, L, h, w]`` the references' values (training: the dropped chroma channel
               once per 4x4 cell, ``ObjectiveConfig.label_offset``).
    distances: int ``[B, M]`` frame distances target - reference (>= 1); per sample, d >
               cfg.roi_threshold selects ROI localisation with dilation cfg.dilation(d).
    Returns ``[B, L, h, w]`` in the query's dtype (float32 or float64); equals
    ``roi_memory_attention`` applied to each sample.
    """
    dtype = query.dtype if query.dtype == torch.float64 else torch.float32
    b, c, h, w = query.shape
    m, big_l = keys.shape[1], values.shape[2]
    g = _Geometry(h, w, cfg.radius, query.device)
    q = query.to(dtype).flatten(2).transpose(1, 2)                   # [B, hw, C]
    k = keys.to(dtype).flatten(3)                                     # [B, M, C, hw]
    v = values.to(dtype).flatten(3)                                   # [B, M, L, hw]
    d = distances.to(query.device).long()
    roi = cfg.uses_roi(d)
    gamma = cfg.dilation(d)
    pix = torch.arange(h * w, device=query.device)
    step = max(1, chunk_bytes // (b * h * w * torch.finfo(dtype).bits // 8))
    out = []
    for p0 in range(0, h * w, step):
        p = pix[p0:p0 + step]
        parts = [_read_reference(q[:, p0:p0 + step], k[:, j], v[:, j], gamma[:, j], roi[:, j],
                                 p // w, p % w, g) for j in range(m)]
        prob = torch.softmax(torch.cat([s for s, _ in parts], -1), -1)  # [B, n, M*N]
        vals = torch.cat([x for _, x in parts], -1)                     # [B, L, n, M*N]
        out.append((vals * prob[:, None]).sum(-1))                      # [B, L, n]
    return torch.cat(out, -1).reshape(b, big_l, h, w)
