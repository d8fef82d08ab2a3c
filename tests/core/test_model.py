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
    # compared in float64, whatever CPU runs the convolutions: 19 layers of at most 3x3x256 products,
    # each within gamma_2304 = 2.6e-13 (float64) of exact: ~5e-12 relative, bound 1e-9 (a wrong fold: ~1)
    fused64, x = fuse_conv_bn(enc.double()), torch.randn(1, 3, 48, 80, dtype=torch.float64)
    with torch.no_grad():
        want, got = enc.eval()(x), fused64(x)
    torch.testing.assert_close(got, want, atol=1e-9 * want.abs().max().item(), rtol=0)
    with torch.no_grad():   # and the float32 copy runs (the inference dtype)
        assert fused(x.float()).dtype == torch.float32


def test_fusing_leaves_the_original_alone_and_norms_not_after_a_convolution():
    enc = _trained_like_encoder()
    fuse_conv_bn(enc)
    assert enc.training and sum(isinstance(m, nn.BatchNorm2d) for m in enc.modules()) == 19
    seq = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 3), nn.ReLU())
    fused = fuse_conv_bn(seq)
    assert isinstance(fused[0], nn.BatchNorm2d) and isinstance(fused[1], nn.Conv2d)
