"""``mast-mask``: a palette PNG with ids in box order from the command line; one-line errors, exit 2."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from mast.core.masks import read_mask
from mast.runtime.boxmask import mask_box
from mast.runtime.mask_tool import app

runner = CliRunner()


def invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    return result, result.output


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    img = np.full((96, 128, 3), 128, np.uint8)
    img += np.random.default_rng(0).integers(0, 20, img.shape, dtype=np.uint8)
    cv2.circle(img, (40, 48), 18, (30, 30, 220), -1)
    img[20:52, 80:112] = (220, 60, 30)
    path = tmp_path / "scene.png"
    cv2.imwrite(str(path), img)
    return path


def test_writes_a_palette_png_with_ids_in_box_order(scene: Path, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "mask.png"
    result, text = invoke("--image", scene, "--box", "78,18,114,54", "--box", "20,28,61,69", "--out", out)
    assert result.exit_code == 0, text
    with Image.open(out) as im:
        assert im.mode == "P"
    ids = read_mask(out)
    assert set(np.unique(ids).tolist()) == {0, 1, 2}
    assert ids[36, 96] == 1 and ids[48, 40] == 2
    assert "id 1" in text and "id 2" in text


def test_real_frame_two_objects(data_dir: Path, tmp_path: Path) -> None:
    """The dog's box (DAVIS dev, frame 0) split into a left and a right half: ids 1 (left) and 2 (right)."""
    root = data_dir / "davis2016-val-dev"
    gt = read_mask(root / "Annotations/480p/dog/00000.png")
    box = mask_box(gt)
    left = f"{box[0]},{box[1]},{(box[0] + box[2]) // 2},{box[3]}"
    right = f"{(box[0] + box[2]) // 2},{box[1]},{box[2]},{box[3]}"
    out = tmp_path / "m.png"
    result, text = invoke("--image", root / "JPEGImages/480p/dog/00000.jpg", "--box", left, "--box", right, "--out", out)
    assert result.exit_code == 0, text
    ids = read_mask(out)
    xs1, xs2 = np.nonzero(ids == 1)[1], np.nonzero(ids == 2)[1]
    assert len(xs1) and len(xs2) and xs1.mean() < xs2.mean()


@pytest.mark.parametrize(("args", "message"), [
    (("--box", "500,10,600,50"), "outside the 128x96 image"),
    (("--box", "1,2,3"), "is not a box"),
    (("--box", "20,28,61,69", "--click", "2,2"), "lies in no box"),
])
def test_bad_boxes(scene: Path, tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result, text = invoke("--image", scene, *args, "--out", tmp_path / "m.png")
    assert result.exit_code == 2 and message in text and "Traceback" not in text
    assert not (tmp_path / "m.png").exists()


def test_unreadable_and_missing_image(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    result, text = invoke("--image", bad, "--box", "0,0,4,4", "--out", tmp_path / "m.png")
    assert result.exit_code == 2 and "cannot read image" in text
    result, text = invoke("--image", tmp_path / "nope.jpg", "--box", "0,0,4,4", "--out", tmp_path / "m.png")
    assert result.exit_code == 2 and "image not found" in text


def test_unwritable_output(scene: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file")
    result, text = invoke("--image", scene, "--box", "20,28,61,69", "--out", blocker / "m.png")
    assert result.exit_code == 2 and "cannot write mask" in text


def test_fallback_warning(tmp_path: Path) -> None:
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((32, 32, 3), 99, np.uint8))
    result, text = invoke("--image", flat, "--box", "4,4,7,6", "--out", tmp_path / "m.png")
    assert result.exit_code == 0 and "warning: GrabCut found no object" in text
    assert (read_mask(tmp_path / "m.png") == 1).sum() == 6
