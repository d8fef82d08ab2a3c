"""Checkpoint loading: official layout, strict keys, clear errors."""
from __future__ import annotations

import argparse

import pytest
import torch

from mast.core.checkpoint import load_encoder, save_checkpoint
from mast.core.encoder import Encoder
from mast.core.errors import CheckpointError
from mast.core.mobilenet import CompactConfig, CompactEncoder
from mast.core.model import SHIPPED_WEIGHTS as SHIPPED
from mast.core.model import key_encoder


def test_round_trip_in_fp16_and_dataparallel_prefix(tmp_path):
    model = Encoder()
    save_checkpoint(tmp_path / "half.pt", model, {"step": 3}, half=True)
    loaded = load_encoder(tmp_path / "half.pt")
    for (k, a), b in zip(model.state_dict().items(), loaded.state_dict().values()):
        assert b.dtype == a.dtype
        # float16 storage rounds each weight to nearest: within 2^-11 relative, 2^-25 absolute (subnormals)
        torch.testing.assert_close(b.float(), a.float(), rtol=2.0 ** -11, atol=2.0 ** -25, msg=k)
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
    with pytest.raises(CheckpointError, match="not a mast-tracker checkpoint: .*bad.pt: a text file"):
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


def test_foreign_files_are_one_line_naming_what_is_wrong(tmp_path):
    """Empty, random, truncated and object-holding files: one line each, no torch advice."""
    real = SHIPPED.read_bytes()
    cases = {"empty.pt": (b"", "empty"), "random.pt": (bytes(range(7, 256)) * 20, "not a PyTorch file"),
             "cut.pt": (real[: len(real) // 2], "truncated or damaged")}
    for name, (data, why) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=f"not a mast-tracker checkpoint: .*{name}: .*{why}") as info:
            load_encoder(tmp_path / name)
        assert "\n" not in str(info.value) and "weights_only" not in str(info.value)
    torch.save({"state_dict": {}, "config": argparse.Namespace(lr=1)}, tmp_path / "objects.pt")
    with pytest.raises(CheckpointError, match="Python objects besides tensors"):
        load_encoder(tmp_path / "objects.pt")


def test_unknown_architecture_is_refused(tmp_path):
    torch.save({"state_dict": Encoder().state_dict(), "arch": {"name": "vit-huge"}}, tmp_path / "vit.pt")
    with pytest.raises(CheckpointError, match="unknown encoder architecture 'vit-huge'"):
        load_encoder(tmp_path / "vit.pt")


def test_compact_encoder_round_trips_with_its_architecture(tmp_path):
    """The arch entry rebuilds the compact encoder (taps, colour, temperature) with no flag."""
    config = CompactConfig(taps=(4, 7), temperature=0.07, colour_weight=2.0)
    torch.manual_seed(0)
    model = CompactEncoder(config).eval()
    save_checkpoint(tmp_path / "compact.pt", model)
    loaded = load_encoder(tmp_path / "compact.pt")
    assert isinstance(loaded, CompactEncoder) and loaded.config == config and loaded.key_dim == 56 + 6
    x = torch.randn(1, 3, 33, 50)
    assert torch.equal(loaded(x), model(x))
    assert "arch" not in torch.load(_saved_resnet(tmp_path), weights_only=True)   # the official layout stays


def _saved_resnet(tmp_path):
    save_checkpoint(tmp_path / "resnet.pt", Encoder())
    return tmp_path / "resnet.pt"
