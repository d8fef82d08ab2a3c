"""Launch the fused ROI attention kernel on torch tensors (CUDA, or CPU under ``TRITON_INTERPRET=1``)."""
from __future__ import annotations

import torch

from mast.core.config import AttentionConfig
from mast.core.errors import InputError
from mast.plugins.kernel_spec import KernelSpec
from mast.plugins.roi_kernel import roi_attention_kernel

KEY_DTYPES = {torch.float32: "fp32", torch.float16: "fp16"}
LABEL_DTYPES = {torch.int32: "i32", torch.int64: "i64"}


def roi_attention(query: torch.Tensor, keys: torch.Tensor, labels: torch.Tensor, distances: torch.Tensor,
                  n_labels: int, cfg: AttentionConfig = AttentionConfig(), tile: tuple[int, int] = (8, 8),
                  num_warps: int = 8, out: torch.Tensor | None = None) -> torch.Tensor:
    """Label distribution ``[n_labels, h, w]`` float32 of ``query`` read from the bank, one launch.

    query:     ``[C, h, w]`` fp32/fp16 (the dtype of ``keys``).
    keys:      ``[S, C, h, w]`` fp32/fp16, the bank's keys.
    labels:    ``[S, h, w]`` int32/int64, label ids (one-hot over ``n_labels`` in the kernel).
    distances: ``[S]`` int32, frame distance of each slot (<= 0: not read).
    tile, num_warps: query pixels (rows, columns) and warps per program (:class:`KernelSpec`).
    out:       optional preallocated ``[n_labels, h, w]`` float32 output.
    Same semantics as :func:`mast.core.attention.roi_memory_attention` over the slots with d > 0.
    """
    s, c, h, w = keys.shape
    if query.shape != (c, h, w) or labels.shape != (s, h, w) or distances.shape != (s,):
        raise InputError(f"bank shapes disagree: query {tuple(query.shape)}, keys {tuple(keys.shape)}, "
                         f"labels {tuple(labels.shape)}, distances {tuple(distances.shape)}")
    if keys.dtype not in KEY_DTYPES or query.dtype != keys.dtype:
        raise InputError(f"query {query.dtype} and keys {keys.dtype}: expected both float32 or both float16")
    if labels.dtype not in LABEL_DTYPES or distances.dtype != torch.int32:
        raise InputError(f"labels {labels.dtype} (int32/int64) and distances {distances.dtype} (int32) expected")
    if not 1 <= n_labels <= 256:
        raise InputError(f"n_labels {n_labels}: expected 1..256")
    if any(t < 1 or t & (t - 1) for t in tile) or tile[0] * tile[1] < 16:
        raise InputError(f"tile {tile}: expected powers of two, at least 16 pixels")
    spec = KernelSpec(s, c, n_labels, KEY_DTYPES[keys.dtype], LABEL_DTYPES[labels.dtype], cfg, tuple(tile), num_warps)
    if out is None:
        out = torch.empty(n_labels, h, w, dtype=torch.float32, device=keys.device)
    elif out.shape != (n_labels, h, w) or out.dtype != torch.float32 or not out.is_contiguous():
        raise InputError(f"out is {tuple(out.shape)} {out.dtype}: expected contiguous float32 {(n_labels, h, w)}")
    roi_attention_kernel[spec.grid(h, w)](query.contiguous(), keys.contiguous(), labels.contiguous(),
                                          distances.contiguous(), h, w, out, **spec.constexprs(),
                                          num_warps=num_warps)
    return out
