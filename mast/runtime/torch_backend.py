"""The torch backend: the encoder and the memory read of ``mast.core``.

The memory read runs the reference attention (CPU, chunked) or the fused Triton kernel of
``mast.plugins`` (``kernel="triton"``, the default on CUDA): one launch per frame over the bank
kept as preallocated tensors (keys ``[S, C, h, w]``, label ids ``[S, h, w]`` int32) updated in
place; with a half-precision encoder (fp16/bf16) the kernel's bank holds float16 keys (half the
memory and bandwidth, float32 accumulation in the kernel).

Frames: on CPU the frame becomes Lab with OpenCV on the host; on CUDA (``lab_on_device``) the uint8
frame is uploaded as it is (a quarter of the float32 Lab's bytes) and becomes Lab on the GPU with
OpenCV's own fixed-point table (:class:`mast.core.lab_graph.OpenCvLab`, equal to OpenCV to float
rounding). The mask comes back once (argmax, uint8).
"""
from __future__ import annotations

import copy
import importlib.util
import warnings
from typing import Literal

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mast.core import attention_c
from mast.core.attention import fused_builds, roi_memory_attention
from mast.core.config import AttentionConfig, Precision
from mast.core.errors import InputError
from mast.core.lab import bgr_to_lab
from mast.core.lab_graph import OpenCvLab
from mast.core.mobilenet import CompactEncoder
from mast.core.model import fuse_conv_bn

AttentionKernel = Literal["auto", "reference", "triton"]   # auto: triton on cuda (when installed), else reference
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


class OneHotBank:
    """The reference attention's bank: ``keys [S, C, h, w]`` and one-hot label maps
    ``values [S, L, h, w]`` float32, preallocated and updated in place. On CPU, where the fused
    kernel builds and takes the read, a :class:`~mast.core.attention_c.FusedBank` over the same
    memory reads it (each slot laid out once per write; ``bf16_keys``: the keys are bf16 values, read
    with bf16 dot products where the CPU has AVX512-BF16); elsewhere
    :func:`~mast.core.attention.roi_memory_attention`."""

    def __init__(self, n_slots: int, key: torch.Tensor, n_labels: int, key_dtype: torch.dtype,
                 device: torch.device, cfg: AttentionConfig, bf16_keys: bool = False) -> None:
        self.keys = torch.zeros(n_slots, *key.shape, dtype=key_dtype, device=device)
        self.values = torch.zeros(n_slots, n_labels, *key.shape[1:], device=device)
        self.n_labels = n_labels
        self.cfg = cfg
        fused = device.type == "cpu" and key_dtype == torch.float32
        if fused and not attention_c.in_domain(cfg.radius, n_slots, n_labels):
            warnings.warn(f"{n_labels - 1} objects, {n_slots} memory slots, radius {cfg.radius}: the fused CPU read "
                          f"takes at most {attention_c.MAX_LABELS - 1} objects, {attention_c.MAX_FRAMES} slots and "
                          f"radius {attention_c.MAX_RADIUS}; using the slower PyTorch read", stacklevel=3)
            fused = False
        pairs = bf16_keys and attention_c.bf16_available() is None
        self.fused = (attention_c.FusedBank(n_slots, cfg, torch.get_num_threads(), pairs=pairs)
                      if fused and fused_builds() else None)

    def write(self, slot: int, key: torch.Tensor, labels: np.ndarray) -> None:
        self.keys[slot].copy_(key)
        lab = torch.from_numpy(labels.astype(np.int64)).to(self.keys.device)
        channels = torch.arange(self.values.shape[1], device=self.keys.device)
        self.values[slot] = (lab[None] == channels[:, None, None]).float()
        if self.fused is not None:
            self.fused.write(slot, self.keys[slot].numpy(), self.values[slot].numpy())

    def read(self, key: torch.Tensor, slots: list[int], distances: list[int]) -> torch.Tensor:
        if self.fused is not None:
            return torch.from_numpy(self.fused.read(key.float().numpy(), slots, distances))
        return roi_memory_attention(key, [self.keys[s] for s in slots], [self.values[s] for s in slots],
                                    distances, self.cfg)


