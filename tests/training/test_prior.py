"""The colour-kernel prior: deterministic, the parity fixture's construction, a colour similarity."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from mast.core.encoder import Encoder
from mast.training.prior import PARITY_PRIOR, colour_prior_encoder, colour_prior_state


def test_prior_is_deterministic_official_layout_and_fits_its_readout():
    state, err = colour_prior_state()
    again, _ = colour_prior_state()
    assert set(state) == set(Encoder().state_dict())
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert err < 5e-3


def test_prior_equals_the_parity_fixture_weights(parity_dir):
    spec = importlib.util.spec_from_file_location("make_parity_weights", parity_dir / "make_parity_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    reference, _ = module.make()
    state, _ = colour_prior_state(PARITY_PRIOR)
    assert all(torch.equal(state[k], reference[k]) for k in reference)


def test_prior_keys_prefer_the_same_colour(one_thread):
    """Dot products of the keys rank a patch of the query's colour above a patch of another colour."""
    encoder = colour_prior_encoder()
    lab = torch.zeros(1, 3, 32, 48)
    lab[:, 1, :, :16] = 0.3    # reddish third
    lab[:, 2, :, 32:] = -0.3   # bluish third
    with torch.no_grad():
        keys = encoder(lab)[0]                                # [64, 8, 12]
    red, grey, blue = keys[:, 4, 2], keys[:, 4, 6], keys[:, 4, 10]
    assert red @ red > red @ grey > red @ blue
    assert blue @ blue > blue @ grey


def test_texture_prior_adds_edge_channels_the_readout_starts_without(one_thread):
    """``PriorConfig(texture=8)``: the edge channels are silent on flat colour, answer a luminance
    step on their side, and get no read-out weight until training gives them some."""
    from mast.training.prior import PriorConfig, edge_channels

    config = PriorConfig(texture=8)
    encoder, edges = colour_prior_encoder(config), edge_channels(config)
    assert edges.tolist() == list(range(14, 22))
    lab = torch.zeros(1, 3, 32, 48)
    lab[:, 0, :, 24:] = 0.5                                  # a vertical luminance step (25 L units)
    with torch.no_grad():
        stem = encoder.feature_extraction.conv1(lab)[0]      # [64, 16, 24]
    flat, step = stem[:, 8, 4], stem[:, 8, 12]
    assert torch.all(flat[edges] == 0)
    assert step[edges[0]] > 1 and step[edges[1]] == 0       # the rising-edge filter answers, its mirror not
    readout = encoder.post_convolution.weight                # [64, 256, 3, 3]
    from_edges = torch.isin(torch.arange(256) % 64, edges)
    assert readout[:, from_edges].abs().max() < 1e-9 and readout[:, ~from_edges].abs().sum() > 0
    state, err = colour_prior_state(config)
    assert err < 5e-3
    for bad in (3, 22):
        with pytest.raises(ValueError, match="texture"):
            PriorConfig(texture=bad)
