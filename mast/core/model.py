"""Which key encoder to use: trained weights, the shipped default, raw Lab, or a random encoder."""
from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mast.core.checkpoint import KeySource, load_encoder
from mast.core.encoder import Encoder, LabKeys
from mast.core.errors import CheckpointError

SHIPPED_WEIGHTS = Path(__file__).resolve().parent / "weights" / "mast.pt"
RANDOM_SEED = 0


def default_checkpoint() -> Path | None:
    """The weights shipped in the package, or None while none ship."""
    return SHIPPED_WEIGHTS if SHIPPED_WEIGHTS.is_file() else None


def key_encoder(source: KeySource = "model", checkpoint: str | Path | None = None) -> nn.Module:
    """A module mapping normalised Lab ``[B, 3, H, W]`` to keys ``[B, C, ceil(H/4), ceil(W/4)]``.

    source "model": ``checkpoint`` or else the shipped weights; "lab": raw Lab pixels (baseline);
    "random": the encoder with PyTorch's default initialisation, seed 0 (baseline).
    """
    if source == "lab":
        return LabKeys().eval()
    if source == "random":
        with torch.random.fork_rng():
            torch.manual_seed(RANDOM_SEED)
            return Encoder().eval()
    path = checkpoint or default_checkpoint()
    if path is None:
        raise CheckpointError("no checkpoint given and no shipped weights in this package: "
                              "pass --checkpoint FILE (from mast-train) or use --keys lab")
    return load_encoder(path)


def fuse_conv_bn(module: nn.Module) -> nn.Module:
    """An inference copy of ``module`` (eval mode) where every ``Conv2d`` directly followed by a
    ``BatchNorm2d`` inside an ``nn.Sequential`` is one convolution with the norm folded into its
    weights and bias (the norm becomes ``Identity``). Same function to float rounding (~1e-6
    relative); one pass less per norm (on CPU, bf16: ~20 % of the encoder's time)."""
    fused = copy.deepcopy(module).eval()
    for seq in (m for m in fused.modules() if isinstance(m, nn.Sequential)):
        for i in range(len(seq) - 1):
            conv, norm = seq[i], seq[i + 1]
            if isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats:
                seq[i], seq[i + 1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
    return fused
