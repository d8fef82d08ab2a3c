"""One test matrix: every implementation of the ROI memory attention against its specification
(:mod:`mast.core.attention_spec`, docs/DESIGN.md step 5) on the same random banks.

| implementation | module | runs in |
|---|---|---|
| reference | ``mast.core.attention.roi_memory_attention(kernel="torch")`` | autograd, float64, parity checks |
| fused C kernel | ``mast.core.attention_native`` (``roi_memory_attention``'s default on CPU) | torch backend on CPU |
| fused C kernel, numpy | ``mast.core.attention_c.memory_read`` (torch-free; label ids one-hot in numpy) | onnxruntime backend on CPU |
| batched, differentiable | ``mast.training.attention.batched_memory_attention`` | training, held-out loss |
| ``memory_read.onnx`` | ``mast.export.memory_graph`` (standard ONNX operators) | onnxruntime backend |
| fused kernel | ``mast.plugins.roi_kernel`` (Triton; here under ``TRITON_INTERPRET=1`` without a GPU) | torch backend on CUDA, the TensorRT plugin |

The CPU implementations of ``mast.core`` are also swept over shapes (lane-block and row-block
edges, windows larger than the map, both branches, 1 to 5 labels, 1 to 64 key channels).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mast.core.attention import roi_memory_attention
from mast.core.attention_spec import specified_attention
from mast.core.config import AttentionConfig

C, L, H, W = 8, 3, 9, 11
CFG = AttentionConfig(radius=3, tile=4, band_tiles=1)   # threshold 15, dilation step 15, at most 4
ATOL = 1e-4   # float32 implementations against the float64 specification

# restricted windows only; both branches (15: window, 16: ROI with dilation 2); dilations 3 and 4
BANKS = {"windows": [1, 3, 5], "threshold": [15, 16, 2], "dilations": [31, 46, 1, 61]}


def _bank(distances: list[int], seed: int):
    """Query ``[C, h, w]``, keys ``[M, C, h, w]`` (correlated with the query), label ids ``[M, h, w]``."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(C, H, W, generator=g) * 0.7
    keys = (q + torch.randn(len(distances), C, H, W, generator=g)) * 0.7
    labels = torch.randint(0, L, (len(distances), H, W), generator=g)
    return q, keys, labels


def _one_hot(labels: torch.Tensor) -> torch.Tensor:
    """``[M, h, w]`` ids -> ``[M, L, h, w]`` float32 one-hot."""
    return (labels[:, None] == torch.arange(L)[None, :, None, None]).float()


def _core(q, keys, labels, distances, device):
    return roi_memory_attention(q, list(keys), list(_one_hot(labels)), distances, CFG, kernel="torch")


def _fused(q, keys, labels, distances, device):
    _need_fused()
    return roi_memory_attention(q, list(keys), list(_one_hot(labels)), distances, CFG, kernel="fused")


def _fused_numpy(q, keys, labels, distances, device):
    _need_fused()
    from mast.core.attention_c import memory_read, one_hot

    values = [one_hot(ids, L) for ids in labels.numpy()]
    return torch.from_numpy(memory_read(q.numpy(), list(keys.numpy()), values, distances, CFG, threads=2))


def _need_fused() -> None:
    from mast.core.attention_c import available

    reason = available()
    if reason is not None:
        pytest.skip(reason)


def _training(q, keys, labels, distances, device):
    from mast.training.attention import batched_memory_attention

    return batched_memory_attention(q[None], keys[None], _one_hot(labels)[None], torch.tensor([distances]), CFG)[0]


def _onnx(q, keys, labels, distances, device):
    import onnxruntime as ort

    from mast.export.memory_graph import ReadSpec
    from mast.export.onnx_export import memory_model

    spec = ReadSpec(H, W, C, len(distances), len(distances), L, CFG)
    session = ort.InferenceSession(memory_model(spec, 17, 8).SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"query": q[None].numpy(), "keys": keys.numpy(), "labels": labels.numpy().astype(np.int64),
             "distances": np.asarray(distances, np.int64)}
    return torch.from_numpy(session.run(None, feeds)[0])