class IdBank:
    """The fused Triton kernel's bank: ``keys [S, C, h, w]`` (float16 behind a half-precision encoder),
    label ids ``labels [S, h, w]`` int32 and each slot's distance of this read ``distances [S]``
    int32, all on the device; the kernel forms the one-hot values itself."""

    def __init__(self, n_slots: int, key: torch.Tensor, n_labels: int, key_dtype: torch.dtype,
                 device: torch.device, cfg: AttentionConfig) -> None:
        self.keys = torch.zeros(n_slots, *key.shape, dtype=key_dtype, device=device)
        self.labels = torch.zeros(n_slots, *key.shape[1:], dtype=torch.int32, device=device)
        self.cfg = cfg
        self.distances = torch.zeros(n_slots, dtype=torch.int32, device=device)
        self.n_labels = n_labels

    def write(self, slot: int, key: torch.Tensor, labels: np.ndarray) -> None:
        self.keys[slot].copy_(key)
        self.labels[slot].copy_(torch.from_numpy(labels.astype(np.int32)))

    def read(self, key: torch.Tensor, slots: list[int], distances: list[int]) -> torch.Tensor:
        from mast.plugins.roi_launch import roi_attention  # noqa: PLC0415 - imports triton

        dist = np.zeros(self.keys.shape[0], np.int32)
        dist[list(slots)] = distances
        self.distances.copy_(torch.from_numpy(dist))
        return roi_attention(key, self.keys, self.labels, self.distances, self.n_labels, self.cfg)


