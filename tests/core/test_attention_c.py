"""The fused kernel's bank (mast.core.attention_c.FusedBank): slots laid out once per write and
reused, widened when a read needs more padding, re-laid out after a write; every read equal to a
fresh one-shot read (memory_read) bit for bit and to the oracle."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mast.core import attention_c
from mast.core.config import AttentionConfig

from .oracle import oracle_attention

CFG = AttentionConfig(radius=3)


@pytest.fixture(autouse=True)
def _need_fused() -> None:
    if (reason := attention_c.available()) is not None:
        pytest.skip(reason)


def _maps(rng: np.random.Generator, n: int, c: int = 8, h: int = 9, w: int = 13, labels: int = 3):
    keys = [rng.standard_normal((c, h, w), dtype=np.float32) for _ in range(n)]
    values = [rng.random((labels, h, w), dtype=np.float32) for _ in range(n)]
    return keys, values


def test_bank_reads_equal_one_shot_reads_across_writes_and_growing_dilation():
    """A tracker's life in miniature: the long-term slot 0 read first through the restricted window,
    then through ROI localisation at growing dilation (its layout widened once, for the largest), two ROI frames in
    one read (their coarse searches and fine windows shared out together), the short-term
    slots rewritten between reads (their layouts redone), one slot rewritten with new contents of
    the same shape: every read equals memory_read on the same maps, bit for bit, and the oracle."""
    rng = np.random.default_rng(0)
    keys, values = _maps(rng, 3)
    bank = attention_c.FusedBank(3, CFG, threads=2)
    for slot in range(3):
        bank.write(slot, keys[slot], values[slot])
    schedule = [[2, 1, 3], [20, 1, 3], [20, 2, 4], [35, 1, 3], [50, 2, 4], [50, 20, 1], [3, 1, 2]]
    for step, distances in enumerate(schedule):
        if step:
            slot = 1 + step % 2                       # a short-term slot gets a new frame
            keys[slot], values[slot] = (x[0] for x in _maps(rng, 1))
            bank.write(slot, keys[slot], values[slot])
        query = rng.standard_normal(keys[0].shape, dtype=np.float32)
        got = bank.read(query, [0, 1, 2], distances)
        np.testing.assert_array_equal(got, attention_c.memory_read(query, keys, values, distances, CFG, threads=2))
        want = oracle_attention(torch.from_numpy(query), [torch.from_numpy(k) for k in keys],
                                [torch.from_numpy(v) for v in values], distances, CFG)
        np.testing.assert_allclose(got, want.numpy(), atol=2e-5)
    assert bank._laid[0].pad == CFG.max_dilation * CFG.radius + CFG.radius + attention_c._library().mast_cell(CFG.radius) + 2


def test_a_slot_rewritten_in_place_is_laid_out_again():
    """The torch bank writes into the same array each time and calls write again: the next read
    sees the new contents (the layout is not keyed on the array's identity)."""
    rng = np.random.default_rng(1)
    keys, values = _maps(rng, 2)
    bank = attention_c.FusedBank(2, CFG, threads=1)
    for slot in range(2):
        bank.write(slot, keys[slot], values[slot])
    query = rng.standard_normal(keys[0].shape, dtype=np.float32)
    before = bank.read(query, [0, 1], [1, 20])
    keys[1][:] = rng.standard_normal(keys[1].shape, dtype=np.float32)   # in place, same array
    bank.write(1, keys[1], values[1])
    after = bank.read(query, [0, 1], [1, 20])
    assert not np.array_equal(before, after)
    np.testing.assert_array_equal(after, attention_c.memory_read(query, keys, values, [1, 20], CFG, threads=1))


def test_bad_reads_are_value_errors():
    rng = np.random.default_rng(2)
    keys, values = _maps(rng, 2)
    bank = attention_c.FusedBank(2, CFG)
    bank.write(0, keys[0], values[0])
    with pytest.raises(ValueError, match="1 never written"):
        bank.read(keys[0], [0, 1], [1, 2])
    with pytest.raises(ValueError, match="one distance each"):
        bank.read(keys[0], [0], [1, 2])
    with pytest.raises(ValueError, match="query"):
        bank.read(keys[0][:, :5], [0], [1])
    with pytest.raises(ValueError, match="one h, w"):
        bank.write(1, keys[1], values[1][:, :4])


def test_fine_window_shares_cover_every_group_once_in_about_equal_pixels():
    """The fine windows of several ROI frames split over threads: each group of each frame in exactly
    one share, shares within one group's size of an equal split of the pixels."""
    rng = np.random.default_rng(3)
    starts = [np.concatenate([[0], np.cumsum(rng.integers(1, 9, n))]).astype(np.int32) for n in (40, 7, 1)]
    for parts in (1, 2, 3, 5):
        shares = attention_c._balanced(starts, parts)
        seen = [np.zeros(st.size - 1, int) for st in starts]
        for share in shares:
            for k, g0, g1 in share:
                seen[k][g0:g1] += 1
        assert all((s == 1).all() for s in seen)
        pixels = [sum(int(starts[k][g1] - starts[k][g0]) for k, g0, g1 in share) for share in shares]
        assert len(shares) <= parts and max(pixels) - min(pixels) <= 2 * 8


def _bf16(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(x).bfloat16().float().numpy()


def test_pair_layouts_round_to_bf16_pairs():
    """mast_layout_pairs / mast_channels_last_pairs (any build): channels 2c, 2c + 1 as the low and
    high bf16 of one 32-bit element, rounded to nearest even as torch rounds; an odd channel count's
    last pair zero above; the padding zero."""
    lib = attention_c._library()
    rng = np.random.default_rng(7)
    c, h, w, pad, wp = 5, 3, 4, 2, 16
    x = (rng.standard_normal((c, h, w)) * 10.0 ** rng.integers(-3, 4, (c, h, w))).astype(np.float32)
    x[0, 0, 0], x[1, 0, 0] = np.inf, -0.0
    rows = np.zeros((h + 2 * pad, 3, wp), np.uint32)
    lib.mast_layout_pairs(x.ctypes.data, c, h, w, pad, pad, wp, 0, rows.shape[0], rows.ctypes.data)
    last = np.zeros((h * w, 3), np.uint32)
    lib.mast_channels_last_pairs(x.ctypes.data, c, h, w, 0, h * w, last.ctypes.data)
    halves = lambda u: np.stack([u & 0xFFFF, u >> 16], -1).astype(np.uint32) << 16   # noqa: E731
    want = np.concatenate([_bf16(x), np.zeros((1, h, w), np.float32)])           # [6, h, w]
    got = halves(rows[pad:pad + h, :, pad:pad + w]).view(np.float32)               # [h, 3, w, 2]
    np.testing.assert_array_equal(got.transpose(1, 3, 0, 2).reshape(6, h, w), want)
    np.testing.assert_array_equal(halves(last).view(np.float32).reshape(h, w, 6).transpose(2, 0, 1), want)
    rows[pad:pad + h, :, pad:pad + w] = 0
    assert not rows.any()


@pytest.mark.parametrize("c, labels, distances, radius", [(8, 3, [1, 3, 20], 3), (7, 2, [2, 40], 3),
                                                   (64, 4, [1, 50, 30], 3), (62, 2, [3, 40], 8)])
def test_bf16_pairs_read_bf16_keys_as_the_float32_read(c, labels, distances, radius, tol):
    """FusedBank(pairs=True) on keys that are bf16 values (what a bf16 encoder gives): products exact,
    float32 sums in another order: the float32 read's result to float32 rounding (the restricted
    window, the ROI branch, an odd channel count, several labels, --radius 8; tests/tolerance.py), and
    the oracle's."""
    if (reason := attention_c.bf16_available()) is not None:
        pytest.skip(f"no bf16 read here: {reason}")
    rng, cfg = np.random.default_rng(c), AttentionConfig(radius=radius)
    keys, values = _maps(rng, len(distances), c=c, h=11 + radius, w=21 + 2 * radius, labels=labels)
    keys = [_bf16(k / np.sqrt(c)) for k in keys]                     # scores of order 1, as the model's
    query = _bf16(rng.standard_normal(keys[0].shape, dtype=np.float32) / np.sqrt(c))
    pairs = attention_c.FusedBank(len(keys), cfg, threads=2, pairs=True)
    plain = attention_c.FusedBank(len(keys), cfg, threads=2)
    for slot, (k, v) in enumerate(zip(keys, values)):
        pairs.write(slot, k, v)
        plain.write(slot, k, v)
    got = pairs.read(query, list(range(len(keys))), distances)
    roi = [(k, cfg.dilation(d)) for k, d in zip(keys, distances) if cfg.uses_roi(d)]
    atol = tol.read_atol(query, np.stack(keys), len(keys) * (2 * radius + 1) ** 2, roi=roi, radius=radius)
    np.testing.assert_allclose(got, plain.read(query, list(range(len(keys))), distances), atol=atol, rtol=0)
    want = oracle_attention(torch.from_numpy(query), [torch.from_numpy(k) for k in keys],
                            [torch.from_numpy(v) for v in values], distances, cfg)
    np.testing.assert_allclose(got, want.numpy(), atol=atol, rtol=0)
    assert pairs._laid[0].key.dtype == np.uint32 and pairs._laid[0].key.shape[1] == (c + 1) // 2


def test_bf16_pairs_need_avx512_bf16(monkeypatch):
    """Without AVX512-BF16 the bf16 read is refused in one line (the torch backend then keeps the
    float32 read)."""
    monkeypatch.setattr(attention_c, "_cpu_flags", lambda: "flags : fpu avx2 fma")
    attention_c._bf16_library.cache_clear()
    try:
        assert "AVX512-BF16" in attention_c.bf16_available()
        with pytest.raises(attention_c.DependencyError, match="AVX512-BF16"):
            attention_c.FusedBank(2, CFG, pairs=True)
    finally:
        attention_c._bf16_library.cache_clear()
