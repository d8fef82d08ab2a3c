"""The colour input of the encoder: OpenCV Lab, normalised (docs/DESIGN.md step 1)."""
from __future__ import annotations

import cv2
import numpy as np

LAB_MEAN = (50.0, 0.0, 0.0)
LAB_STD = (50.0, 127.0, 127.0)
UNIT = np.arange(256, dtype=np.float32) / 255.0   # uint8 -> float32 / 255 as one table lookup


def bgr_to_lab(bgr: np.ndarray) -> np.ndarray:
    """BGR uint8 ``[H, W, 3]`` -> normalised Lab float32 ``[3, H, W]``.

    float32 / 255 -> ``cv2.COLOR_BGR2Lab`` -> ``((L - 50) / 50, a / 127, b / 127)``.
    """
    lab = cv2.LUT(bgr, UNIT)                     # the same values as bgr.astype(float32) / 255, one pass
    cv2.cvtColor(lab, cv2.COLOR_BGR2Lab, dst=lab)
    cv2.subtract(lab, (*LAB_MEAN, 0.0), dst=lab)
    cv2.divide(lab, (*LAB_STD, 1.0), dst=lab)
    return np.ascontiguousarray(lab.transpose(2, 0, 1))
