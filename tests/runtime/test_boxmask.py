"""``mast.runtime.boxmask``: box/click parsing, clipping, ids in box order, overlaps, the fallback,
the whole-image setting being plain GrabCut, and a real DAVIS frame where the mask beats its own box."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mast.core.errors import InputError
from mast.core.masks import read_mask
from mast.runtime.boxmask import (GrabCutConfig, boxes_to_mask, clip_box, mask_box, parse_box, parse_click,
                                  segment_box)

H, W = 96, 128


def _scene() -> np.ndarray:
    """Grey textured background with a red disc (centre 40,48, r 18) and a blue square (80..112, 20..52)."""
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(128, 12, (H, W, 3)), 0, 255).astype(np.uint8)
    cv2.circle(img, (40, 48), 18, (30, 30, 220), -1)
    img[20:52, 80:112] = (220, 60, 30)
    return img


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_parse_box_and_click() -> None:
    assert parse_box("1, 2,30,40") == (1, 2, 30, 40)
    assert parse_click("5,6") == (5, 6, True) and parse_click("5,6:bg") == (5, 6, False)
    for bad in ("1,2,3", "a,b,c,d", "5,5,5,9"):
        with pytest.raises(InputError, match="--box"):
            parse_box(bad)
    for bad in ("5", "5,6:maybe"):
        with pytest.raises(InputError, match="--click"):
            parse_click(bad)


def test_clip_box() -> None:
    assert clip_box((-10, -5, 50, 500), (H, W)) == (0, 0, 50, H)
    with pytest.raises(InputError, match="outside the 128x96 image"):
        clip_box((200, 10, 300, 50), (H, W))


def test_ids_follow_box_order_and_later_box_wins() -> None:
    img = _scene()
    disc = np.zeros((H, W), np.uint8)
    cv2.circle(disc, (40, 48), 18, 1, -1)
    ids, warnings = boxes_to_mask(img, [(78, 18, 114, 54), (20, 28, 61, 69)])
    assert not warnings
    assert _iou(ids == 1, np.pad(np.ones((32, 32), bool), ((20, H - 52), (80, W - 112)))) > 0.9
    assert _iou(ids == 2, disc > 0) > 0.9
    # overlapping boxes: the second box's object is painted over the first's where both claim pixels
    both, _ = boxes_to_mask(img, [(20, 28, 61, 69), (20, 28, 61, 69)])
    assert set(np.unique(both).tolist()) == {0, 2}


def test_clicks_are_sure_labels() -> None:
    """A background click on the square and a foreground click on the grey background, in a box
    around both objects: the clicked discs follow the clicks, the disc object stays in."""
    img = _scene()
    box = (20, 18, 114, 69)
    plain = segment_box(img, box).mask
    assert plain[36, 96] and not plain[60, 70]
    clicked = segment_box(img, box, [(96, 36, False), (70, 60, True)]).mask
    assert not clicked[36, 96] and clicked[60, 70] and clicked[48, 40]


def test_whole_image_context_is_plain_grabcut() -> None:
    """A negative context is OpenCV's GrabCut on the whole image from the box (``GC_INIT_WITH_RECT``, 5
    iterations), bit for bit: the baseline that benchmarks/bench_mask.py holds the local context to."""
    img, box = _scene(), (20, 28, 61, 69)
    labels = np.zeros((H, W), np.uint8)
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.setRNGSeed(3)
    cv2.grabCut(img, labels, (20, 28, 41, 41), bgd, fgd, 5, cv2.GC_INIT_WITH_RECT)
    plain = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    result = segment_box(img, box, config=GrabCutConfig(context=-1.0, seed=3))
    assert plain.any() and result.warning is None and np.array_equal(result.mask, plain)


def test_fallback_to_the_box_with_a_warning() -> None:
    flat = np.full((H, W, 3), 128, np.uint8)           # nothing to separate
    ids, warnings = boxes_to_mask(flat, [(10, 10, 13, 12)])
    assert (ids == 1).sum() == 6 and len(warnings) == 1 and "using the whole box" in warnings[0]


def test_bad_clicks_and_no_box() -> None:
    with pytest.raises(InputError, match="lies in no box"):
        boxes_to_mask(_scene(), [(20, 28, 61, 69)], [(5, 5, True)])
    with pytest.raises(InputError, match="no box"):
        boxes_to_mask(_scene(), [])


def test_real_frame_beats_its_box(data_dir: Path) -> None:
    """DAVIS-2016 dev, camel frame 0: the mask from the ground truth's extent beats the box's own IoU."""
    root = data_dir / "davis2016-val-dev"
    bgr = cv2.imread(str(root / "JPEGImages/480p/camel/00000.jpg"))
    gt = read_mask(root / "Annotations/480p/camel/00000.png") > 0
    box = mask_box(gt)
    box_iou = _iou(np.pad(np.ones((box[3] - box[1], box[2] - box[0]), bool),
                          ((box[1], gt.shape[0] - box[3]), (box[0], gt.shape[1] - box[2]))), gt)
    ids, _ = boxes_to_mask(bgr, [box])
    assert _iou(ids == 1, gt) > box_iou + 0.1
