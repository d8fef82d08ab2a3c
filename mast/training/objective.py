"""The self-supervised reconstruction objective of MAST (paper Sec. 3.2, 3.3, 4; docs/DESIGN.md "Training").

For every sample (T frames, references first, target last, uint8 BGR):

1. **Lab.** ``frames / 255`` -> normalised Lab ``((L-50)/50, a/127, b/127)`` with the exact CIE
   formula (``mast.core.lab_torch``; inference uses OpenCV's table, ~4e-3 apart: irrelevant here).
2. **Channel dropout** (the information bottleneck, Sec. 3.2.1). One chroma channel, ``a`` (1) or
   ``b`` (2), is chosen per sample with p = 0.5 (a pure function of (seed, sample index), so a
   resumed run draws the same channels) and set to **0** in the encoder input of *every* frame of
   the sample. It is the reconstruction target. 0 is the neutral chroma value (grey), so the
   network sees "no colour" rather than a shifted colour. The published code also multiplies the
   whole input by 3/2 after dropping (dropout-style); inference feeds unscaled Lab, so by default we
   do not (``ObjectiveConfig.rescale_input=True`` restores it).
3. **Values** (image-feature alignment, Sec. 4): each reference's dropped channel once per 4x4
   cell, ``[1, S/4, S/4]``, at the cell's pixel ``label_offset``: 1 by default, where inference
   reads labels (``mast.core.labels`` says why); 0 is the published code's ``[::4, ::4]``, whose
   reconstruction is read 1.5 px off the target (v4's held-out loss: 0.257 at 0, 0.231 at 1).
4. **Reconstruction** by the inference attention (``mast.core.attention.roi_memory_attention``
   semantics, computed batched and differentiably by ``mast.training.attention``) with window
   radius 6 (paper: R = 6 in training): stage "pair" reads one reference, stage "memory" reads
   all references with their frame distances (ROI localisation, differentiable through the
   soft-argmax and the bilinear weights, for d > 15).
5. **Loss**: bilinear upsampling (align_corners=False) of the ``[1, S/4, S/4]`` reconstruction to
   ``S x S`` and the Huber (smooth L1, threshold 1) loss against the full-resolution dropped channel
   of the target, mean over pixels and batch. Like the published code the two are multiplied by
   ``huber_scale`` = 20 first: with chroma values ~0.1, an unscaled Huber loss is a pure squared
   error; the scale makes errors above 1/20 (6 units of a or b) count linearly (robust) as the
   paper's Huber loss intends. The reported loss is in these scaled units.
6. **Cycle term** (ours, off by default: ``cycle_weight`` = 0). Reconstructing a colour rewards
   reading *any* pixel of that colour, so it never asks the keys to tell a grey goat from grey rock;
   tracking does. With ``cycle_weight`` > 0 the loss adds that weight times the expected squared
   displacement, in key pixels, of a round trip target -> first reference -> target through the
   same attention (``cycle_spread``: a random walk of Jabri et al. 2020's kind, read out with
   coordinate values instead of a matrix product): 0 when every pixel reads exactly its own match
   and back, large when labels spread or drift.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from mast.core.config import AttentionConfig
from mast.core.labels import cell_points
from mast.core.lab_torch import bgr_to_lab_torch
from mast.training.attention import batched_memory_attention

CHROMA_CHANNELS = (1, 2)  # a, b in normalised Lab [L, a, b]
STRIDE = 4


@dataclass(frozen=True)
class ObjectiveConfig:
    """Settings of the reconstruction objective.

    radius:        attention window radius R in feature pixels (paper: 6 in training).
    roi_threshold: references farther than this many frames go through ROI localisation.
    huber_scale:   prediction and target are multiplied by this before the smooth-L1 loss
                   (published code: 20); 1 gives the paper's equation literally.
    rescale_input: multiply the input by 3/2 after dropping the channel (published code); False
                   keeps the input as inference sees it.
    seed:          seed of the per-sample channel choice.
    cycle_weight:  weight of the round-trip term (``cycle_spread``, key pixels^2) added to the
                   Huber loss; 0 = the paper's objective.
    label_offset:  pixel of each 4x4 cell whose dropped channel is the reference's value (as
                   ``ModelConfig.label_offset`` for the masks at inference; 0 = the published code).
                   Held-out losses measured before this field existed used 0.
    """

    radius: int = 6
    roi_threshold: int = 15
    huber_scale: float = 20.0
    rescale_input: bool = False
    seed: int = 0
    cycle_weight: float = 0.0
    label_offset: int = 1

    @property
    def attention(self) -> AttentionConfig:
        return AttentionConfig(radius=self.radius, roi_threshold=self.roi_threshold)


def dropped_channels(indices: torch.Tensor | np.ndarray | range, seed: int = 0) -> torch.Tensor:
    """The chroma channel (1 = a, 2 = b) dropped for each global sample index: int64 ``[B]``.

    A pure function of (seed, index): p = 0.5 each, independent of batch layout and resumption.
    """
    return torch.tensor([CHROMA_CHANNELS[int(np.random.default_rng([seed, int(i), 7]).integers(2))]
                         for i in indices], dtype=torch.int64)


def frames_to_lab(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (or float in [0, 1]) BGR ``[..., 3, S, S]`` -> float32 normalised Lab, same shape."""
    bgr = frames.float() / 255.0 if frames.dtype == torch.uint8 else frames.float()
    lead = bgr.shape[:-3]
    return bgr_to_lab_torch(bgr.reshape(-1, *bgr.shape[-3:])).reshape(*lead, *bgr.shape[-3:])


