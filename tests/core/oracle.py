"""Naive, obviously-correct ROI memory attention (float64, one query pixel at a time): the test oracle."""
from __future__ import annotations

import torch

from mast.core.config import AttentionConfig


def bilinear(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """Sample ``x`` ``[C, h, w]`` at pixel coordinates (ys, xs) ``[N]``, zeros outside: ``[C, N]``."""
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


def oracle_attention(query, keys, values, distances, cfg: AttentionConfig) -> torch.Tensor:
    """docs/DESIGN.md step 5 literally: ``[L, h, w]`` float64."""
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
                if d > cfg.roi_threshold:
                    g = min(cfg.max_dilation, d // cfg.dilation_step + 1)
                    coarse = q @ bilinear(k, py + g * ky, px + g * kx)
                    p = torch.softmax(coarse, 0)
                    cy, cx = py + g * float((p * ky).sum()), px + g * float((p * kx).sum())
                scores.append(q @ bilinear(k, cy + ky, cx + kx))
                vals.append(bilinear(v, cy + ky, cx + kx))
            p = torch.softmax(torch.cat(scores), 0)
            out[:, py, px] = torch.cat(vals, 1) @ p
    return out
