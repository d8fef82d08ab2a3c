"""The MAST feature encoder Φ, with the parameter names of the official checkpoint.

A normalised Lab frame ``[B, 3, H, W]`` gives a key ``[B, 64, ceil(H/4), ceil(W/4)]``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN (``left``) plus a 1x1 conv + BN ``shortcut`` when shapes change."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.left = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.left(x) + self.shortcut(x))


class ResNet18(nn.Module):
    """The ResNet-18 variant of MAST at 1/4 resolution: conv1 /2, layer2 /2, no max-pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        self.layer1 = self._layer(64, 64, 1)
        self.layer2 = self._layer(64, 128, 2)
        self.layer3 = self._layer(128, 256, 1)
        self.layer4 = self._layer(256, 256, 1)

    @staticmethod
    def _layer(cin: int, cout: int, stride: int) -> nn.Sequential:
        return nn.Sequential(ResidualBlock(cin, cout, stride), ResidualBlock(cout, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class Encoder(nn.Module):
    """Φ: ``feature_extraction`` (ResNet18) then ``post_convolution`` (3x3, 256 -> 64, bias)."""

    arch = "mast-resnet18"
    stride = 4

    def __init__(self, key_dim: int = 64) -> None:
        super().__init__()
        self.key_dim = key_dim
        self.feature_extraction = ResNet18()
        self.post_convolution = nn.Conv2d(256, key_dim, 3, 1, 1)

    def forward(self, lab: torch.Tensor) -> torch.Tensor:
        """Normalised Lab ``[B, 3, H, W]`` -> keys ``[B, 64, ceil(H/4), ceil(W/4)]``."""
        return self.post_convolution(self.feature_extraction(lab))


class LabKeys(nn.Module):
    """Baseline keys without learning: the normalised Lab pixels at the strided centres ``[B, 3, h, w]``."""

    def __init__(self, stride: int = 4) -> None:
        super().__init__()
        self.stride = stride

    def forward(self, lab: torch.Tensor) -> torch.Tensor:
        return lab[:, :, :: self.stride, :: self.stride].contiguous()