class TorchBackend:
    """Bank as preallocated tensors: :class:`OneHotBank` for the reference attention,
    :class:`IdBank` for the Triton kernel.

    precision:     the encoder's dtype (:data:`~mast.core.config.Precision`). fp32 runs the
                   ResNet-18 as it is (the published computation, rounding included: the parity
                   fixture's ill-conditioned pixels move by 1.3e-3 when the norms are folded);
                   bf16/fp16 convert the weights once, batch norms folded into the convolutions
                   (:func:`~mast.core.model.fuse_conv_bn`: on CPU, bf16, 41 -> 32 ms at 240x427),
                   as they are for the compact encoder in every precision. On a CPU with
                   AVX512-BF16, bf16 keys are also read with bf16 dot products (exact products of
                   the bf16 keys, float32 sums: :class:`~mast.core.attention_c.FusedBank` ``pairs``).
    kernel:        the memory read (:data:`AttentionKernel`).
    lab_on_device: upload uint8 frames and convert to Lab on ``device`` (None: on CUDA only).
    """

    name = "torch"
    input_size: tuple[int, int] | None = None   # any frame size

    def __init__(self, encoder: nn.Module, device: str = "cpu", precision: Precision = "fp32",
                 attention: AttentionConfig = AttentionConfig(), kernel: AttentionKernel = "auto",
                 lab_on_device: bool | None = None) -> None:
        if precision not in DTYPES:
            raise InputError(f"precision {precision!r}: expected one of {', '.join(DTYPES)}")
        self.device = torch.device(device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True   # fixed frame size: let cuDNN pick its fastest convolutions once
        # channels_last: oneDNN's fast convolution layout on CPU (and tensor cores on GPU)
        # fp32 keeps the published ResNet's norms as they are (its parity fixture); the compact
        # encoder has no such fixture: its norms are folded in fp32 too (240x427: 19.6 -> 15 ms)
        fold = precision != "fp32" or isinstance(encoder, CompactEncoder)
        encoder = fuse_conv_bn(encoder) if fold else encoder.eval()
        self.encoder = encoder.to(self.device, DTYPES[precision], memory_format=torch.channels_last)
        self.precision = precision
        self.attention = attention
        if kernel == "auto":
            kernel = "triton" if self.device.type == "cuda" and importlib.util.find_spec("triton") else "reference"
        self.kernel = kernel
        on_device = self.device.type == "cuda" if lab_on_device is None else lab_on_device
        self.lab = OpenCvLab().to(self.device) if on_device else None
        # the Triton kernel reads float16 keys as well: a half-precision encoder fills a half bank
        half_bank = kernel == "triton" and precision != "fp32"
        self.key_dtype = torch.float16 if half_bank else torch.float32
        self.bank_type = IdBank if kernel == "triton" else OneHotBank
        self.bank: OneHotBank | IdBank | None = None

    @property
    def keys(self) -> torch.Tensor | None:
        """The bank's keys ``[S, C, h, w]`` (None before ``allocate``)."""
        return None if self.bank is None else self.bank.keys

    @property
    def values(self) -> torch.Tensor | None:
        """The reference bank's one-hot label maps ``[S, L, h, w]`` (None on the Triton path)."""
        return self.bank.values if isinstance(self.bank, OneHotBank) else None

    @property
    def labels(self) -> torch.Tensor | None:
        """The Triton bank's label ids ``[S, h, w]`` int32 (None on the reference path)."""
        return self.bank.labels if isinstance(self.bank, IdBank) else None

    @property
    def n_labels(self) -> int:
        """Label channels of the bank (0 before ``allocate``)."""
        return 0 if self.bank is None else self.bank.n_labels

    def _lab(self, frames: np.ndarray) -> torch.Tensor:
        """Normalised Lab ``[N, 3, H, W]`` float32 on the device, channels_last, of BGR uint8 ``[N, H, W, 3]``."""
        if self.lab is None:
            lab = np.stack([bgr_to_lab(bgr) for bgr in frames])
            return torch.from_numpy(lab).to(self.device, memory_format=torch.channels_last)
        batch = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)   # one uint8 upload
        return self.lab(batch).contiguous(memory_format=torch.channels_last)

    def encode(self, bgr: np.ndarray) -> torch.Tensor:
        """BGR uint8 ``[H, W, 3]`` -> key ``[C, ceil(H/4), ceil(W/4)]`` (``key_dtype``, contiguous)."""
        return self.encode_batch(bgr[None])[0]

    @torch.inference_mode()
    def encode_batch(self, frames: np.ndarray) -> list[torch.Tensor]:
        """BGR uint8 ``[N, H, W, 3]`` -> N keys ``[C, ceil(H/4), ceil(W/4)]``: one encoder call (on CPU in
        fp32 each key equals ``encode``'s bit for bit: tests/runtime/test_engine.py)."""
        keys = self.encoder(self._lab(frames).to(DTYPES[self.precision]))
        return [key.to(self.key_dtype).contiguous() for key in keys]

    def fork(self) -> "TorchBackend":
        """The same encoder (shared), an empty bank of its own."""
        other = copy.copy(self)
        other.bank = None
        return other

    def allocate(self, n_slots: int, key: torch.Tensor, n_labels: int) -> None:
        extra = {"bf16_keys": self.precision == "bf16"} if self.bank_type is OneHotBank else {}
        self.bank = self.bank_type(n_slots, key, n_labels, self.key_dtype, self.device, self.attention, **extra)

    @torch.inference_mode()
    def write(self, slot: int, key: torch.Tensor, labels: np.ndarray) -> None:
        self.bank.write(slot, key, labels)

    @torch.inference_mode()
    def read(self, key: torch.Tensor, slots: list[int], distances: list[int]) -> torch.Tensor | None:
        if not slots:
            return None   # an anchor frame: nothing to read
        return self.bank.read(key, slots, distances)

    @torch.inference_mode()
    def decode(self, probs: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
        up = F.interpolate(probs[None], size=size, mode="bilinear", align_corners=False)
        # max(0).indices, not argmax(0): the same first maximum, but CPU argmax over the outer dim is
        # ~100x slower (20 ms instead of 0.2 ms at 240x427, 75 ms at 480x854, 2 threads)
        return up[0].max(0).indices.to(torch.uint8).cpu().numpy()

    def close(self) -> None:
        """Drop the bank (the encoder stays: ``allocate`` makes a new bank)."""
        self.bank = None
