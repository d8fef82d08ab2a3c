"""Encoder shapes and the official checkpoint's parameter names."""
from __future__ import annotations

import pytest
import torch

from mast.core.encoder import Encoder, LabKeys


@pytest.mark.parametrize("h, w", [(240, 427), (33, 17), (64, 64), (1, 5)])
def test_key_shape_is_quarter_resolution_rounded_up(h, w):
    with torch.inference_mode():
        key = Encoder().eval()(torch.zeros(2, 3, h, w))
    assert key.shape == (2, 64, -(-h // 4), -(-w // 4))
    assert LabKeys()(torch.zeros(1, 3, h, w)).shape[2:] == key.shape[2:]


def test_parameter_names_and_shapes_are_the_official_ones(shared_dir):
    lines = (shared_dir / "reference" / "official-checkpoint-keys.txt").read_text().splitlines()
    official = {}
    for line in lines:
        if line.startswith("n_keys") or not line.strip():
            continue
        name, shape = line.split(" ", 1)
        official[name] = list(eval(shape))  # a literal list like [64, 3, 7, 7]
    state = Encoder().state_dict()
    assert list(state) == list(official)
    assert {k: list(v.shape) for k, v in state.items()} == official


def test_trainable_parameter_count():
    assert sum(p.numel() for p in Encoder().parameters()) == 5291648
