"""OpenCV's float ``COLOR_BGR2Lab`` for uint8 frames, in exportable torch ops (Gather + integer arithmetic).

For sRGB input OpenCV does not evaluate the CIE formula: it quantises each channel to
``cvRound(x * 16384)`` (``LAB_BASE``, ``lab_base_shift = 14``) and interpolates a 33x33x33 int16
table (``LAB_LUT_DIM``, indexed R, G, B) trilinearly in fixed point: the cell is ``code >> 9`` and the
4-bit position inside it ``(code >> 5) & 15`` (``trilinear_shift = 4``), the 8 corner weights are
products of ``16 - f`` or ``f`` (they sum to 4096), and the sum is descaled with rounding
(``(s + 2048) >> 12``). Then ``L = iL * 100 / 16384``, ``a = ia * 256 / 16384 - 128`` (same for b).
See opencv modules/imgproc/src/color_lab.cpp (``RGB2Lab_f``, ``trilinearInterpolate``,
``initLUTforLABLUVs16``).

Here the table values are read off OpenCV itself at export time: a node colour ``(p, q, r) / 32`` is
exactly representable, quantises to ``512 * (p, q, r)`` with zero weight off the node, so
``cv2.cvtColor`` returns the node's table entry. For uint8 input the quantised code of a channel
value ``v`` is a function of ``v`` alone (``float32(v / 255) * 16384``, never a tie), so the cell
and position are 256-entry tables too. The result matches ``mast.core.lab.bgr_to_lab`` to float
rounding (~1e-7), not the ~4e-3 of the exact formula (``mast.core.lab_torch``).

Used inside ``encoder.onnx`` (:class:`mast.export.onnx_export.FrameEncoder`) and by the torch
backend on CUDA (uint8 frames become Lab on the GPU), so it lives in ``core``, below both.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import nn

from mast.core.lab import LAB_MEAN, LAB_STD

LAB_BASE = 1 << 14          # OpenCV lab_base_shift = 14
LUT_DIM = 33                # LAB_LUT_DIM = (1 << lab_lut_shift) + 1, lab_lut_shift = 5
CELL_SHIFT = 14 - 5         # code >> 9: the table cell
FRAC_SHIFT = 14 - 8 - 1     # (code >> 5) & 15: position inside the cell, trilinear_shift = 4
FRAC_BASE = 16              # TRILINEAR_BASE
WEIGHT_SHIFT = 12           # 3 * trilinear_shift: the weights sum to 1 << 12


def channel_codes() -> tuple[np.ndarray, np.ndarray]:
    """Cell ``[256]`` and in-cell position ``[256]`` (int64) of each uint8 channel value, as OpenCV
    quantises ``float32(v / 255)``."""
    x = np.arange(256, dtype=np.float32) / np.float32(255.0)
    code = np.rint(x * np.float32(LAB_BASE)).astype(np.int64)
    return code >> CELL_SHIFT, (code >> FRAC_SHIFT) & (FRAC_BASE - 1)


def node_table() -> np.ndarray:
    """OpenCV's fixed-point Lab at the 33^3 nodes, ``[33, 33, 33, 3]`` int64 indexed [R, G, B]:
    ``L * 16384 / 100`` and ``(a + 128) * 16384 / 256`` (likewise b), as ``cv2.cvtColor`` returns them."""
    n = np.arange(LUT_DIM, dtype=np.float32) / np.float32(LUT_DIM - 1)
    r, g, b = np.meshgrid(n, n, n, indexing="ij")
    bgr = np.stack([b, g, r], -1).reshape(-1, 1, 3)
    lab = cv2.cvtColor(bgr, cv2.COLOR_BGR2Lab).reshape(-1, 3).astype(np.float64)
    ints = np.stack([lab[:, 0] * LAB_BASE / 100.0,
                     (lab[:, 1] + 128.0) * LAB_BASE / 256.0,
                     (lab[:, 2] + 128.0) * LAB_BASE / 256.0], -1)
    table = np.rint(ints).astype(np.int64)
    if np.abs(ints - table).max() > 1e-3 or table.min() < 0:
        raise RuntimeError("this OpenCV build does not interpolate a fixed-point Lab table as expected: "
                           "the Lab graph cannot reproduce it")
    return table.reshape(LUT_DIM, LUT_DIM, LUT_DIM, 3)


def corner_table(table: np.ndarray) -> np.ndarray:
    """``[33^3, 8, 3]``: for each cell origin (flat index (R*33 + G)*33 + B) the 8 corner entries,
    corner ``4*dr + 2*dg + db`` (OpenCV's order), the far corner clamped to the last node."""
    idx = np.arange(LUT_DIM)
    corners = []
    for dr in (0, 1):
        for dg in (0, 1):
            for db in (0, 1):
                ir, ig, ib = (np.minimum(idx + d, LUT_DIM - 1) for d in (dr, dg, db))
                corners.append(table[ir][:, ig][:, :, ib].reshape(-1, 3))
    return np.stack(corners, 1)


class OpenCvLab(nn.Module):
    """uint8 BGR ``[B, H, W, 3]`` -> normalised Lab float32 ``[B, 3, H, W]``: ((L-50)/50, a/127, b/127),
    OpenCV's float ``COLOR_BGR2Lab`` of ``bgr / 255``."""

    def __init__(self) -> None:
        super().__init__()
        cell, frac = channel_codes()
        self.register_buffer("cell", torch.from_numpy(cell), persistent=False)
        self.register_buffer("frac", torch.from_numpy(frac.astype(np.int32)), persistent=False)
        corners = corner_table(node_table()).astype(np.int32)
        self.register_buffer("corners", torch.from_numpy(corners), persistent=False)      # [33^3, 8, 3]
        self.register_buffer("mean", torch.tensor(LAB_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(LAB_STD), persistent=False)
        # fixed-point L, a, b -> Lab units: L * 100 / 2^14, a * 256 / 2^14 - 128 (likewise b)
        self.register_buffer("scale", torch.tensor([100.0 / LAB_BASE, 256.0 / LAB_BASE, 256.0 / LAB_BASE]),
                             persistent=False)
        self.register_buffer("shift", torch.tensor([0.0, -128.0, -128.0]), persistent=False)

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        v = bgr.long().flip(-1)                                      # [B, H, W, 3] as R, G, B
        cell, frac = self.cell[v], self.frac[v]                      # [B, H, W, 3]
        origin = (cell[..., 0] * LUT_DIM + cell[..., 1]) * LUT_DIM + cell[..., 2]
        values = self.corners[origin]                                # [B, H, W, 8, 3] int32
        # weight of corner (dr, dg, db): product over r, g, b of 16 - f (bit 0) or f (bit 1)
        pair = torch.stack([FRAC_BASE - frac, frac], -1)             # [B, H, W, 3, 2]
        w = pair[..., 0, :, None, None] * pair[..., 1, None, :, None] * pair[..., 2, None, None, :]
        s = (values * w.reshape(*w.shape[:3], 8, 1)).sum(-2)         # [B, H, W, 3], < 2^26
        fixed = torch.div(s + (1 << (WEIGHT_SHIFT - 1)), 1 << WEIGHT_SHIFT, rounding_mode="trunc")
        lab = fixed.float() * self.scale + self.shift
        lab = (lab - self.mean) / self.std
        return lab.permute(0, 3, 1, 2)
