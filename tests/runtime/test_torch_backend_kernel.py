"""The torch backend with the fused Triton kernel (the CUDA default) tracks as with the reference
attention: here on CPU under Triton's interpreter (tests/conftest.py), on the GPU when there is one."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from mast.core.config import AttentionConfig
from mast.core.encoder import LabKeys
from mast.core.masks import read_mask
from mast.runtime.torch_backend import TorchBackend
from mast.runtime.tracker import Tracker

CLIP = Path(__file__).resolve().parents[2] / "runtime" / "demo" / "clip"
SIZE = (40, 72)   # feature map 10 x 18
# R = 3, ROI beyond d = 3: the anchor frame is read through its ROI from frame 4 on
SMALL = AttentionConfig(radius=3, roi_threshold=3, dilation_step=3, max_dilation=2, tile=4)


def _clip(n: int) -> tuple[list[np.ndarray], np.ndarray]:
    frames = [cv2.resize(cv2.imread(str(CLIP / "JPEGImages" / "240p" / "camel" / f"{i:05d}.jpg")), SIZE[::-1],
                         interpolation=cv2.INTER_AREA) for i in range(n)]
    mask = read_mask(CLIP / "Annotations" / "240p" / "camel" / "00000.png")
    return frames, cv2.resize(mask, SIZE[::-1], interpolation=cv2.INTER_NEAREST)


def test_default_kernel_follows_the_device():
    assert TorchBackend(LabKeys(), "cpu").kernel == "reference"
    if torch.cuda.is_available():
        assert TorchBackend(LabKeys(), "cuda").kernel == "triton"


def test_triton_kernel_tracks_as_the_reference(device):
    frames, mask = _clip(5)
    kernel = Tracker(TorchBackend(LabKeys(), device, attention=SMALL, kernel="triton"))
    reference = Tracker(TorchBackend(LabKeys(), "cpu", attention=SMALL, kernel="reference"))
    kernel.start(frames[0], mask)
    reference.start(frames[0], mask)
    for f in frames[1:]:
        got, want = kernel.step(f), reference.step(f)
        np.testing.assert_allclose(kernel.last_distribution.cpu().numpy(),
                                   reference.last_distribution.numpy(), atol=1e-4, rtol=0)
        assert (got == want).mean() > 0.999
