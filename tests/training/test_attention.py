"""The training attention equals the inference semantics (oracle, core function) and is differentiable."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from mast.core.attention import roi_memory_attention
from mast.core.config import AttentionConfig
from mast.training.attention import batched_memory_attention

_ORACLE = Path(__file__).resolve().parents[1] / "core" / "oracle.py"


def _oracle():
    spec = importlib.util.spec_from_file_location("mast_test_oracle", _ORACLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.oracle_attention


def _inputs(b=2, c=8, h=9, w=11, m=3, labels=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(b, c, h, w, generator=g, dtype=dtype) * 0.5
    k = torch.randn(b, m, c, h, w, generator=g, dtype=dtype) * 0.5
    v = torch.rand(b, m, labels, h, w, generator=g, dtype=dtype)
    return q, k, v


# per sample: ROI with dilation 3 and 2, local; local, ROI with dilation 3, local (d = 1)
DISTANCES = torch.tensor([[40, 16, 3], [14, 31, 1]])


@pytest.mark.parametrize("chunk_bytes", [2000, 1 << 26])
def test_equals_oracle_per_sample(chunk_bytes):
    """float64, mixed local / ROI references per sample, chunked or not: equal to 1e-12."""
    oracle = _oracle()
    cfg = AttentionConfig(radius=3)
    q, k, v = _inputs()
    out = batched_memory_attention(q, k, v, DISTANCES, cfg, chunk_bytes=chunk_bytes)
    for b in range(q.shape[0]):
        ref = oracle(q[b], list(k[b]), list(v[b]), DISTANCES[b].tolist(), cfg)
        assert torch.allclose(out[b], ref, atol=1e-12, rtol=0)


def test_tall_map_in_row_chunks_equals_oracle():
    """Chunks of a few rows read only the key rows their candidates reach (R around them, or the
    coarse search and an offset of up to gamma R for ROI): still equal to the oracle to 1e-12."""
    oracle = _oracle()
    cfg = AttentionConfig(radius=2)
    q, k, v = _inputs(h=40, w=6, m=3, seed=4)
    k = k * 3.0   # peaked coarse softmax: offsets of several rows
    d = torch.tensor([[50, 20, 2], [1, 33, 4]])
    out = batched_memory_attention(q, k, v, d, cfg, chunk_bytes=30 * 2 * 40 * 6 * 8)   # 30 pixels (5 rows) a chunk
    for b in range(q.shape[0]):
        ref = oracle(q[b], list(k[b]), list(v[b]), d[b].tolist(), cfg)
        assert torch.allclose(out[b], ref, atol=1e-12, rtol=0)


def test_equals_core_function(tol):
    """Against ``mast.core.attention.roi_memory_attention`` (training radius 6): equal to 1e-12 in
    float64; in float32 (what training runs) within the float32 rounding bound of the read
    (tests/tolerance.py: both evaluations' score rounding carried through the softmax and, for the
    ROI reads, through the soft-argmax offset), whatever CPU sums the products."""
    cfg = AttentionConfig(radius=6)
    q, k, v = _inputs(h=20, w=17, c=16, seed=1)
    d = torch.tensor([[45, 40, 5], [30, 12, 2]])
    for dtype in (torch.float64, torch.float32):
        out = batched_memory_attention(q.to(dtype), k.to(dtype), v.to(dtype), d, cfg)
        for b in range(q.shape[0]):
            with torch.no_grad():
                ref = roi_memory_attention(q[b], list(k[b]), list(v[b]), d[b].tolist(), cfg)
            roi = [(k[b, i], min(cfg.max_dilation, x // cfg.dilation_step + 1))
                   for i, x in enumerate(d[b].tolist()) if x > cfg.roi_threshold]
            atol = 1e-12 if dtype == torch.float64 else tol.read_atol(q[b], k[b], 3 * 13 ** 2, roi=roi,
                                                                       radius=cfg.radius)
            assert (out[b].double() - ref).abs().max().item() <= atol, (dtype, b)


@pytest.mark.parametrize("distances", [[[3, 1]], [[20, 2]], [[40, 35]]], ids=["local", "roi+local", "roi"])
def test_gradients_are_exact(distances):
    """Autograd gradients w.r.t. query, keys and values match finite differences (float64),
    through the restricted window and through the ROI soft-argmax and bilinear weights."""
    cfg = AttentionConfig(radius=2)
    q, k, v = _inputs(b=1, c=2, h=5, w=5, m=2, labels=1, seed=2)
    d = torch.tensor(distances)
    inputs = tuple(x.clone().requires_grad_() for x in (q, k, v))
    assert torch.autograd.gradcheck(lambda *x: batched_memory_attention(*x, d, cfg), inputs, eps=1e-6, atol=1e-5)


def test_roi_offsets_carry_gradient():
    """A ROI reference's keys get gradient through the soft-argmax offset: with near-uniform
    coarse scores (small query) the offset is ~0 and the fine window of pixel (6, 6) spans rows and
    columns 4..8, so key (3, 3) (= (6, 6) + gamma * (-1, -1), gamma 3) is seen by the coarse search
    only, and still receives gradient."""
    cfg = AttentionConfig(radius=1)
    q, k, v = _inputs(b=1, c=4, h=12, w=12, m=1, labels=1, seed=3)
    k = k.requires_grad_()
    out = batched_memory_attention(q * 0.05, k, v, torch.tensor([[40]]), cfg)  # gamma = 40 // 15 + 1 = 3
    (grad,) = torch.autograd.grad(out[0, 0, 6, 6], k)
    assert grad[0, 0, :, 3, 3].abs().sum() > 0
    local = batched_memory_attention(q * 0.05, k, v, torch.tensor([[3]]), cfg)
    (grad_local,) = torch.autograd.grad(local[0, 0, 6, 6], k)
    assert grad_local[0, 0, :, 3, 3].abs().sum() == 0  # restricted window: (3, 3) is not a candidate
