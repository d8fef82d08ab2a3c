"""The one image reader and name order (mast.core.images) of evaluation, training, sources and mast-mask."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mast.core.errors import InputError
from mast.core.images import list_images, natural_key, read_frame, read_image


def test_natural_order_compares_numbers_as_numbers() -> None:
    names = ["f10.jpg", "F2.jpg", "f1.png", "f02b.jpg", "a.jpg"]
    assert sorted(names, key=natural_key) == ["a.jpg", "f1.png", "F2.jpg", "f02b.jpg", "f10.jpg"]


def test_list_images_keeps_frames_only_in_natural_order(tmp_path: Path) -> None:
    for name in ("10.jpg", "2.PNG", "1.jpeg", "notes.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "3.jpg").mkdir()
    assert [p.name for p in list_images(tmp_path)] == ["1.jpeg", "2.PNG", "10.jpg"]


def test_read_image_bgr_from_jpeg_png_and_grey(tmp_path: Path) -> None:
    bgr = np.zeros((6, 8, 3), np.uint8)
    bgr[..., 2] = 255                                     # red in BGR
    cv2.imwrite(str(tmp_path / "red.png"), bgr)
    cv2.imwrite(str(tmp_path / "grey.png"), np.full((6, 8), 77, np.uint8))
    np.testing.assert_array_equal(read_image(tmp_path / "red.png"), bgr)
    grey = read_image(tmp_path / "grey.png")
    assert grey.shape == (6, 8, 3) and grey.dtype == np.uint8 and (grey == 77).all()


def test_read_image_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(InputError, match=r"cannot read frame .*bad\.jpg.*replace or remove"):
        read_image(bad, "frame")
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(InputError, match="cannot read image .*empty.png"):
        read_image(tmp_path / "empty.png")
    with pytest.raises(InputError, match="image not found: .*missing.jpg"):
        read_image(tmp_path / "missing.jpg")


def test_read_frame_decodes_a_truncated_jpeg_with_a_warning(tmp_path):
    """A JPEG without its end marker: read_image refuses it, read_frame decodes what is there."""
    noise = np.random.default_rng(0).integers(0, 256, (64, 80, 3), dtype=np.uint8)   # scan data dominates the file
    ok, data = cv2.imencode(".jpg", noise)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data.tobytes()[: len(data) * 2 // 3])
    with pytest.raises(InputError):
        read_image(cut, "frame")
    image, warning = read_frame(cut, "frame")
    assert image.shape == (64, 80, 3) and "truncated JPEG" in warning and str(cut) in warning
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with pytest.raises(InputError, match="cannot read frame"):
        read_frame(tmp_path / "junk.jpg", "frame")
    whole = tmp_path / "whole.jpg"
    whole.write_bytes(data.tobytes())
    assert read_frame(whole)[1] is None
