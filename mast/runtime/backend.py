"""The interface every backend implements (torch-free): encode a frame, write a slot, read the memory,
decode a distribution; and what the tracker, the factory and the tools may ask of any backend
(``name``, ``device``, ``precision``, ``input_size``, ``close``) without probing for attributes.

Handles (keys, label distributions) are backend-native arrays: torch tensors, numpy arrays or
device buffers; the tracker only passes them back to the same backend.
"""
from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class Backend(Protocol):
    """A place where the per-frame step of docs/DESIGN.md runs.

    name:       "torch", "onnxruntime" or "tensorrt".
    device:     where it runs; ``str(device)`` is "cpu" or "cuda" (torch: a ``torch.device``).
    precision:  the encoder's precision ("fp32", "bf16", "fp16": :data:`mast.core.config.Precision`).
    input_size: (H, W) the frames must have (an exported model's fixed size), or None (any size).

    Per frame the tracker calls ``encode``, then ``read`` exactly once (with no slots for an anchor
    frame: nothing to read), then ``write`` for its slots. A backend whose one execution computes the
    key and the distribution together (TensorRT: ``encode`` stages the frame, ``read`` runs the
    engine) relies on that order; the others accept a ``write`` of any key they encoded.
    """

    name: str
    device: Any
    precision: str
    input_size: tuple[int, int] | None

    def encode(self, bgr: np.ndarray) -> Any:
        """BGR uint8 frame ``[H, W, 3]`` -> key handle ``[C, ceil(H/4), ceil(W/4)]``."""

    def encode_batch(self, frames: np.ndarray) -> list[Any]:
        """BGR uint8 frames ``[N, H, W, 3]`` of one size -> N key handles, the same as ``encode`` gives
        each (one encoder call where the backend can: the batched engine, :mod:`mast.runtime.engine`)."""

    def fork(self) -> "Backend":
        """Another backend on the same model (encoder and sessions shared, not copied) with an empty
        bank of its own (allocated by ``allocate``): one per stream of :mod:`mast.runtime.engine`."""

    def allocate(self, n_slots: int, key: Any, n_labels: int) -> None:
        """(Re)allocate the bank: ``n_slots`` keys shaped like ``key`` and label maps with ``n_labels`` channels."""

    def write(self, slot: int, key: Any, labels: np.ndarray) -> None:
        """Store ``key`` and the label-channel map ``labels`` ``[h, w]`` (int, at the strided centres) in ``slot``."""

    def read(self, key: Any, slots: list[int], distances: list[int]) -> Any:
        """Label distribution handle ``[L, h, w]`` of the query ``key`` read from ``slots`` at
        ``distances`` (>= 1); None when ``slots`` is empty (an anchor frame)."""

    def decode(self, probs: Any, size: tuple[int, int]) -> np.ndarray:
        """Bilinear upsampling (align_corners=False) to ``size`` (H, W), argmax -> channel map uint8 ``[H, W]``."""

    def close(self) -> None:
        """Release what the backend holds (device buffers, sessions); it is unusable afterwards."""
