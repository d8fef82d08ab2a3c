"""The Lab transform inside encoder.onnx reproduces OpenCV's float COLOR_BGR2Lab (table interpolation)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch

from mast.core.lab import bgr_to_lab
from mast.core.lab_graph import OpenCvLab
from mast.core.lab_torch import bgr_to_lab_torch
from mast.export.onnx_export import trace

SEQUENCES = ("blackswan", "bmx-trees", "breakdance", "camel", "car-roundabout", "cows", "dog", "goat")


def _frames(data_dir: Path, index: str = "00000") -> list[np.ndarray]:
    root = data_dir / "davis2016-val-dev" / "JPEGImages" / "480p"
    return [cv2.imread(str(root / s / f"{index}.jpg")) for s in SEQUENCES]


@pytest.fixture(scope="module")
def lab_session() -> ort.InferenceSession:
    model = trace(OpenCvLab(), (torch.zeros(1, 48, 64, 3, dtype=torch.uint8),), ["frame"], ["lab"], 17)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _ort_lab(session: ort.InferenceSession, bgr: np.ndarray) -> np.ndarray:
    """Run the traced graph (fixed at 48x64) over a frame cut into 48x64 crops."""
    h, w = bgr.shape[0] // 48 * 48, bgr.shape[1] // 64 * 64
    crops = bgr[:h, :w].reshape(h // 48, 48, w // 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(-1, 48, 64, 3)
    out = np.stack([session.run(None, {"frame": c[None]})[0][0] for c in crops])
    return out.reshape(h // 48, w // 64, 3, 48, 64).transpose(2, 0, 3, 1, 4).reshape(3, h, w)


def test_matches_opencv_on_real_frames(data_dir: Path):
    """Every pixel of the first frame of each shared sequence: within 1e-3 (in fact float rounding)."""
    lab = OpenCvLab()
    for frame in _frames(data_dir):
        got = lab(torch.from_numpy(frame)[None])[0].numpy()
        assert np.abs(got - bgr_to_lab(frame)).max() <= 1e-5


def test_exact_formula_would_not_do(data_dir: Path):
    """Why the graph interpolates OpenCV's table: the exact CIE formula misses by more than 1e-3."""
    frame = _frames(data_dir)[0]
    exact = bgr_to_lab_torch(torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255)[0].numpy()
    assert np.abs(exact - bgr_to_lab(frame)).max() > 1e-3


def test_onnx_graph_matches_opencv_on_real_frames(data_dir: Path, lab_session: ort.InferenceSession):
    for frame in _frames(data_dir, "00010")[:4]:
        got = _ort_lab(lab_session, frame)
        want = bgr_to_lab(frame)[:, : got.shape[1], : got.shape[2]]
        assert np.abs(got - want).max() <= 1e-3


def test_matches_opencv_on_random_and_extreme_colours(lab_session: ort.InferenceSession):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    frame[0, :8] = [[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [1, 1, 1], [254, 254, 254], [128, 128, 128]]
    got = lab_session.run(None, {"frame": frame[None]})[0][0]
    assert np.abs(got - bgr_to_lab(frame)).max() <= 1e-5
