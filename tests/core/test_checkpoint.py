"""Checkpoint loading: official layout, strict keys, clear errors."""
from __future__ import annotations

import pytest
import torch

from mast.core.checkpoint import load_encoder, save_checkpoint
from mast.core.encoder import Encoder
from mast.core.errors import CheckpointError
from mast.core.model import key_encoder


def test_round_trip_in_fp16_and_dataparallel_prefix(tmp_path):
    model = Encoder()
    save_checkpoint(tmp_path / "half.pt", model, {"step": 3}, half=True)
    loaded = load_encoder(tmp_path / "half.pt")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype
        assert torch.allclose(a.float(), b.float(), atol=1e-3 * (1 + a.float().abs().max())), k
    state = {"module." + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state}, tmp_path / "dp.pt")
    assert torch.equal(load_encoder(tmp_path / "dp.pt").post_convolution.bias, model.post_convolution.bias)


def test_other_architecture_names_first_mismatching_key(tmp_path):
    state = Encoder().state_dict()
    state["post_convolution.weight"] = torch.zeros(32, 256, 3, 3)
    torch.save({"state_dict": state}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"post_convolution\.weight.*\(32, 256, 3, 3\)"):
        load_encoder(tmp_path / "other.pt")
    torch.save({"state_dict": torch.nn.Linear(3, 4).state_dict()}, tmp_path / "linear.pt")
    with pytest.raises(CheckpointError, match="missing key 'feature_extraction.conv1.0.weight'"):
        load_encoder(tmp_path / "linear.pt")


def test_missing_corrupt_and_empty_files(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_encoder(tmp_path / "bad.pt")
    torch.save({"epoch": 3}, tmp_path / "nodict.pt")
    with pytest.raises(CheckpointError, match="no state dict"):
        load_encoder(tmp_path / "nodict.pt")


def test_key_sources():
    lab = key_encoder("lab")
    x = torch.randn(1, 3, 9, 10)
    assert torch.equal(lab(x), x[:, :, ::4, ::4])
    a, b = key_encoder("random"), key_encoder("random")
    assert torch.equal(a.post_convolution.weight, b.post_convolution.weight)  # seeded
