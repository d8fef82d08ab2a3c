"""The shipped weights (mast/core/weights/mast.pt, v4): the colour prior's backbone with a read-out
trained on raw video, as docs/RESULTS.md says, and they track the bundled clip better than copying its first
mask (v1 did not)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from mast.core.checkpoint import load_encoder
from mast.core.masks import read_mask
from mast.core.model import default_checkpoint, key_encoder
from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK
from mast.runtime.torch_backend import TorchBackend
from mast.runtime.tracker import Tracker
from mast.training.prior import colour_prior_encoder


def test_shipped_weights_are_the_colour_prior_backbone_with_a_trained_readout():
    shipped = load_encoder(default_checkpoint()).state_dict()
    prior = colour_prior_encoder().state_dict()
    for name, value in prior.items():
        expected = value.half().float() if value.is_floating_point() else value
        if name.startswith("feature_extraction."):
            assert torch.equal(shipped[name], expected), name
    readout = "post_convolution.weight"
    change = float((shipped[readout] - prior[readout]).norm() / prior[readout].norm())
    assert 1e-3 < change < 0.5  # trained (--trainable readout), not replaced


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def test_shipped_weights_track_the_demo_clip_better_than_copying_the_first_mask(one_thread):
    frames = sorted(DEMO_FRAMES.glob("*.jpg"))
    truth = [read_mask(DEMO_MASK.parent / f"{p.stem}.png") > 0 for p in frames]
    tracker = Tracker(TorchBackend(key_encoder("model", default_checkpoint())))
    first = read_mask(DEMO_MASK)
    tracker.start(cv2.imread(str(frames[0])), first)
    tracked = [_iou(tracker.step(cv2.imread(str(p))) > 0, t) for p, t in zip(frames[1:], truth[1:])]
    copied = [_iou(first > 0, t) for t in truth[1:]]
    assert np.mean(tracked) > np.mean(copied) + 0.1, (np.mean(tracked), np.mean(copied))
    assert min(tracked) > 0.6
