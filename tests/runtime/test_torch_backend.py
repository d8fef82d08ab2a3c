"""The torch backend's precisions: bf16 (folded norms, bf16 weights) tracks as fp32."""
from __future__ import annotations


import cv2
import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mast.core.attention import roi_memory_attention
from mast.core.encoder import LabKeys
from mast.core.errors import InputError
from mast.core.mobilenet import CompactEncoder
from mast.core.model import key_encoder
from mast.runtime.torch_backend import TorchBackend
from mast.runtime.tracker import Tracker

SIZE = (96, 176)



def test_bf16_tracks_as_well_as_fp32(demo_clip):
    """bf16 (weights in bf16, norms folded) tracks the bundled clip as accurately as fp32 against its
    ground truth. Not the same masks: the shipped colour-prior keys score ~1e3, so bf16's key
    rounding moves softmax weights, and the chaotic propagation drifts apart over frames (mask IoU
    bf16 vs fp32 0.82 after one step, ~0.6 after seven at this size; dev J&F 53.0 vs 53.4)."""
    from mast.core.masks import read_mask
    from mast.runtime.demo_clip import DEMO_MASK

    frames, mask = demo_clip(8, SIZE)
    truth = [cv2.resize(read_mask(DEMO_MASK.parent / f"{k:05d}.png"), SIZE[::-1], interpolation=cv2.INTER_NEAREST) > 0
             for k in range(8)]
    low, full = (Tracker(TorchBackend(key_encoder("model"), precision=p)) for p in ("bf16", "fp32"))
    low.start(frames[0], mask)
    full.start(frames[0], mask)
    scores = {"bf16": [], "fp32": []}
    for k, f in enumerate(frames[1:], 1):
        a, b = low.step(f) > 0, full.step(f) > 0
        scores["bf16"].append(_iou(a, truth[k]))
        scores["fp32"].append(_iou(b, truth[k]))
        if k == 1:  # one step from the same memory: only the keys' rounding differs
            assert _iou(a, b) > 0.75
    assert np.mean(scores["bf16"]) > np.mean(scores["fp32"]) - 0.05 and np.mean(scores["fp32"]) > 0.4
    assert not any(isinstance(m, nn.BatchNorm2d) for m in low.backend.encoder.modules())


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def test_fp32_runs_the_resnet_as_it_is_and_bad_precision_is_refused():
    encoder = key_encoder("random")                   # the published ResNet-18 (its parity fixture)
    backend = TorchBackend(encoder, precision="fp32")
    assert backend.encoder is encoder
    with pytest.raises(InputError, match="precision 'fp8'"):
        TorchBackend(encoder, precision="fp8")


def test_fp32_folds_the_compact_encoders_norms_to_rounding():
    """The shipped compact encoder runs with its batch norms folded in fp32 too: no norm left, the
    same keys to float32 rounding (the keys are unit vectors scaled by 1/sqrt(T) plus colour
    channels of norm <= sqrt(w): compare on that scale, 1e-4 of it is far above rounding and far
    below a wrong fold, which moves keys by ~1e-1)."""
    encoder = key_encoder("model")
    assert isinstance(encoder, CompactEncoder)
    backend = TorchBackend(encoder, precision="fp32")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in backend.encoder.modules())
    lab = torch.rand(1, 3, 64, 96) * 2 - 1
    with torch.inference_mode():
        want, got = encoder.eval()(lab), backend.encoder(lab.contiguous(memory_format=torch.channels_last))
    scale = float(want.norm(dim=1).max())
    torch.testing.assert_close(got, want, atol=1e-4 * scale, rtol=0)


def test_decode_is_upsampling_then_the_first_maximum():
    """decode = bilinear upsampling (align_corners=False) then argmax, ties to the lowest channel."""
    torch.manual_seed(0)
    probs = torch.rand(4, 9, 13)
    probs[2, :3] = probs[1, :3] = 2.0          # ties between channels 1 and 2: channel 1 wins
    want = F.interpolate(probs[None], size=(36, 52), mode="bilinear", align_corners=False)[0].argmax(0)
    got = TorchBackend(LabKeys()).decode(probs, (36, 52))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, want.numpy())
    assert (got[:8] == 1).all()


def test_more_objects_than_the_fused_read_takes_is_said_and_read_by_pytorch():
    """20 label channels (19 objects): the fused CPU read takes 16; the bank says so and reads with
    the PyTorch implementation."""
    backend = TorchBackend(LabKeys())
    key, query = torch.rand(3, 10, 12), torch.rand(3, 10, 12)
    labels = np.random.default_rng(0).integers(0, 20, (10, 12))
    with pytest.warns(UserWarning, match="at most 15 objects"):
        backend.allocate(5, key, 20)
    assert backend.bank.fused is None
    backend.write(0, key, labels)
    one_hot = torch.from_numpy(labels)[None] == torch.arange(20)[:, None, None]
    want = roi_memory_attention(query, [key], [one_hot.float()], [1], backend.attention, kernel="torch")
    torch.testing.assert_close(backend.read(query, [0], [1]), want)


def test_bf16_keys_are_read_with_bf16_dot_products_where_the_cpu_has_them(tol):
    """precision bf16 on a CPU with AVX512-BF16: the fused bank reads its (bf16-valued) keys with
    bf16 pairs, the float32 read's result to float32 rounding; fp32 keeps the float32 read; without
    AVX512-BF16, bf16 keeps it too."""
    from mast.core import attention_c
    if attention_c.available() is not None:
        pytest.skip(f"no fused CPU read here: {attention_c.available()}")
    rng = np.random.default_rng(3)
    key, query = (torch.from_numpy(rng.standard_normal((6, 10, 12), dtype=np.float32) / 3).bfloat16().float()
                  for _ in range(2))
    labels = rng.integers(0, 3, (10, 12))
    banks = {}
    for precision in ("bf16", "fp32"):
        backend = TorchBackend(LabKeys(), precision=precision)
        backend.allocate(2, key, 3)
        backend.write(0, key, labels)
        backend.write(1, key.flip(-1), labels[:, ::-1])
        banks[precision] = backend
    assert banks["bf16"].bank.fused.pairs == (attention_c.bf16_available() is None)
    assert not banks["fp32"].bank.fused.pairs
    got, want = (banks[p].read(query, [0, 1], [20, 1]) for p in ("bf16", "fp32"))
    cfg = banks["fp32"].attention
    atol = tol.read_atol(query, torch.stack([key, key.flip(-1)]), 2 * (2 * cfg.radius + 1) ** 2,
                         roi=[(key, cfg.dilation(20))], radius=cfg.radius)
    torch.testing.assert_close(got, want, atol=atol, rtol=0)
