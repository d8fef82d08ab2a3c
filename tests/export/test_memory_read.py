"""memory_read.onnx (and its eager torch twin) against the reference ROI memory attention."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from mast.core.attention import roi_memory_attention
from mast.core.config import AttentionConfig, MemoryConfig
from mast.export.memory_graph import MemoryRead, ReadSpec, phase_tables
from mast.export.onnx_export import memory_model

S, C, L = 7, 8, 4
U = 2.0 ** -24   # float32 unit roundoff


def _bank(h: int, w: int, seed: int, scale: float = 1.0):
    """Query ``[1, C, h, w]``, keys ``[S, C, h, w]`` (correlated with the query), labels ``[S, h, w]``."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, C, h, w, generator=g)
    keys = (q + torch.randn(S, C, h, w, generator=g)) * scale
    labels = torch.randint(0, L - 1, (S, h, w), generator=g)
    return q, keys, labels


def _reference(q, keys, labels, distances, cfg: AttentionConfig) -> torch.Tensor:
    used = [i for i, d in enumerate(distances) if d > 0]
    values = [(labels[i][None] == torch.arange(L)[:, None, None]).to(q.dtype) for i in used]
    return roi_memory_attention(q[0], [keys[i] for i in used], values, [distances[i] for i in used], cfg)


def _exact_and_bound(q, keys, labels, distances, cfg: AttentionConfig) -> tuple[np.ndarray, float]:
    """The read in float64 and the error a float32 implementation may have against it, derived
    from float32 rounding (so that it holds on AVX2, AVX-512 and AMX CPUs alike, whatever order
    their kernels sum in):

    - scores: a float32 dot product of C terms is the exact one of inputs perturbed by at most
      C*u (relative); the float64 read's largest change under such perturbations (three random
      draws, x4 for the directions not drawn) covers the scores, the ROI offsets they move and
      the bilinear blend;
    - sums: the prediction is a ratio of two sums of n non-negative terms (n candidates of the
      read slots), each within (n - 1)*u relative of its exact value; outputs lie in [0, 1].
    """
    q64, k64 = q.double(), keys.double()
    exact = _reference(q64, k64, labels, distances, cfg)
    g = torch.Generator().manual_seed(0)
    rel, moved = q.shape[1] * U, 0.0
    for _ in range(3):
        qp = q64 * (1 + rel * (2 * torch.rand(q64.shape, generator=g, dtype=torch.float64) - 1))
        kp = k64 * (1 + rel * (2 * torch.rand(k64.shape, generator=g, dtype=torch.float64) - 1))
        moved = max(moved, (_reference(qp, kp, labels, distances, cfg) - exact).abs().max().item())
    n = sum(d > 0 for d in distances) * (2 * cfg.radius + 1) ** 2
    return exact.numpy(), 4 * moved + 2 * n * U


def _run(session, q, keys, labels, distances) -> np.ndarray:
    return session.run(None, {"query": q.numpy(), "keys": keys.numpy(), "labels": labels.numpy(),
                              "distances": np.array(distances, np.int64)})[0]


def _session(spec: ReadSpec) -> ort.InferenceSession:
    model = memory_model(spec, 17, 8)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


DISTANCES = [
    [1, 3, 5, 0, 0, 0, 0],        # restricted windows only, empty slots
    [16, 15, 0, 2, 0, 0, 0],      # both sides of the threshold (15: window, 16: ROI, dilation 2)
    [29, 30, 44, 45, 100, 0, 0],  # dilations 2, 3, 3, 4, 4 (capped)
    [0, 0, 0, 0, 0, 0, 7],        # one slot, the last one
    [0, 60, 0, 17, 1, 0, 4],      # unsorted, gaps between the read slots
]


@pytest.fixture(scope="module")
def real_radius() -> tuple[ReadSpec, ort.InferenceSession]:
    """R = 12 on a 17x23 map: every window crosses a border."""
    spec = ReadSpec(17, 23, C, S, 5, L, AttentionConfig())
    return spec, _session(spec)


@pytest.fixture(scope="module")
def small_radius() -> tuple[ReadSpec, ort.InferenceSession]:
    """R = 3, tile 4, one tile row per band: interior windows, tiles cut by the map's edge."""
    spec = ReadSpec(21, 26, C, S, 5, L, AttentionConfig(radius=3, tile=4, band_tiles=1))
    return spec, _session(spec)


@pytest.mark.parametrize("distances", DISTANCES)
@pytest.mark.parametrize("which", ["real_radius", "small_radius"])
def test_onnx_matches_reference(which, distances, request):
    spec, session = request.getfixturevalue(which)
    q, keys, labels = _bank(spec.height, spec.width, seed=sum(distances), scale=1.5)
    got = _run(session, q, keys, labels, distances)
    want, bound = _exact_and_bound(q, keys, labels, distances, spec.attention)
    assert got.shape == (L, spec.height, spec.width)
    assert np.abs(got - want).max() <= bound


