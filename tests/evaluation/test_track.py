"""``mast-eval`` tracking mode: a real clip end to end, and its bad inputs."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from mast.core.encoder import Encoder
from mast.core.masks import read_mask, write_mask
from mast.evaluation.cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def _one_line_error(res, needle: str) -> None:
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], res.output


@pytest.fixture
def clip(data_dir: Path, tmp_path: Path) -> Path:
    """The first 8 frames of blackswan (real DAVIS-2016 data, 0/255 masks) in a DAVIS layout."""
    root = tmp_path / "clip"
    for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        dst = root / kind / "480p" / "blackswan"
        dst.mkdir(parents=True)
        for p in sorted((data_dir / "davis2016-val-dev" / kind / "480p" / "blackswan").glob(f"*.{ext}"))[:8]:
            shutil.copy(p, dst)
    return root


def test_tracks_real_clip_end_to_end(clip: Path, parity_weights: Path, tmp_path: Path):
    """At 240x427 with the parity weights: masks for every frame at full size, scored, CSVs written."""
    out, csv_dir = tmp_path / "pred", tmp_path / "csv"
    res = _run("--davis", clip, "--checkpoint", parity_weights, "--size", "240x427", "--out", out,
               "--csv-dir", csv_dir)
    assert res.exit_code == 0, res.output
    masks = [read_mask(p) for p in sorted((out / "blackswan").glob("*.png"))]
    assert len(masks) == 8 and all(m.shape == (480, 854) for m in masks)
    gt = read_mask(clip / "Annotations/480p/blackswan/00003.png") > 0
    pred = masks[3] > 0
    assert (pred & gt).sum() / (pred | gt).sum() > 0.5  # the swan is followed, not lost or flooded
    assert (csv_dir / "global_results.csv").is_file() and "s/frame" in res.output


def test_wrong_size_first_mask_is_a_one_line_error(clip: Path, tmp_path: Path):
    first = clip / "Annotations/480p/blackswan/00000.png"
    write_mask(first, cv2.resize(read_mask(first), (853, 480), interpolation=cv2.INTER_NEAREST))
    res = _run("--davis", clip, "--keys", "lab", "--out", tmp_path / "o")
    _one_line_error(res, "853x480")


def test_empty_first_mask_is_a_one_line_error(clip: Path, tmp_path: Path):
    write_mask(clip / "Annotations/480p/blackswan/00000.png", np.zeros((480, 854), np.uint8))
    _one_line_error(_run("--davis", clip, "--keys", "lab", "--out", tmp_path / "o"), "no object")


def test_checkpoint_of_another_architecture_is_a_one_line_error(clip: Path, tmp_path: Path):
    state = Encoder().state_dict()
    del state["post_convolution.bias"]
    torch.save({"state_dict": state}, tmp_path / "other.pt")
    res = _run("--davis", clip, "--checkpoint", tmp_path / "other.pt", "--out", tmp_path / "o")
    _one_line_error(res, "post_convolution.bias")


def test_unreadable_frame_is_a_one_line_error(clip: Path, tmp_path: Path):
    (clip / "JPEGImages/480p/blackswan/00004.jpg").write_bytes(b"garbage")
    _one_line_error(_run("--davis", clip, "--keys", "lab", "--out", tmp_path / "o"), "00004.jpg")


def test_model_option_errors_are_one_line(clip: Path, tmp_path: Path):
    res = _run("--davis", clip, "--model", tmp_path / "missing", "--out", tmp_path / "o")
    _one_line_error(res, "is not a folder")
    (tmp_path / "m").mkdir()
    res = _run("--davis", clip, "--model", tmp_path / "m", "--keys", "lab", "--out", tmp_path / "o")
    _one_line_error(res, "exclude each other")
