"""The torch backend's precisions: bf16 (folded norms, bf16 weights) tracks as fp32."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from mast.core.encoder import LabKeys
from mast.core.errors import InputError
from mast.core.model import key_encoder
from mast.runtime.torch_backend import TorchBackend
from mast.runtime.tracker import Tracker

SIZE = (96, 176)



def test_bf16_tracks_as_fp32(demo_clip):
    frames, mask = demo_clip(8, SIZE)
    low, full = (Tracker(TorchBackend(key_encoder("model"), precision=p)) for p in ("bf16", "fp32"))
    low.start(frames[0], mask)
    full.start(frames[0], mask)
    for f in frames[1:]:
        a, b = low.step(f) > 0, full.step(f) > 0
        assert (a & b).sum() / max(1, (a | b).sum()) > 0.95
    assert not any(isinstance(m, nn.BatchNorm2d) for m in low.backend.encoder.modules())


def test_fp32_runs_the_encoder_as_it_is_and_bad_precision_is_refused():
    encoder = key_encoder("model")
    backend = TorchBackend(encoder, precision="fp32")
    assert backend.encoder is encoder
    with pytest.raises(InputError, match="precision 'fp8'"):
        TorchBackend(encoder, precision="fp8")


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
