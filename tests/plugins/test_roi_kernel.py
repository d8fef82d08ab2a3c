"""The fused Triton ROI attention kernel against the reference ``roi_memory_attention``.

Small maps and small radii keep Triton's interpreter fast on CPU; one case runs the real radius."""
from __future__ import annotations

import pytest
import torch

from mast.core.attention import roi_memory_attention
from mast.core.config import AttentionConfig
from mast.core.errors import InputError
from mast.plugins.roi_launch import roi_attention

# R = 2, ROI from d = 4 on, dilation min(3, d // 4 + 1): both branches and dilations 2 and 3
SMALL = AttentionConfig(radius=2, roi_threshold=3, dilation_step=4, max_dilation=3, tile=4)


def _bank(s: int, c: int, h: int, w: int, n_labels: int, seed: int):
    """Query ``[C, h, w]``, keys ``[S, C, h, w]`` (correlated with the query), label ids ``[S, h, w]``."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(c, h, w, generator=g)
    keys = q + torch.randn(s, c, h, w, generator=g)
    labels = torch.randint(0, n_labels, (s, h, w), generator=g, dtype=torch.int32)
    return q, keys, labels


def _reference(q, keys, labels, distances, n_labels, cfg) -> torch.Tensor:
    used = [i for i, d in enumerate(distances) if d > 0]
    values = [(labels[i][None].long() == torch.arange(n_labels)[:, None, None]).float() for i in used]
    return roi_memory_attention(q, [keys[i] for i in used], values, [distances[i] for i in used], cfg)


def _assert_reads(got, q, keys, labels, distances, n_labels, cfg, tol) -> None:
    """``got`` (the kernel, float32 accumulation) against the reference evaluated in float64 on the same
    inputs, within the float32 rounding bound of the read (tests/tolerance.py), on any CPU or GPU."""
    want = _reference(q.double(), keys.double(), labels, distances, n_labels, cfg)
    used = [i for i, d in enumerate(distances) if d > 0]
    roi = [(keys[i], min(cfg.max_dilation, d // cfg.dilation_step + 1))
           for i, d in enumerate(distances) if d > cfg.roi_threshold]
    atol = tol.read_atol(q, keys[used], len(used) * (2 * cfg.radius + 1) ** 2, roi=roi, radius=cfg.radius)
    torch.testing.assert_close(got.double(), want, atol=atol, rtol=0)


def _kernel(q, keys, labels, distances, n_labels, cfg, device, **kw) -> torch.Tensor:
    d = torch.tensor(distances, dtype=torch.int32, device=device)
    return roi_attention(q.to(device), keys.to(device), labels.to(device), d, n_labels, cfg, **kw).cpu()


# slot counts 1 .. 7; restricted windows (d <= 3), ROI (d >= 4, dilations 2 and 3), empty slots
SLOT_DISTANCES = [
    [2],
    [9, 1],
    [0, 5, 3],
    [1, 0, 12, 0],
    [4, 1, 0, 3, 8],
    [1, 2, 3, 0, 7, 30],
    [1, 3, 5, 0, 0, 6, 1],
]


@pytest.mark.parametrize("distances", SLOT_DISTANCES, ids=lambda d: f"{len(d)}slots")
def test_slot_counts(distances, device, tol):
    q, keys, labels = _bank(len(distances), 8, 9, 11, 4, seed=len(distances))
    got = _kernel(q, keys, labels, distances, 4, SMALL, device, tile=(8, 16))
    _assert_reads(got, q, keys, labels, distances, 4, SMALL, tol)


@pytest.mark.parametrize("h, w", [(1, 6), (5, 7), (6, 3), (13, 4)])
@pytest.mark.parametrize("distances", [[2, 1], [6, 0, 13]], ids=["window", "roi"])
def test_odd_sizes_and_borders(h, w, distances, device, tol):
    q, keys, labels = _bank(len(distances), 5, h, w, 3, seed=h * w)
    got = _kernel(q, keys, labels, distances, 3, SMALL, device, tile=(8, 8))
    _assert_reads(got, q, keys, labels, distances, 3, SMALL, tol)


@pytest.mark.parametrize("n_labels", [1, 2, 17, 255])
def test_label_counts(n_labels, device, tol):
    distances = [1, 7]
    q, keys, labels = _bank(2, 8, 7, 9, n_labels, seed=n_labels)
    got = _kernel(q, keys, labels, distances, n_labels, SMALL, device, tile=(8, 8))
    assert got.shape == (n_labels, 7, 9)
    _assert_reads(got, q, keys, labels, distances, n_labels, SMALL, tol)


def test_fp16_keys_accumulate_in_fp32(device, tol):
    distances = [3, 0, 9, 1]
    q, keys, labels = _bank(4, 16, 8, 10, 5, seed=3)
    q, keys = q.half(), keys.half()
    got = _kernel(q, keys, labels, distances, 5, SMALL, device, tile=(8, 16))
    _assert_reads(got, q, keys, labels, distances, 5, SMALL, tol)


def test_several_programs_and_int64_labels(device, tol):
    """Tiles of 4x4 pixels (those of the last row and column partial) and int64 label maps."""
    distances = [5, 2]
    q, keys, labels = _bank(2, 8, 7, 9, 3, seed=5)
    got = _kernel(q, keys, labels.long(), distances, 3, SMALL, device, tile=(4, 4))
    _assert_reads(got, q, keys, labels, distances, 3, SMALL, tol)


def test_real_radius(device, tol):
    """R = 12 (the default configuration) on a map smaller than the window: a restricted window at
    d = 1 and an ROI read with dilation 2 at d = 20."""
    cfg = AttentionConfig()
    distances = [1, 20]
    q, keys, labels = _bank(2, 8, 6, 7, 3, seed=12)
    got = _kernel(q, keys, labels, distances, 3, cfg, device, tile=(8, 8))
    _assert_reads(got, q, keys, labels, distances, 3, cfg, tol)


def test_no_slot_read_gives_zeros(device):
    q, keys, labels = _bank(3, 4, 5, 5, 2, seed=0)
    got = _kernel(q, keys, labels, [0, 0, -1], 2, SMALL, device)
    assert torch.equal(got, torch.zeros(2, 5, 5))


@pytest.mark.parametrize("change, needle", [
    ({"labels": torch.zeros(2, 5, 6, dtype=torch.int32)}, "bank shapes disagree"),
    ({"query": torch.zeros(4, 5, 5, dtype=torch.float16)}, "expected both float32 or both float16"),
    ({"distances": torch.zeros(3, dtype=torch.int64)}, "distances torch.int64"),
    ({"n_labels": 0}, "n_labels 0"),
    ({"tile": (4, 6)}, "tile \\(4, 6\\)"),
    ({"out": torch.zeros(2, 5, 4)}, "expected contiguous float32"),
])
def test_bad_arguments_are_refused(change, needle):
    q, keys, labels = _bank(3, 4, 5, 5, 2, seed=0)
    args = {"query": q, "keys": keys, "labels": labels, "distances": torch.ones(3, dtype=torch.int32), "n_labels": 2}
    with pytest.raises(InputError, match=needle):
        roi_attention(**{**args, **change})