def split_channel(lab: torch.Tensor, channels: torch.Tensor, rescale: bool = False):
    """Drop one chroma channel per sample.

    lab:      ``[B, T, 3, S, S]`` normalised Lab.
    channels: int64 ``[B]``, 1 or 2.
    Returns (input ``[B, T, 3, S, S]`` with that channel 0 (x 3/2 when ``rescale``),
    dropped channel ``[B, T, 1, S, S]``).
    """
    onehot = F.one_hot(channels.to(lab.device), 3).to(lab.dtype)[:, None, :, None, None]  # [B,1,3,1,1]
    target = (lab * onehot).sum(2, keepdim=True)
    inp = lab * (1 - onehot)
    return (inp * 1.5 if rescale else inp), target


def reconstruct(keys: torch.Tensor, values: torch.Tensor, distances: torch.Tensor,
                cfg: AttentionConfig) -> torch.Tensor:
    """Attention read of the target from its references (``batched_memory_attention``).

    keys:      ``[B, T, C, h, w]`` (target last).
    values:    ``[B, T-1, L, h, w]`` the references' values at feature resolution.
    distances: int ``[B, T-1]`` frame distances target - reference (>= 1).
    Returns ``[B, L, h, w]`` float32.
    """
    return batched_memory_attention(keys[:, -1], keys[:, :-1], values, distances, cfg)