@pytest.mark.parametrize("channels", [56, 64])
def test_onnx_key_channels_are_a_parameter(channels):
    """The key width C is ReadSpec.key_dim (the compact encoder's keys have 56 channels)."""
    spec = ReadSpec(13, 18, channels, S, 5, L, AttentionConfig(radius=3, tile=4, band_tiles=1))
    session = _session(spec)
    g = torch.Generator().manual_seed(channels)
    q = torch.randn(1, channels, spec.height, spec.width, generator=g) * 0.4
    keys = (q + 0.5 * torch.randn(S, channels, spec.height, spec.width, generator=g)) * 0.4
    labels = torch.randint(0, L - 1, (S, spec.height, spec.width), generator=g)
    distances = [0, 60, 0, 17, 1, 0, 4]
    got = _run(session, q, keys, labels, distances)
    want, bound = _exact_and_bound(q, keys, labels, distances, spec.attention)
    assert np.abs(got - want).max() <= bound


def test_onnx_far_fractional_offsets(small_radius):
    """Peaked keys pull the ROI several pixels away, to fractional positions, past the map's edge."""
    spec, session = small_radius
    q, keys, labels = _bank(spec.height, spec.width, seed=3, scale=3.0)
    keys = torch.roll(keys, shifts=(3, -2), dims=(2, 3))
    distances = [45, 25, 0, 0, 1, 0, 0]
    want, bound = _exact_and_bound(q, keys, labels, distances, spec.attention)
    assert np.abs(_run(session, q, keys, labels, distances) - want).max() <= bound


@pytest.mark.parametrize("distances", DISTANCES[1:3])
def test_eager_twin_is_exact_in_float64(distances):
    """Same operations as the graph, in float64: equal to the reference up to rounding."""
    spec = ReadSpec(19, 30, C, S, 5, L, AttentionConfig(radius=4, tile=4, band_tiles=2))
    q, keys, labels = _bank(spec.height, spec.width, seed=5, scale=3.0)
    q, keys = q.double(), keys.double()
    with torch.no_grad():
        got = MemoryRead(spec)(q, keys, labels, torch.tensor(distances))
    want = _reference(q, keys, labels, distances, spec.attention)
    assert (got - want).abs().max() < 1e-9


def test_outputs_are_distributions_with_zero_unused_channels(real_radius):
    spec, session = real_radius
    q, keys, labels = _bank(spec.height, spec.width, seed=1)
    labels = labels.clamp(max=1)  # two labels used of L = 4
    got = session.run(None, {"query": q.numpy(), "keys": keys.numpy(), "labels": labels.numpy(),
                             "distances": np.array([1, 20, 0, 0, 0, 0, 0], np.int64)})[0]
    assert (got >= 0).all() and (got.sum(0) <= 1 + 1e-5).all()
    assert np.abs(got[2:]).max() == 0


def test_graph_uses_standard_operators_only(real_radius):
    spec, _ = real_radius
    model = memory_model(spec, 17, 8)
    assert {o.domain for o in model.opset_import} == {""} and model.opset_import[0].version == 17
    assert model.ir_version == 8
    onnx.checker.check_model(model)


def test_spec_for_the_default_schedule():
    spec = ReadSpec.for_config((120, 214), MemoryConfig(), AttentionConfig(), 16)
    assert (spec.n_slots, spec.reads, spec.max_labels) == (7, 5, 16)


@pytest.mark.parametrize("h, w, t, r", [(17, 23, 8, 12), (5, 6, 8, 12), (30, 54, 4, 3), (120, 214, 8, 12)])
def test_phase_tables_place_every_pixel_once(h, w, t, r):
    ph = phase_tables(h, w, t, r, 4)
    for g in range(ph.ksrc.shape[0]):
        gamma = g + 2
        assert (ph.qsrc[g][ph.pos[g]] == np.arange(h * w)).all()          # each pixel in one tile
        shown = ph.ksrc[g][ph.ksrc[g] < h * w]
        assert np.array_equal(np.sort(shown), np.arange(h * w))           # and once on the key mosaic
        mosaic = ph.ksrc[g].reshape(ph.hm, ph.wm)
        for k in range(ph.n_tiles):                                       # a tile shows its mosaic cells
            cells = mosaic[ph.top[g, k]:ph.top[g, k] + t, ph.left[g, k]:ph.left[g, k] + t]
            tile = ph.qsrc[g].reshape(-1, t, t)[k]
            assert (tile == h * w).all() or np.array_equal(cells, tile)
        y, x = np.divmod(np.arange(h * w), w)                             # dilated neighbours stay in the phase grid
        my, mx = np.divmod(np.nonzero(ph.ksrc[g] < h * w)[0], ph.wm)
        frame = ph.ksrc[g][ph.ksrc[g] < h * w]
        right = {(a, b): f for a, b, f in zip(my, mx, frame)}
        for a, b, f in list(zip(my, mx, frame))[:: max(1, h * w // 200)]:
            if (a, b + 1) in right:
                assert right[(a, b + 1)] == f + gamma
