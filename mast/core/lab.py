"""The colour input of the encoder: OpenCV Lab, normalised (docs/DESIGN.md step 1)."""
from __future__ import annotations

import cv2
import numpy as np

LAB_MEAN = (50.0, 0.0, 0.0)
LAB_STD = (50.0, 127.0, 127.0)


def bgr_to_lab(bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 ``[H, W, 3]`` -> normalised Lab float32 ``[3, H, W]``.

    float32 / 255 -> ``cv2.COLOR_BGR2Lab`` -> ``((L - 50) / 50, a / 127, b / 127)``.
    """
    lab = cv2.cvtColor(bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    lab -= np.asarray(LAB_MEAN, np.float32)
    lab /= np.asarray(LAB_STD, np.float32)
    return np.ascontiguousarray(lab.transpose(2, 0, 1))
