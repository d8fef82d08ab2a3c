"""Augmentation: one flip, square crop and brightness draw per sample, applied to all its frames;
the frames as a tensor."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from mast.training.data.config import DataConfig


def augment_clip(frames: np.ndarray, rng: np.random.Generator, config: DataConfig) -> np.ndarray:
    """uint8 BGR [T, h, w, 3] (short side S) -> uint8 BGR [T, S, S, 3], one draw for all frames.

    The same random numbers are drawn whatever the flags, so toggling one augmentation does not
    change the others' draws.
    """
    flip, x0, y0 = rng.random(3)
    scale = rng.uniform(config.crop_scale_min, 1.0)
    gain = rng.uniform(1.0 - config.brightness, 1.0 + config.brightness)
    if not config.augment:
        return _crop_resize(frames, 1.0, 0.5, 0.5)  # the centre square (the frame itself if square)
    frames = _crop_resize(frames, scale, x0, y0)
    if config.flip and flip < 0.5:
        frames = frames[:, :, ::-1]
    if config.brightness > 0:
        frames = _brighten(frames, gain)
    return frames


def to_tensor(frames: np.ndarray, as_float: bool = False) -> torch.Tensor:
    """uint8 BGR [T, S, S, 3] -> [T, 3, S, S]: uint8, or float32 in [0, 1] when ``as_float``.

    Done in numpy: torch's intra-op threads made the float conversion ~30x slower in the main
    process on the 2-core dev machine.
    """
    chw = frames.transpose(0, 3, 1, 2)
    if not as_float:
        return torch.from_numpy(np.ascontiguousarray(chw))
    out = chw.astype(np.float32, order="C")
    out /= np.float32(255.0)  # division, so values equal ``uint8_tensor.float() / 255`` exactly
    return torch.from_numpy(out)


def _brighten(frames: np.ndarray, gain: float) -> np.ndarray:
    """Multiply uint8 frames [T, S, S, 3] by ``gain`` (rounded, saturated) through one lookup table."""
    lut = np.clip(np.arange(256) * gain + 0.5, 0, 255).astype(np.uint8)
    t, h, w, c = frames.shape
    return cv2.LUT(np.ascontiguousarray(frames).reshape(t * h, w, c), lut).reshape(t, h, w, c)


def _crop_resize(frames: np.ndarray, scale: float, x0: float, y0: float) -> np.ndarray:
    """[T, h, w, 3] -> [T, S, S, 3], S = min(h, w): the square of side ``scale * S`` at relative
    position (x0, y0) in [0, 1), resized to S (bilinear; not resized when it is S already)."""
    h, w = frames.shape[1:3]
    size = min(h, w)
    side = max(1, min(size, int(round(scale * size))))
    x, y = int(x0 * (w - side + 1)), int(y0 * (h - side + 1))
    crop = frames[:, y:y + side, x:x + side]
    if side == size:
        return crop
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in crop])
