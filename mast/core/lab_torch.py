"""OpenCV's float ``COLOR_BGR2Lab`` written in torch ops (differentiable, exportable to ONNX).

Used where frames must become Lab on batches of tensors (training). This is the exact CIE formula;
OpenCV's float path interpolates a 33^3 fixed-point table instead (for sRGB input), so the two
differ by up to ~4e-3 in normalised units (0.2 L): anything that must match OpenCV to 1e-3
(``encoder.onnx``) has to reproduce that table, not this formula.
"""
from __future__ import annotations

import torch

from mast.core.lab import LAB_MEAN, LAB_STD

# sRGB (D65) -> XYZ, rows X, Y, Z over columns R, G, B, with X and Z divided by the white point
_XYZ = ((0.412453 / 0.950456, 0.357580 / 0.950456, 0.180423 / 0.950456),
        (0.212671, 0.715160, 0.072169),
        (0.019334 / 1.088754, 0.119193 / 1.088754, 0.950227 / 1.088754))
_EPS = 0.008856


def _f(t: torch.Tensor) -> torch.Tensor:
    """Lab companding: cube root above 0.008856, linear below."""
    return torch.where(t > _EPS, t.clamp(min=_EPS) ** (1.0 / 3.0), 7.787 * t + 16.0 / 116.0)


def bgr_to_lab_torch(bgr: torch.Tensor) -> torch.Tensor:
    """BGR in [0, 1] ``[B, 3, H, W]`` (float) -> normalised Lab ``[B, 3, H, W]``: ((L-50)/50, a/127, b/127)."""
    rgb = bgr.flip(1)
    linear = torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(_XYZ, dtype=bgr.dtype, device=bgr.device)
    xyz = torch.einsum("ij,bjhw->bihw", m, linear)
    fx, fy, fz = _f(xyz[:, 0]), _f(xyz[:, 1]), _f(xyz[:, 2])
    y = xyz[:, 1]
    lightness = torch.where(y > _EPS, 116.0 * fy - 16.0, 903.3 * y)
    lab = torch.stack([lightness, 500.0 * (fx - fy), 200.0 * (fy - fz)], 1)
    mean = torch.tensor(LAB_MEAN, dtype=bgr.dtype, device=bgr.device).view(1, 3, 1, 1)
    std = torch.tensor(LAB_STD, dtype=bgr.dtype, device=bgr.device).view(1, 3, 1, 1)
    return (lab - mean) / std
