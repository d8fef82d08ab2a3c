"""Padded channels-last maps for the exported attention graph.

The reference (:mod:`mast.core.attention`) reads key squares through strided views, which do not
trace to ONNX with a data-dependent square side; this map reads them with a Gather of row indices
instead (constant or tensor indices, ``side`` an int or a 0-d tensor). The query tiling itself is
shared: :class:`mast.core.tiling.Tiles`.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F


class PaddedMap:
    """A map ``[C, h, w]`` zero padded by ``pad`` and laid out channels-last ``[(h+2p)(w+2p), C]``,
    from which square neighbourhoods are gathered. ``ones``: a last channel of ones (padding
    included), whose weighted sum is the softmax denominator."""

    def __init__(self, x: torch.Tensor, pad: int, ones: bool = False) -> None:
        self.pad = pad
        self.width = x.shape[2] + 2 * pad
        # transposed before padding: one small Transpose and a contiguous Pad in the graph (a Transpose
        # of the padded map costs several times more)
        self.rows = F.pad(x.permute(1, 2, 0), (0, 0, pad, pad, pad, pad)).reshape(-1, x.shape[0])
        if ones:
            self.rows = torch.cat([self.rows, torch.ones_like(self.rows[:, :1])], 1)

    @classmethod
    def from_rows(cls, rows: torch.Tensor, pad: int, width: int) -> PaddedMap:
        """A map whose padded channels-last rows ``[(h+2p)(w+2p), C]`` (``width`` = w + 2p) are given."""
        out = cls.__new__(cls)
        out.pad, out.width, out.rows = pad, width, rows
        return out

    def cells(self, top: torch.Tensor, left: torch.Tensor, side, side_x=None) -> torch.Tensor:
        """Row indices ``[n, side * side_x]`` of the rectangles (``side`` rows, ``side_x`` columns,
        default ``side``) with top-left corners (top, left) ``[n]`` (unpadded pixel coordinates);
        sides ints or 0-d tensors."""
        cells = (torch.arange(side)[:, None] * self.width
                 + torch.arange(side if side_x is None else side_x)[None, :]).reshape(-1)
        start = (top + self.pad) * self.width + (left + self.pad)
        return start[:, None] + cells[None]

    def squares(self, top: torch.Tensor, left: torch.Tensor, side: int) -> torch.Tensor:
        """``[n, side^2, C]``: the squares whose top-left corners are (top, left) ``[n]``."""
        return self.rows[self.cells(top, left, side)]
