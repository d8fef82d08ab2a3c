"""Fixtures of the training tests: a tiny synthetic moving-texture video (one_thread: tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest


def write_moving_texture(folder: Path, n: int = 30, size: int = 32, block: int = 8, seed: int = 0) -> Path:
    """A frame folder of ``n`` PNG frames (size x size): random colour blocks of ``block`` pixels
    translating by (0.5, 1) pixel per frame (rows, columns)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    side = size + n + block
    cells = rng.integers(0, 256, (side // block + 1, side // block + 1, 3), dtype=np.uint8)
    texture = cv2.resize(cells, None, fx=block, fy=block, interpolation=cv2.INTER_NEAREST)
    for k in range(n):
        y, x = k // 2, k
        cv2.imwrite(str(folder / f"{k:05d}.png"), texture[y:y + size, x:x + size])
    return folder


@pytest.fixture(scope="session")
def texture_video(tmp_path_factory) -> Path:
    """30 frames, 32x32, of a moving random-block texture."""
    return write_moving_texture(tmp_path_factory.mktemp("texture") / "frames")
