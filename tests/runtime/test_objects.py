"""``mast.runtime.objects``: lost objects on a synthetic mask sequence (reported once per loss)."""
from __future__ import annotations

import numpy as np

from mast.runtime.objects import LossConfig, ObjectMonitor

H, W = 40, 60


def _mask(side1: int, side2: int = 10) -> np.ndarray:
    """Object 1: a ``side1`` x ``side1`` square at (5, 5); object 2: a ``side2`` square at (40, 20)."""
    ids = np.zeros((H, W), np.uint8)
    ids[5:5 + side1, 5:5 + side1] = 1
    ids[20:20 + side2, 40:40 + side2] = 2
    return ids


def test_loss_reported_once_after_n_frames_then_again_after_recovery() -> None:
    monitor = ObjectMonitor(LossConfig(fraction=0.05, frames=3))
    monitor.anchor(_mask(20))                        # object 1: 400 px anchored; 5 % = 20 px
    sides = [20, 10, 4, 4, 4, 4, 0, 0, 20, 3, 3, 3]  # 16 px < 20 from frame 2 on, back at frame 8, down again
    events = [monitor.update(_mask(s)) for s in sides]
    assert events == [[], [], [], [], [1], [], [], [], [], [], [], [1]]
    assert monitor.objects[1].losses == 2 and monitor.objects[1].lost
    assert not any(2 in e for e in events) and monitor.present(2)   # the other object is untouched


def test_present_flag_and_good_box() -> None:
    monitor = ObjectMonitor(LossConfig(fraction=0.5, frames=2))
    monitor.anchor(_mask(20))
    monitor.update(_mask(16))                         # 256 px >= 200: good, box 5..21
    assert monitor.objects[1].good_box == (5, 5, 21, 21) and monitor.present(1)
    monitor.update(_mask(8))                          # low once: not lost yet, still present
    assert monitor.present(1) and monitor.objects[1].good_box == (5, 5, 21, 21)
    assert monitor.update(_mask(8)) == [1] and not monitor.present(1)
    monitor.update(_mask(16, side2=0))                # object 2 vanishes: absent, not present
    assert monitor.present(1) and not monitor.present(2) and monitor.objects[2].area == 0


def test_describe_loss_is_one_line() -> None:
    monitor = ObjectMonitor(LossConfig(frames=1))
    monitor.anchor(_mask(20))
    assert monitor.update(_mask(2)) == [1]
    line = monitor.describe_loss(1, 17)
    assert "\n" not in line and line.startswith("object 1 lost at frame 17: 4 px, under 5% of its anchored 400 px")
