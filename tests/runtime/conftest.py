"""Fixtures of the runtime tests: real DAVIS sequences at small sizes."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mast.core.masks import read_mask


@pytest.fixture(scope="session")
def dev_clip(data_dir: Path):
    """``load(name, n, (H, W))`` -> the first ``n`` frames of the davis2016-val-dev sequence ``name``
    (BGR uint8) resized to H x W with area interpolation, and its first mask (object id 1) resized
    with nearest."""
    root = data_dir / "davis2016-val-dev"

    def load(name: str, n: int, size: tuple[int, int]) -> tuple[list[np.ndarray], np.ndarray]:
        paths = sorted((root / "JPEGImages" / "480p" / name).glob("*.jpg"))[:n]
        frames = [cv2.resize(cv2.imread(str(p)), size[::-1], interpolation=cv2.INTER_AREA) for p in paths]
        mask = (read_mask(root / "Annotations" / "480p" / name / "00000.png") > 0).astype(np.uint8)
        return frames, cv2.resize(mask, size[::-1], interpolation=cv2.INTER_NEAREST)

    return load


@pytest.fixture
def toy_ids():
    """``toy_ids()`` -> a fresh 64 x 96 id mask (uint8) with objects 1, 3 and 200 (the drawing and
    sink tests' frames are 96 x 64)."""
    def make() -> np.ndarray:
        ids = np.zeros((64, 96), np.uint8)
        ids[5:25, 5:30] = 1
        ids[30:60, 50:90] = 3
        ids[40:50, 10:20] = 200
        return ids

    return make
