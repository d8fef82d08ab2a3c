"""The fused CPU memory read for torch tensors: :func:`mast.core.attention.roi_memory_attention`'s
default on CPU, a thin adapter over the torch-free :mod:`mast.core.attention_c` (which compiles,
loads and calls ``attention_kernel.c``; see there for the build, the cache and the threads).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from mast.core import attention_c
from mast.core.attention_c import EXTRA_FLAGS, MAX_FRAMES, MAX_LABELS, MAX_RADIUS, available
from mast.core.config import AttentionConfig

__all__ = ["EXTRA_FLAGS", "available", "native_memory_read", "supports"]

# the compiled library, cached; the tests clear the cache to rebuild with other flags or no compiler
_library = attention_c._library


def supports(query: torch.Tensor, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor],
             cfg: AttentionConfig) -> bool:
    """Whether these inputs are in the kernel's domain: CPU float32 (or lower) tensors without
    autograd, R <= 31, at most 16 memory frames and 16 label channels."""
    tensors = [query, *keys, *values]
    grad = torch.is_grad_enabled()
    return (all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.bfloat16, torch.float16)
                and not (grad and t.requires_grad) for t in tensors)
            and attention_c.in_domain(cfg.radius, len(keys), values[0].shape[0]))


def native_memory_read(query: torch.Tensor, keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor],
                       distances: Sequence[int], cfg: AttentionConfig = AttentionConfig(),
                       threads: int | None = None) -> torch.Tensor:
    """:func:`mast.core.attention.roi_memory_attention` by the fused kernel: query ``[C, h, w]``,
    M keys ``[C, h, w]``, M value maps ``[L, h, w]``, M distances -> ``[L, h, w]`` float32; rows
    split over ``threads`` (None: ``torch.get_num_threads()``). Inputs outside :func:`supports`
    raise ValueError; no compiler raises DependencyError."""
    if not supports(query, keys, values, cfg):
        raise ValueError("native_memory_read: CPU float tensors without autograd, radius <= "
                         f"{MAX_RADIUS}, <= {MAX_FRAMES} frames and <= {MAX_LABELS} labels expected")
    arrays = [[t.detach().float().contiguous().numpy() for t in ts] for ts in (keys, values)]
    out = attention_c.memory_read(query.detach().float().contiguous().numpy(), *arrays, distances, cfg,
                                  threads or torch.get_num_threads())
    return torch.from_numpy(out)
