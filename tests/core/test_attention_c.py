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
    assert bank._laid[0].pad == CFG.max_dilation * CFG.radius + CFG.radius + attention_c._cell(CFG.radius) + 2


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
