"""The torch backend: the encoder and the reference attention of ``mast.core`` (CPU, chunked)."""
from __future__ import annotations

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


class TorchBackend:
    """Bank as preallocated tensors ``keys [S, C, h, w]`` and ``values [S, L, h, w]`` (one-hot)."""

    name = "torch"

    def __init__(self, encoder: nn.Module, device: str = "cpu", precision: Precision = "fp32",
                 attention: AttentionConfig = AttentionConfig()) -> None:
        self.device = torch.device(device)
        # channels_last: oneDNN's fast convolution layout on CPU (and tensor cores on GPU)
        self.encoder = encoder.to(self.device, memory_format=torch.channels_last).eval()
        self.precision = precision
        self.attention = attention
        self.keys: torch.Tensor | None = None    # [S, C, h, w] float32, the slots' keys
        self.values: torch.Tensor | None = None  # [S, L, h, w] float32, the slots' one-hot label maps

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
        self.values = torch.zeros(n_slots, n_labels, *key.shape[1:], device=self.device)

    @torch.inference_mode()
    def write(self, slot: int, key: torch.Tensor, labels: np.ndarray) -> None:
        self.keys[slot].copy_(key)
        lab = torch.from_numpy(labels.astype(np.int64)).to(self.device)
        channels = torch.arange(self.values.shape[1], device=self.device)
        self.values[slot] = (lab[None] == channels[:, None, None]).float()

    @torch.inference_mode()
    def read(self, key: torch.Tensor, slots: list[int], distances: list[int]) -> torch.Tensor:
        return roi_memory_attention(key, [self.keys[s] for s in slots], [self.values[s] for s in slots],
                                    distances, self.attention)

    @torch.inference_mode()
    def decode(self, probs: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        up = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)
        return up[0].argmax(0).to(torch.uint8).cpu().numpy()
