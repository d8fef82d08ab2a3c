"""Exactness against the published MAST code (../shared/parity): masks and one-step distributions."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from mast.core.checkpoint import load_encoder
from mast.core.config import ModelConfig
from mast.core.labels import PUBLISHED_LABEL_OFFSET
from mast.core.masks import read_mask
from mast.runtime.torch_backend import TorchBackend
from mast.runtime.tracker import Tracker

SEQUENCES = ("blackswan", "dog")


def _frames(parity_dir: Path, seq: str) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted((parity_dir / "JPEGImages/480p" / seq).glob("*.jpg"))]


def _reference(parity_dir: Path, seq: str) -> list[np.ndarray]:
    return [read_mask(p) for p in sorted((parity_dir / "reference" / seq).glob("*.png"))]


@pytest.mark.parametrize("seq", SEQUENCES)
def test_one_step_distribution_matches_published_code(parity_dir, parity_weights, seq):
    """Fed the reference's own memory masks, every step's label distribution is within 1e-3.

    Within 1e-3 at >= 99.9 % of the positions of every step, and everywhere on the steps where only
    frame 0 is read through its ROI. The few remaining positions (1-2 of 6420 on 4 steps of
    blackswan) are ill-conditioned: their coarse softmax is split between distant candidates,
    so the soft-argmax offset, and with it the output, moves by ~1e-2 for a score change of
    ~1e-4, which is float32 rounding on scores of ~1100. The float64 evaluation of these same
    semantics differs from the published float32 output there by the same amount (1.1e-2 at
    blackswan step 23, pixel (14, 59)), while it agrees with our float32 result to 2e-3: the
    residual is the reference's rounding, not a difference in what is computed.
    """
    frames, ref = _frames(parity_dir, seq), _reference(parity_dir, seq)
    soft = np.load(parity_dir / "reference" / seq / "soft.npz")["soft"]
    tracker = Tracker(TorchBackend(load_encoder(parity_weights)), ModelConfig(label_offset=PUBLISHED_LABEL_OFFSET))
    tracker.start(frames[0], ref[0])
    errors, outliers = [], []
    for k in range(len(frames) - 1):
        tracker.step(frames[k + 1], memory_mask=ref[k + 1])
        err = np.abs(tracker.last_distribution.numpy() - soft[k]).max(0)
        errors.append(float(err.max()))
        outliers.append(float((err > 1e-3).mean()))
        if k + 1 <= 20:  # frame 5 is read through its ROI only from frame 21 on
            assert err.max() <= 1e-3, f"step {k}: max abs error {err.max():.2e}"
    assert len(errors) == soft.shape[0] == 29
    assert max(outliers) <= 1e-3, f"share of positions above 1e-3 per step: {outliers}"
    assert max(errors) <= 2e-2, f"max abs error per step: {errors}"


def test_mast_eval_reproduces_published_masks(parity_dir, parity_weights, tmp_path):
    """`mast-eval --davis parity --checkpoint W --label-offset 0` writes the published code's masks
    (IoU >= 0.95)."""
    from typer.testing import CliRunner

    from mast.evaluation.cli import app

    out = tmp_path / "pred"
    result = CliRunner().invoke(app, ["--davis", str(parity_dir), "--checkpoint", str(parity_weights),
                                      "--out", str(out), "--csv-dir", str(tmp_path / "csv"),
                                      "--label-offset", str(PUBLISHED_LABEL_OFFSET)])
    assert result.exit_code == 0, result.output
    for seq in SEQUENCES:
        ref = _reference(parity_dir, seq)
        ious = []
        for i, r in enumerate(ref):
            pred = read_mask(out / seq / f"{i:05d}.png") > 0
            union = (pred | (r > 0)).sum()
            if union:
                ious.append((pred & (r > 0)).sum() / union)
        assert len(ious) >= 29
        assert np.mean(ious) >= 0.95, f"{seq}: mean IoU {np.mean(ious):.4f}"
    assert (tmp_path / "csv" / "global_results.csv").is_file()
