"""Key encoders and the inference-only folding of batch norms into convolutions."""
from __future__ import annotations

import torch
from torch import nn

from mast.core.encoder import Encoder
from mast.core.model import fuse_conv_bn


def _trained_like_encoder() -> Encoder:
    """An encoder whose norms hold non-trivial running statistics and affine parameters."""
    torch.manual_seed(0)
    enc = Encoder()
    for m in enc.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return enc.train()


def test_fused_encoder_computes_the_same_keys_without_norms():
    enc = _trained_like_encoder()
    fused = fuse_conv_bn(enc)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    assert not fused.training
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        want, got = enc.eval()(x), fused(x)
    torch.testing.assert_close(got, want, atol=1e-5 * want.abs().max().item(), rtol=0)


def test_fusing_leaves_the_original_alone_and_norms_not_after_a_convolution():
    enc = _trained_like_encoder()
    fuse_conv_bn(enc)
    assert enc.training and sum(isinstance(m, nn.BatchNorm2d) for m in enc.modules()) == 19
    seq = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU())
    fused = fuse_conv_bn(seq)
    assert isinstance(fused[0], nn.BatchNorm2d) and isinstance(fused[1], nn.Conv2d)
