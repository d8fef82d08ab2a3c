"""The torch backend: the encoder and the memory read of ``mast.core``.

The memory read runs the reference attention (CPU, chunked) or the fused Triton kernel of
``mast.plugins`` (``kernel="triton"``, the default on CUDA): one launch per frame over the bank
kept as preallocated tensors (keys ``[S, C, h, w]``, label ids ``[S, h, w]`` int32) updated in
place. The frame goes to the device once (Lab), the mask comes back once (argmax)."""
from __future__ import annotations

import importlib.util
from contextlib import nullcontext
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mast.core.attention import roi_memory_attention
from mast.core.config import AttentionConfig
from mast.core.lab import bgr_to_lab

Precision = Literal["fp32", "bf16"]
AttentionKernel = Literal["auto", "reference", "triton"]   # auto: triton on cuda (when installed), else reference


class TorchBackend:
    """Bank as preallocated tensors ``keys [S, C, h, w]`` and, for the reference attention,
    ``values [S, L, h, w]`` (one-hot) or, for the Triton kernel, ``labels [S, h, w]`` (int32 ids)."""

    name = "torch"

    def __init__(self, encoder: nn.Module, device: str = "cpu", precision: Precision = "fp32",
                 attention: AttentionConfig = AttentionConfig(), kernel: AttentionKernel = "auto") -> None:
        self.device = torch.device(device)
        # channels_last: oneDNN's fast convolution layout on CPU (and tensor cores on GPU)
        self.encoder = encoder.to(self.device, memory_format=torch.channels_last).eval()
        self.precision = precision
        self.attention = attention
        if kernel == "auto":
            kernel = "triton" if self.device.type == "cuda" and importlib.util.find_spec("triton") else "reference"
        self.kernel = kernel
        self.keys: torch.Tensor | None = None    # [S, C, h, w] float32, the slots' keys
        self.values: torch.Tensor | None = None  # [S, L, h, w] float32, the slots' one-hot label maps (reference)
        self.labels: torch.Tensor | None = None  # [S, h, w] int32, the slots' label ids (triton)
        self.n_labels = 0

    def _autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return nullcontext()

    @torch.inference_mode()
    def encode(self, bgr: np.ndarray) -> torch.Tensor:
        lab = torch.from_numpy(bgr_to_lab(bgr))[None].to(self.device, memory_format=torch.channels_last)
        with self._autocast():
            key = self.encoder(lab)[0]
        return key.float().contiguous()

    def allocate(self, n_slots: int, key: torch.Tensor, n_labels: int) -> None:
        self.keys = torch.zeros(n_slots, *key.shape, device=self.device)
        self.n_labels = n_labels
        if self.kernel == "triton":
            self.labels = torch.zeros(n_slots, *key.shape[1:], dtype=torch.int32, device=self.device)
        else:
            self.values = torch.zeros(n_slots, n_labels, *key.shape[1:], device=self.device)

    @torch.inference_mode()
    def write(self, slot: int, key: torch.Tensor, labels: np.ndarray) -> None:
        self.keys[slot].copy_(key)
        if self.kernel == "triton":
            self.labels[slot].copy_(torch.from_numpy(labels.astype(np.int32)))
            return
        lab = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        channels = torch.arange(self.values.shape[1], device=self.device)
        self.values[slot] = (lab[None] == channels[:, None, None]).float()

    @torch.inference_mode()
    def read(self, key: torch.Tensor, slots: list[int], distances: list[int]) -> torch.Tensor:
        if self.kernel == "triton":
            from mast.plugins.roi_launch import roi_attention  # noqa: PLC0415 - imports triton

            dist = torch.zeros(self.keys.shape[0], dtype=torch.int32)
            dist[list(slots)] = torch.tensor(distances, dtype=torch.int32)
            return roi_attention(key, self.keys, self.labels, dist.to(self.device), self.n_labels, self.attention)
        return roi_memory_attention(key, [self.keys[s] for s in slots], [self.values[s] for s in slots],
                                    distances, self.attention)

    @torch.inference_mode()
    def decode(self, probs: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        up = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)
        return up[0].argmax(0).to(torch.uint8).cpu().numpy()