def huber_loss(pred: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """Smooth-L1 (Huber, threshold 1) of ``scale * pred`` vs ``scale * target``; mean, scalar."""
    return F.smooth_l1_loss(pred * scale, target * scale, reduction="mean")


def cycle_spread(keys: torch.Tensor, distances: torch.Tensor, cfg: AttentionConfig) -> torch.Tensor:
    """Mean expected squared round-trip displacement (key pixels^2) target -> reference -> target.

    keys:      ``[B, T, C, h, w]`` (target last; the round trip uses the first reference, at
               distances ``[:, 0]``).
    distances: int ``[B, T-1]``.
    A walker at target pixel p steps to reference pixel q with the attention of p over the
    reference, then back to target pixel p' with the attention of q over the target; returns the
    mean over p and the batch of E|p' - p|^2. Computed with two attention reads of the values
    (y, x, y^2 + x^2) (centred coordinates), so it costs two reads of 3 channels. Scalar, float32.
    """
    b, _, _, h, w = keys.shape
    ys = torch.arange(h, device=keys.device, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, device=keys.device, dtype=torch.float32) - (w - 1) / 2
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    coords = torch.stack([y, x, y * y + x * x])                                 # [3, h, w]
    d = distances[:, :1]
    target, reference = keys[:, -1], keys[:, 0]
    back = batched_memory_attention(reference, target[:, None], coords.expand(b, 1, 3, h, w), d, cfg)
    there = batched_memory_attention(target, reference[:, None], back[:, None], d, cfg)  # [B, 3, h, w]
    spread = there[:, 2] - 2 * (y * there[:, 0] + x * there[:, 1]) + coords[2]
    return spread.mean()


def reconstruction_loss(encoder: nn.Module, frames: torch.Tensor, distances: torch.Tensor,
                        channels: torch.Tensor, cfg: ObjectiveConfig = ObjectiveConfig(),
                        amp_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The training loss of one batch (module docstring).

    frames:    uint8 BGR ``[B, T, 3, S, S]`` (target last; ``[B, T, 3, H, W]`` works too), on
               the training device.
    distances: int64 ``[B, T-1]``.
    channels:  int64 ``[B]``, dropped chroma channel per sample (``dropped_channels``).
    amp_dtype: run the encoder under autocast to this dtype (float16 on CUDA, bfloat16); the
               attention and the loss run in float32.
    Returns the scalar loss (float32): Huber, plus ``cfg.cycle_weight`` x ``cycle_spread`` when
    that weight is not 0. All T frames of the batch go through the encoder in one call, so
    BatchNorm (train mode) normalises over all B*T frames.
    """
    keys, dropped = encode(encoder, frames, channels, cfg, amp_dtype)
    pred = read_dropped(keys, dropped, distances, cfg, frames.shape[-2:])
    loss = huber_loss(pred, dropped[:, -1], cfg.huber_scale)
    if cfg.cycle_weight:
        loss = loss + cfg.cycle_weight * cycle_spread(keys, distances, cfg.attention)
    return loss


def encode(encoder: nn.Module, frames: torch.Tensor, channels: torch.Tensor,
           cfg: ObjectiveConfig = ObjectiveConfig(), amp_dtype: torch.dtype | None = None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys of the channel-dropped frames and the dropped channel.

    frames: uint8 BGR ``[B, T, 3, H, W]``. Returns (keys ``[B, T, C, H/4, W/4]`` float32,
    dropped channel of every frame ``[B, T, 1, H, W]``).
    """
    b, t, _, h, w = frames.shape
    inp, dropped = split_channel(frames_to_lab(frames), channels, cfg.rescale_input)
    amp = nullcontext() if amp_dtype is None else torch.autocast(frames.device.type, dtype=amp_dtype)
    with amp:
        keys = encoder(inp.reshape(b * t, 3, h, w))
    return keys.float().reshape(b, t, *keys.shape[1:]), dropped


def read_dropped(keys: torch.Tensor, dropped: torch.Tensor, distances: torch.Tensor, cfg: ObjectiveConfig,
                       size: tuple[int, int]) -> torch.Tensor:
    """The target's dropped channel read from the references, upsampled to ``size``: ``[B, 1, H, W]``.

    keys ``[B, T, C, h, w]`` and dropped ``[B, T, 1, H, W]`` as ``encode`` returns them."""
    (h, w), (big_h, big_w) = keys.shape[-2:], dropped.shape[-2:]
    rows = torch.from_numpy(cell_points(big_h, h, STRIDE, cfg.label_offset)).to(keys.device)
    cols = torch.from_numpy(cell_points(big_w, w, STRIDE, cfg.label_offset)).to(keys.device)
    values = dropped[:, :-1][..., rows[:, None], cols]
    pred = reconstruct(keys, values, distances, cfg.attention)
    return F.interpolate(pred, size=tuple(size), mode="bilinear", align_corners=False)


def predict_dropped(encoder: nn.Module, frames: torch.Tensor, distances: torch.Tensor,
                    channels: torch.Tensor, cfg: ObjectiveConfig = ObjectiveConfig(),
                    amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's dropped channel as the attention reconstructs it, and the truth.

    frames: uint8 BGR ``[B, T, 3, H, W]`` (square in training, any H x W for validation).
    Returns (prediction ``[B, 1, H, W]`` upsampled bilinearly from ``[B, 1, H/4, W/4]``,
    dropped channel of every frame ``[B, T, 1, H, W]``), float32.
    """
    keys, dropped = encode(encoder, frames, channels, cfg, amp_dtype)
    return read_dropped(keys, dropped, distances, cfg, frames.shape[-2:]), dropped
