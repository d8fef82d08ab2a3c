"""Held-out reconstruction loss and its two trivial predictors, against hand-computed values."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mast.core.encoder import Encoder
from mast.training.holdout import HoldoutConfig, holdout_losses, holdout_pairs, main
from mast.training.objective import ObjectiveConfig, cycle_spread, encode


def _huber(x: np.ndarray) -> float:
    a = np.abs(x)
    return float(np.mean(np.where(a < 1, 0.5 * a * a, a - 0.5)))


def _lab(bgr: tuple[int, int, int]) -> np.ndarray:
    """Normalised (a, b) of one BGR colour with the exact CIE formula (as the objective's)."""
    pixel = np.array([[bgr]], dtype=np.float32) / 255
    lab = cv2.cvtColor(pixel, cv2.COLOR_BGR2LAB)[0, 0]
    return lab[1:] / 127


def test_identity_and_zero_predictors_match_hand_computed_losses(one_thread):
    """Reference: left half colour A, right half colour B; target: A and B swapped. Identity copies
    the reference's chroma, so it errs by |A - B| everywhere; zero errs by the target's chroma."""
    a, b = (40, 90, 200), (200, 120, 30)
    h, w = 16, 24
    ref = np.zeros((h, w, 3), np.uint8)
    ref[:, : w // 2], ref[:, w // 2:] = a, b
    tgt = ref[:, ::-1].copy()
    pairs = torch.from_numpy(np.stack([ref, tgt]))[None].permute(0, 1, 4, 2, 3).contiguous()
    figures = holdout_losses(Encoder(), pairs, HoldoutConfig(size=(h, w), gap=1, batch=1))
    ca, cb = _lab(a), _lab(b)
    identity = np.mean([_huber(20 * np.array([ca[c] - cb[c], cb[c] - ca[c]])) for c in (0, 1)])
    zero = np.mean([_huber(20 * np.array([ca[c], cb[c]])) for c in (0, 1)])
    assert figures["identity"] == pytest.approx(identity, rel=2e-3)
    assert figures["zero"] == pytest.approx(zero, rel=2e-3)
    assert np.isfinite(figures["loss"])


def test_holdout_leaves_each_module_mode_alone(one_thread):
    """A run with frozen batch norms (train mode, norms in eval mode) keeps them frozen."""
    encoder = Encoder().train()
    norm = encoder.feature_extraction.conv1[1]
    norm.eval()
    pairs = torch.randint(0, 256, (2, 2, 3, 16, 16), dtype=torch.uint8)
    holdout_losses(encoder, pairs, HoldoutConfig(size=(16, 16), gap=1))
    assert encoder.training and not norm.training


def test_holdout_pairs_read_a_davis_root(shared_dir):
    root = shared_dir / "data" / "davis2016-val-dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    config = HoldoutConfig(size=(32, 56), gap=5, every=40)
    pairs = holdout_pairs(root, config)
    assert pairs.dtype == torch.uint8 and pairs.shape[1:] == (2, 3, 32, 56)
    assert len(pairs) >= 8  # at least one pair per sequence


def test_holdout_reports_the_round_trip_spread_of_both_channels(one_thread):
    torch.manual_seed(0)
    encoder = Encoder().eval()
    pairs = torch.randint(0, 256, (3, 2, 3, 16, 24), dtype=torch.uint8)
    figures = holdout_losses(encoder, pairs, HoldoutConfig(size=(16, 24), gap=2, batch=2))
    with torch.no_grad():
        direct = [float(cycle_spread(encode(encoder, pairs, torch.full((3,), c))[0], torch.full((3, 1), 2),
                                     ObjectiveConfig().attention)) for c in (1, 2)]
    assert figures["spread"] == pytest.approx(np.mean(direct), rel=1e-5)


def test_holdout_command_reports_a_missing_checkpoint_in_one_line(shared_dir, tmp_path, capsys):
    root = shared_dir / "data" / "davis2016-val-dev"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    with pytest.raises(SystemExit) as done:
        main(["--davis", str(root), str(tmp_path / "missing.pt")])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2
    assert err.startswith("error: checkpoint not found") and "\n" not in err
