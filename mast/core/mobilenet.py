"""The compact key encoder: the first blocks of an ImageNet MobileNetV2, read at stride 4 (or 8).

A normalised Lab frame ``[B, 3, H, W]`` (per-frame step 1, as for the MAST ResNet-18) becomes sRGB
inside the network (:class:`LabToRgb`, the CIE inverse of step 1), is normalised as ImageNet
models expect, and runs through ``features[:max(taps)]`` of MobileNetV2 (parameter names of the
original PyTorch MobileNetV2, ``features.N.conv.K.*``, so the ImageNet weights load strictly).
The outputs after ``features[:n]`` for each ``n`` in ``taps`` are upsampled bilinearly to the key
grid ``[ceil(H/s), ceil(W/s)]`` (``s`` = the config's ``stride``, 4 or 8; a tap of stride ``s`` is
that grid already), concatenated and L2-normalised per pixel, then scaled by
``sqrt(1 / temperature)`` so that a key dot product is cosine / temperature; ``temperature`` is a
buffer in the weights. Optionally ``colour_weight`` appends 6 colour channels
``sqrt(w) [cos, sin](f_c m_c)`` of the ``s x s``-cell mean Lab ``m_c``, whose dot product is the colour
kernel ``w sum_c cos(f_c (m_c(p) - m_c(q)))`` of the colour prior (``mast.training.prior``).

Tap ``n`` of MobileNetV2: n=2 stride 2 (16 channels), 4 stride 4 (24), 7 stride 8 (32),
11 stride 16 (64), 14 stride 16 (96).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F

from mast.core.errors import CheckpointError

# (expansion t, output channels c, repeats n, first stride s): MobileNetV2's inverted residual settings
SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Lab -> XYZ (D65 white of OpenCV) -> linear sRGB
WHITE = (0.950456, 1.0, 1.088754)
XYZ_TO_RGB = ((3.240479, -1.53715, -0.498535), (-0.969256, 1.875991, 0.041556), (0.055648, -0.204043, 1.057311))
# colour channels: frequency per normalised Lab channel (the colour prior's, mast.training.prior.COLOURS)
COLOUR_FREQ = (math.pi / 2.2, math.pi / 1.2, math.pi / 1.2)
KEY_STRIDE = 4            # the default key stride
KEY_STRIDES = (4, 8)      # the key strides a compact encoder can have
Norm = Literal["key", "tap"]


def _block_layout() -> list[tuple[int, int, int, int]]:
    """``features[1:]`` as (in channels, out channels, stride, expansion), one per block."""
    blocks, cin = [], 32
    for t, c, n, s in SETTINGS:
        for i in range(n):
            blocks.append((cin, c, s if i == 0 else 1, t))
            cin = c
    return blocks


TAP_CHANNELS = {i + 2: c for i, (_, c, _, _) in enumerate(_block_layout())}
TAP_STRIDES = {2: 2, **{n: 2 ** (1 + sum(1 for b in _block_layout()[: n - 1] if b[2] == 2)) for n in range(3, 19)}}


def _conv_bn(cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class InvertedResidual(nn.Module):
    """MobileNetV2 block ``conv`` = [1x1 expand-BN-ReLU6] 3x3 depthwise-BN-ReLU6 1x1 project-BN,
    plus the input when stride 1 and channels match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [*_conv_bn(cin, hidden, 1, 1), nn.ReLU6(inplace=True)]
        layers += [*_conv_bn(hidden, hidden, 3, stride, groups=hidden), nn.ReLU6(inplace=True), *_conv_bn(hidden, cout, 1, 1)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


def mobilenet_v2_features(n_blocks: int) -> nn.Sequential:
    """``features[:n_blocks]`` of MobileNetV2 (width 1.0): block 0 is the 3x3/2 stem (32 channels)."""
    blocks: list[nn.Module] = [nn.Sequential(*_conv_bn(3, 32, 3, 2), nn.ReLU6(inplace=True))]
    blocks += [InvertedResidual(*b) for b in _block_layout()]
    return nn.Sequential(*blocks[:n_blocks])


class LabToRgb(nn.Module):
    """Normalised Lab ``((L-50)/50, a/127, b/127)`` ``[B, 3, H, W]`` -> sRGB in [0, 1], the CIE
    inverse of per-frame step 1 (D65); equal to the frame's RGB / 255 within OpenCV's Lab rounding.

    Written with elementwise arithmetic only (no select, no power, no einsum), which onnxruntime runs
    vectorised: the piecewise CIE inverse as ``hi^3 + 3 k^2 (lo - k)`` with ``hi = max(f, k)``,
    ``lo = min(f, k)`` (its two pieces meet at the knee ``k = 6/29`` with equal slope), the sRGB
    power as ``exp(log(x) / 2.4)``, the matrix by channels (exported, the ``Where``, ``Pow`` and
    ``Einsum`` version took 5.2 ms of onnxruntime time at 240x427, this one 1.8; equal to float32
    rounding). Intermediates are updated in place: the same operations in the same order, so the
    same bits, with fewer fresh tensors (PyTorch, 2 threads of an AMD EPYC Zen 4, on the torch
    backend's channels_last Lab: 2.1 -> 1.6 ms at 240x427, 13.1 -> 7.2 ms at 480x854;
    ``benchmarks/bench_lab_front.py``). The input is not modified."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("xyz_to_rgb", torch.tensor(XYZ_TO_RGB) * torch.tensor(WHITE), persistent=False)

    @staticmethod
    def _finv(f: torch.Tensor) -> torch.Tensor:
        """The CIE inverse of ``f``, which it overwrites (an intermediate of ``forward``)."""
        knee = 6 / 29
        lo = f.clamp_max(knee)
        hi = f.clamp_min_(knee)
        return (hi * hi).mul_(hi).add_(lo.sub_(knee).mul_(3 * knee * knee))

    @staticmethod
    def _gamma(rgb: torch.Tensor) -> torch.Tensor:
        """sRGB companding of linear ``rgb`` in [0, 1]: its two pieces do not meet exactly (6e-6
        apart at the knee), so the power piece is chosen by a 0/1 mask rather than by max/min."""
        knee = 0.0031308
        power = rgb.clamp_min(knee).log_().mul_(1 / 2.4).exp_().mul_(1.055).sub_(0.055)
        linear = rgb.mul(12.92)
        return linear.add_((rgb > knee).to(rgb.dtype).mul_(power.sub_(linear)))

    def forward(self, lab: torch.Tensor) -> torch.Tensor:
        """float32 whatever the module's dtype (a cube and a power lose too much in half precision)."""
        lab = lab.float()
        fy = (lab[:, 0:1] * (50 / 116)).add_(66 / 116)
        fx, fz = fy + lab[:, 1:2] * (127 / 500), fy - lab[:, 2:3] * (127 / 200)
        x, y, z = self._finv(fx), self._finv(fy), self._finv(fz)
        m = self.xyz_to_rgb.float()
        rgb = torch.cat([m[o, 0] * x + m[o, 1] * y + m[o, 2] * z for o in range(3)], 1).clamp_(0, 1)
        return self._gamma(rgb)


@dataclass(frozen=True)
class CompactConfig:
    """What a compact encoder is: recorded in its checkpoint (``arch``) and rebuilt from it.

    taps:          MobileNetV2 block counts whose outputs make the key (module docstring).
    norm:          "key": one L2 norm over the concatenated taps; "tap": each tap normalised, weighted
                   by 1/sqrt(number of taps).
    temperature:   initial softmax temperature (a buffer of the weights afterwards).
    colour_weight: weight w of the appended colour kernel (0 = no colour channels).
    stride:        key stride s (4 or 8): keys ``[ceil(H/s), ceil(W/s)]``, taps of stride >= s only;
                   a tracker built from the checkpoint follows it (``ModelConfig.for_stride``).
    """

    taps: tuple[int, ...] = (4, 7)
    norm: Norm = "key"
    temperature: float = 0.05
    colour_weight: float = 0.0
    stride: int = KEY_STRIDE

    def __post_init__(self) -> None:
        if self.stride not in KEY_STRIDES:
            raise CheckpointError(f"compact encoder stride {self.stride}: expected one of {', '.join(map(str, KEY_STRIDES))}")
        bad = [t for t in self.taps if t not in TAP_STRIDES or TAP_STRIDES[t] < self.stride]
        if not self.taps or bad:
            example = "(4, 7)" if self.stride == 4 else "(7,)"
            raise CheckpointError(f"compact encoder taps {self.taps}: expected MobileNetV2 block counts with stride "
                                  f">= the key stride {self.stride}, e.g. {example}; valid: "
                                  f"{sorted(t for t in TAP_STRIDES if TAP_STRIDES[t] >= self.stride)}")
        if self.norm not in ("key", "tap") or self.temperature <= 0 or self.colour_weight < 0:
            raise CheckpointError(f"compact encoder settings norm={self.norm!r}, temperature={self.temperature}, "
                                  f"colour_weight={self.colour_weight}: expected norm key|tap, temperature > 0, colour_weight >= 0")

    @property
    def key_dim(self) -> int:
        return sum(TAP_CHANNELS[t] for t in self.taps) + (6 if self.colour_weight > 0 else 0)


class CompactEncoder(nn.Module):
    """Normalised Lab ``[B, 3, H, W]`` -> keys ``[B, key_dim, ceil(H/s), ceil(W/s)]``, ``s`` =
    ``stride`` = ``config.stride`` (module docstring)."""

    arch = "mobilenetv2"

    def __init__(self, config: CompactConfig = CompactConfig()) -> None:
        super().__init__()
        self.config = config
        self.stride = config.stride
        self.key_dim = config.key_dim
        self.to_rgb = LabToRgb()
        self.features = mobilenet_v2_features(max(config.taps))
        self.register_buffer("temperature", torch.tensor(float(config.temperature)))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("freq", torch.tensor(COLOUR_FREQ).view(1, 3, 1, 1), persistent=False)

    def arch_record(self) -> dict[str, Any]:
        """The ``arch`` entry of this encoder's checkpoint."""
        return {"name": self.arch, **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self.config).items()}}

    def _taps(self, x: torch.Tensor, size: tuple[int, int]) -> list[torch.Tensor]:
        out = []
        for n, block in enumerate(self.features, start=1):
            x = block(x)
            if n in self.config.taps:
                out.append(x if tuple(x.shape[-2:]) == size else
                           F.interpolate(x, size=size, mode="bilinear", align_corners=False))
        return out

    def _colour(self, lab: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        mean = F.avg_pool2d(lab, self.stride, self.stride, ceil_mode=True, count_include_pad=False)[..., : size[0], : size[1]]
        phase = mean * self.freq.float()
        return math.sqrt(self.config.colour_weight / 3) * torch.cat([phase.cos(), phase.sin()], 1)

    def forward(self, lab: torch.Tensor) -> torch.Tensor:
        """Keys float32; in a half-precision copy only the MobileNetV2 blocks run in half."""
        # ceil(H / stride) as (H + stride - 1) // stride: traced into ONNX, integer division truncates
        # towards zero, so the negated form -(-H // stride) would round down there (106 for 427 / 4)
        size = ((lab.shape[-2] + self.stride - 1) // self.stride, (lab.shape[-1] + self.stride - 1) // self.stride)
        lab = lab.float()
        x = self.to_rgb(lab).sub_(self.mean.float()).div_(self.std.float())
        taps = [t.float() for t in self._taps(x.to(self.features[0][0].weight.dtype), size)]
        if self.config.norm == "tap":
            key = torch.cat([F.normalize(t, dim=1) for t in taps], 1) / math.sqrt(len(taps))
        else:
            key = F.normalize(torch.cat(taps, 1), dim=1)
        key = key * self.temperature.float().rsqrt()
        return torch.cat([key, self._colour(lab, size)], 1) if self.config.colour_weight > 0 else key