def _triton(q, keys, labels, distances, device):
    pytest.importorskip("triton")
    from mast.plugins.roi_launch import roi_attention

    d = torch.tensor(distances, dtype=torch.int32, device=device)
    return roi_attention(q.to(device), keys.to(device), labels.to(device, torch.int32), d, L, CFG,
                         tile=(8, 16)).cpu()


IMPLEMENTATIONS = {"core": _core, "fused": _fused, "fused-numpy": _fused_numpy, "training": _training, "onnx": _onnx, "triton": _triton}


@pytest.fixture(scope="module")
def specified() -> dict[str, torch.Tensor]:
    out = {}
    for i, (name, distances) in enumerate(BANKS.items()):
        q, keys, labels = _bank(distances, seed=i)
        out[name] = specified_attention(q, list(keys), list(_one_hot(labels)), distances, CFG)
    return out


@pytest.mark.parametrize("bank", list(BANKS))
@pytest.mark.parametrize("implementation", list(IMPLEMENTATIONS))
def test_implementation_meets_the_specification(implementation, bank, specified, device):
    distances = BANKS[bank]
    q, keys, labels = _bank(distances, seed=list(BANKS).index(bank))
    got = IMPLEMENTATIONS[implementation](q, keys, labels, distances, device)
    want = specified[bank]
    assert got.shape == want.shape
    torch.testing.assert_close(got.double(), want, atol=ATOL, rtol=0)


# (channels, labels, h, w, radius, distances): 16-pixel lane blocks and 4-row blocks cut at odd
# places, windows wider than the map, the largest radius the fused kernel takes (31), key channels
# other than 64 (56: the compact encoder), the default schedule's branches and dilations, the radii
# of --radius 5 and 8 (the last, narrower column block of every width; ROI cells of 3, 7, 9 and 15)
SWEEP = [
    (1, 1, 1, 1, 1, [1, 16]),
    (62, 2, 11, 27, 5, [1, 20]),
    (62, 3, 19, 45, 8, [3, 40]),
    (5, 2, 4, 17, 2, [16, 1]),
    (56, 3, 7, 9, 3, [60, 55, 1, 3, 5]),
    (12, 5, 13, 33, 4, [31, 2]),
    (3, 4, 17, 23, 12, [1, 46]),
    (64, 2, 6, 40, 31, [1, 20]),
]


@pytest.mark.parametrize("kernel", ["torch", "fused", "fused-numpy"])
@pytest.mark.parametrize("shape", SWEEP, ids=lambda s: "C{}-L{}-{}x{}-R{}".format(*s[:5]))
def test_cpu_implementations_over_shapes(kernel, shape):
    c, n_labels, h, w, r, distances = shape
    if kernel != "torch":
        _need_fused()
    cfg = AttentionConfig(radius=r, tile=4, band_tiles=1)
    g = torch.Generator().manual_seed(c * 100 + h)
    q = torch.randn(c, h, w, generator=g) * (2.0 / c) ** 0.5 * 2
    keys = [(q + torch.randn(c, h, w, generator=g)) * 0.7 for _ in distances]
    values = [torch.rand(n_labels, h, w, generator=g) for _ in distances]   # not one-hot: any values
    if kernel == "fused-numpy":
        from mast.core.attention_c import memory_read

        got = torch.from_numpy(memory_read(q.numpy(), [k.numpy() for k in keys], [v.numpy() for v in values],
                                           distances, cfg))
    else:
        got = roi_memory_attention(q, keys, values, distances, cfg, kernel=kernel)
    want = specified_attention(q, keys, values, distances, cfg)
    assert got.shape == want.shape == (n_labels, h, w)
    torch.testing.assert_close(got.double(), want, atol=ATOL, rtol=0)
