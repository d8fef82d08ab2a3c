"""Object masks at feature resolution (image-feature alignment, docs/DESIGN.md step 3)."""
from __future__ import annotations

import numpy as np
import torch


def strided_ids(mask: np.ndarray, stride: int = 4) -> np.ndarray:
    """Ids at the strided centres: ``mask[::stride, ::stride]``, ``[ceil(H/s), ceil(W/s)]``."""
    return np.ascontiguousarray(mask[::stride, ::stride])


def one_hot(ids: torch.Tensor, label_ids: torch.Tensor) -> torch.Tensor:
    """One-hot maps ``[L, h, w]`` float32 of ``ids`` ``[h, w]`` over ``label_ids`` ``[L]`` (id 0 first).

    Ids not in ``label_ids`` give an all-zero column.
    """
    return (ids[None].to(label_ids.dtype) == label_ids[:, None, None]).float()
