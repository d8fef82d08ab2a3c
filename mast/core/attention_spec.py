"""The ROI memory attention, specified (docs/DESIGN.md, per-frame step 5): one query pixel at a time,
float64, bilinear sampling written out. Slow and obviously correct: it is what every
implementation is tested against (``tests/test_attention_matrix.py``), not what any backend runs.

Implementations (docs/RESULTS.md, "Exactness"): :func:`mast.core.attention.roi_memory_attention` (the
reference, tiled, CPU), ``mast.training.attention.batched_memory_attention`` (batched,
differentiable), ``memory_read.onnx`` (:mod:`mast.export.memory_graph`, standard ONNX operators)
and the fused Triton kernel (:mod:`mast.plugins.roi_kernel`, also inside the TensorRT plugin).
They share the rule of which branch a memory frame takes and its dilation
(:meth:`AttentionConfig.uses_roi`, :meth:`AttentionConfig.dilation`) and the numerical constants
:data:`mast.core.config.EXP_FLOOR` and :data:`mast.core.config.NO_SCORE` (torch-free, for the
kernel and the graph).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from mast.core.config import AttentionConfig

def bilinear(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` ``[C, h, w]`` at pixel coordinates (ys, xs) ``[N]`` (position (y, x) is feature
    pixel (y, x)), zeros outside the frame: ``[C, N]``."""
    c, h, w = x.shape
    y0, x0 = ys.floor(), xs.floor()
    out = torch.zeros(c, ys.numel(), dtype=x.dtype)
    for cy in (0, 1):
        for cx in (0, 1):
            yy, xx = y0 + cy, x0 + cx
            wgt = (1 - (ys - yy).abs()) * (1 - (xs - xx).abs())
            ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
            vals = x[:, yy.clamp(0, h - 1).long(), xx.clamp(0, w - 1).long()]
            out += vals * (wgt * ok)[None]
    return out


def specified_attention(query: torch.Tensor, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor],
                        distances: Sequence[int], cfg: AttentionConfig = AttentionConfig()) -> torch.Tensor:
    """docs/DESIGN.md step 5 literally: the label distribution ``[L, h, w]`` float64 of ``query``
    ``[C, h, w]`` read from memory frames (``keys`` ``[C, h, w]``, ``values`` ``[L, h, w]``, frame
    ``distances`` d >= 1).

    Per query pixel p and memory frame at distance d: the (2R+1)^2 window around p, or, when
    ``cfg.uses_roi(d)``, around p + o_p where o_p is the soft-argmax of the coarse search
    p + gamma k (gamma = ``cfg.dilation(d)``); candidates are sampled bilinearly, zeros outside the
    frame (score 0, value 0). One softmax over the candidates of all memory frames.
    """
    query = query.double()
    keys = [k.double() for k in keys]
    values = [v.double() for v in values]
    _, h, w = query.shape
    r = cfg.radius
    ky, kx = torch.meshgrid(torch.arange(-r, r + 1.0, dtype=torch.float64),
                            torch.arange(-r, r + 1.0, dtype=torch.float64), indexing="ij")
    ky, kx = ky.reshape(-1), kx.reshape(-1)
    out = torch.zeros(values[0].shape[0], h, w, dtype=torch.float64)
    for py in range(h):
        for px in range(w):
            q = query[:, py, px]
            scores, vals = [], []
            for k, v, d in zip(keys, values, distances):
                cy, cx = float(py), float(px)
                if cfg.uses_roi(d):
                    g = cfg.dilation(d)
                    p = torch.softmax(q @ bilinear(k, py + g * ky, px + g * kx), 0)
                    cy, cx = py + g * float((p * ky).sum()), px + g * float((p * kx).sum())
                scores.append(q @ bilinear(k, cy + ky, cx + kx))
                vals.append(bilinear(v, cy + ky, cx + kx))
            p = torch.softmax(torch.cat(scores), 0)
            out[:, py, px] = torch.cat(vals, 1) @ p
    return out
