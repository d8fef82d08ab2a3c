"""The colour-kernel prior: encoder weights set analytically, no data and no labels.

MAST learns keys whose dot products say "these two pixels have the same colour under the dropped
channel". The zeroth-order solution of that objective can be written down: keys whose dot product
is a Gaussian-like kernel between the Lab colours of two 3x3 patches,

    <k(p), k(q)> = sum over the 9 taps t and Lab channels c of kappa_{t,c} cos(w_c (m_c(p+t) - m_c(q+t)))
                 ~ const - |dLab_patch|^2 / (2 sigma^2),

realised inside the official ResNet-18 layout so that every backend, export and checkpoint runs
it unchanged:

conv1 + BN + ReLU   64 ramps ``relu(m_c - t_k)`` of a local Lab mean ``m_c`` (each channel with its
                    own jittered 7x7 Gaussian); the BN shift sets the knot ``t_k``.
residual blocks     non-negative convs (a near-delta per channel plus a little mixing) and
                    positive-affine norms, so no ReLU clips after conv1: each branch adds
                    ``ALPHA`` x its input to the shortcut; 1x1 shortcuts copy channels k -> k mod C.
post_convolution    read-out fitted by least squares on constant colours: each of its 3x3 taps
                    writes 6 orthonormal output dims ``sqrt(kappa_c) [cos, sin](w_c m_c)`` of the
                    colour it sees, read from all 256 channels (minimum-norm solution).

The same construction, with a wider kernel (``PARITY_PRIOR``), makes the parity fixture's weights
(``../shared/parity``); there it makes the published code track. Here it is the *starting point* of self-supervised training
(``mast-train --init colour-prior``): tracking by colour patches alone scores J&F 54.7 on
davis2016-val-dev at 240x427 (README), and training adds what colour cannot tell apart.
Training from it keeps the batch norms in eval mode (``TrainConfig.batchnorm = "frozen"``): the
construction relies on the running statistics it sets; batch statistics would undo it.

With ``PriorConfig.texture`` (``TEXTURE_PRIOR``, ``--init texture-prior``) some conv1 channels hold
rectified luminance edges ``relu(dL/dn - knot)`` instead of luminance ramps: what a colour kernel
cannot see (a grey goat on grey rock). They get no read-out weight in the construction (a hand-set
edge correlation pulls labels onto any texture: README); read-out training learns their weight.

Deterministic: float64 arithmetic from a fixed seed, then float32. ``PriorConfig`` holds the
construction's free parameters (the defaults are the parity fixture's).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import torch

from mast.core.encoder import Encoder

BN_EPS = 1e-5             # BatchNorm2d eps
# per Lab channel: (unit of the network input, knot range, number of ramps, frequency w_c);
# the network input is ((L - 50) / 50, a / 127, b / 127)
COLOURS = ((50.0, (-1.05, 0.95), 22, math.pi / 2.2),
           (127.0, (-0.55, 0.62), 21, math.pi / 1.2),
           (127.0, (-0.55, 0.62), 21, math.pi / 1.2))
# residual blocks: (name, in channels, out channels, stride)
BLOCKS = (("layer1.0", 64, 64, 1), ("layer1.1", 64, 64, 1), ("layer2.0", 64, 128, 2),
          ("layer2.1", 128, 128, 1), ("layer3.0", 128, 256, 1), ("layer3.1", 256, 256, 1),
          ("layer4.0", 256, 256, 1), ("layer4.1", 256, 256, 1))
FIT_COLOURS = 4000        # constant colours the read-out is fitted on

State = "OrderedDict[str, torch.Tensor]"


@dataclass(frozen=True)
class PriorConfig:
    """The free parameters of the construction. The defaults are the shipped prior's; the parity
    fixture's weights are ``PARITY_PRIOR`` (a wider kernel: 4/8 Lab units).

    patch_sigma: kernel width (Lab units) at the centre tap and at the 8 other taps; smaller is a
                 sharper colour match (a lower softmax temperature).
    conv1_sigma: width (input pixels) of conv1's Gaussian colour filters.
    bell:        width (pixels) of the residual branches' 3x3 filters.
    alpha:       DC gain of each residual branch relative to its input.
    mix:         DC gain of the channel mixing in each conv.
    seed:        the jitter of filters, gains and statistics.
    texture:     conv1 channels given to rectified luminance edges instead of luminance ramps: pairs
                 of opposite signs over ``texture // 2`` orientations, ``relu(dL/dn - knot)``; zero
                 on constant colours, so the read-out's fit ignores them and training weighs them.
                 0 (the default, and the parity fixture's) is the pure colour kernel.
    texture_sigma: width (input pixels) of the edge channels' derivative-of-Gaussian filters.
    texture_knot:  the edge channels' threshold (network-input L units per input pixel; 0.02 = one
                 Lab L unit per pixel).
    texture_gain:  the edge channels' gain relative to the ramps' (edges are ~0.03 on real frames,
                 ramps ~0.5).
    """

    patch_sigma: tuple[float, float] = (3.0, 6.0)
    conv1_sigma: float = 1.5
    bell: float = 0.3
    alpha: float = 0.2
    mix: float = 0.02
    seed: int = 20260
    texture: int = 0
    texture_sigma: float = 1.0
    texture_knot: float = 0.02
    texture_gain: float = 10.0

    def __post_init__(self) -> None:
        if self.texture % 2 or not 0 <= self.texture <= COLOURS[0][2] - 2:
            raise ValueError(f"texture={self.texture}: expected an even number of edge channels, 0 to {COLOURS[0][2] - 2}")


# A/B on the dev splits at 240x427 (README): patch_sigma 4/8 -> 3/6 -> 2/4 scored J&F 42.6 -> 44.4
# -> 44.1 on multiobject-dev; conv1_sigma 1.0 instead of 1.5: 43.3.
PARITY_PRIOR = PriorConfig(patch_sigma=(4.0, 8.0))
# the colour kernel plus 8 edge channels whose weight the read-out learns (README: A/B of texture=8)
TEXTURE_PRIOR = PriorConfig(texture=8)
# the names ``mast-train --init`` and ``mast.training.holdout`` accept for constructed weights
PRIORS = {"colour-prior": PriorConfig(), "texture-prior": TEXTURE_PRIOR}


def colour_prior_encoder(config: PriorConfig = PriorConfig()) -> Encoder:
    """An ``Encoder`` (eval mode, float32) holding the colour-kernel prior weights."""
    state, _ = colour_prior_state(config)
    model = Encoder()
    model.load_state_dict(state, strict=True)
    return model.eval()


def colour_prior_state(config: PriorConfig = PriorConfig()) -> tuple[State, float]:
    """The prior's state dict (float32, official key names) and the read-out's worst relative fit
    error on constant colours (~2e-3)."""
    g = torch.Generator().manual_seed(config.seed)
    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    _conv1(sd, g, config)
    for block in BLOCKS:
        _block(sd, g, config, *block)
    err = _readout(sd, g, config)
    return OrderedDict((k, v.float() if v.is_floating_point() else v) for k, v in sd.items()), err


def _uniform(g: torch.Generator, shape, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)


def _bell(g: torch.Generator, n: int, k: int, width: float) -> torch.Tensor:
    """``[n, k, k]`` jittered Gaussians of the given width (pixels), each summing to 1."""
    r = torch.arange(k, dtype=torch.float64) - k // 2
    f = torch.exp(-(r[:, None] ** 2 + r[None] ** 2) / (2 * width ** 2)) * _uniform(g, (n, k, k), 0.7, 1.3)
    return f / f.sum((1, 2), keepdim=True)


def _batchnorm(sd: State, prefix: str, gain: torch.Tensor, shift: torch.Tensor, g: torch.Generator) -> None:
    """An eval-mode BatchNorm computing ``gain * z + shift``, with random-looking running statistics."""
    var, mean = _uniform(g, gain.numel(), 0.5, 2.0), _uniform(g, gain.numel(), -0.5, 0.5)
    sd[prefix + ".weight"] = gain * torch.sqrt(var + BN_EPS)
    sd[prefix + ".bias"] = shift + gain * mean
    sd[prefix + ".running_mean"] = mean
    sd[prefix + ".running_var"] = var
    sd[prefix + ".num_batches_tracked"] = torch.tensor(0)


def _positive_conv(g: torch.Generator, k: int, src: torch.Tensor, cin: int, config: PriorConfig) -> torch.Tensor:
    """Non-negative ``[len(src), cin, k, k]`` conv: output o reads input ``src[o]`` through a jittered
    bell (DC gain 1) plus a little of every input (DC gain ``mix`` in all)."""
    w = _uniform(g, (len(src), cin, k, k), 0.0, 2.0) * (config.mix / (cin * k * k))
    w[torch.arange(len(src)), src] += _bell(g, len(src), k, config.bell)
    return w


def edge_channels(config: PriorConfig) -> torch.Tensor:
    """The conv1 channels holding edges (``config.texture`` of them, in place of the last luminance
    ramps); backbone channel o descends from conv1 channel ``o % 64``."""
    start = COLOURS[0][2] - config.texture
    return torch.arange(start, start + config.texture)


def _conv1(sd: State, g: torch.Generator, config: PriorConfig) -> None:
    """conv1: channel k smooths Lab channel c; its norm subtracts the knot t_k (the ReLU makes a ramp).
    The ``edge_channels`` filter luminance instead, with the knot ``texture_knot``."""
    counts = [n - (config.texture if c == 0 else 0) for c, (_, _, n, _) in enumerate(COLOURS)]
    edges = edge_channels(config)
    colour = ~torch.isin(torch.arange(64), edges)
    w = torch.zeros(64, 3, 7, 7, dtype=torch.float64)
    w[colour, torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])] = _bell(g, 64, 7, config.conv1_sigma)[colour]
    w[edges, 0] = _edge_filters(config.texture, config.texture_sigma)
    sd["feature_extraction.conv1.0.weight"] = w
    knots = torch.full((64,), config.texture_knot, dtype=torch.float64)
    knots[colour] = torch.cat([torch.linspace(lo, hi, n, dtype=torch.float64)
                               for (_, (lo, hi), _, _), n in zip(COLOURS, counts)])
    gain = _uniform(g, 64, 0.5, 2.0)
    gain[edges] *= config.texture_gain
    _batchnorm(sd, "feature_extraction.conv1.1", gain, -gain * knots, g)


def _edge_filters(n: int, sigma: float) -> torch.Tensor:
    """``[n, 7, 7]`` derivative-of-Gaussian filters, signs alternating, over ``n // 2`` orientations;
    each answers 1 to a luminance ramp of slope 1 per pixel along its direction."""
    r = torch.arange(7, dtype=torch.float64) - 3
    y, x = torch.meshgrid(r, r, indexing="ij")
    out = torch.zeros(n, 7, 7, dtype=torch.float64)
    for j in range(n):
        angle = math.pi * (j // 2) / max(1, n // 2)
        along = x * math.cos(angle) + y * math.sin(angle)
        f = along * torch.exp(-(x ** 2 + y ** 2) / (2 * sigma ** 2))
        out[j] = (1 if j % 2 == 0 else -1) * f / (f * along).sum()
    return out


def _block(sd: State, g: torch.Generator, config: PriorConfig, name: str, cin: int, cout: int, stride: int) -> None:
    """A residual block whose output continues its input channels plus ``alpha`` x a blurred copy."""
    p = f"feature_extraction.{name}."
    src = torch.arange(cout) % cin                      # output o continues input src[o]
    perm = torch.randperm(cout, generator=g)            # the branch's middle channels, shuffled
    inv = torch.argsort(perm)
    sd[p + "left.0.weight"] = _positive_conv(g, 3, src[perm], cin, config)
    gain1 = _uniform(g, cout, 0.5, 2.0)
    _batchnorm(sd, p + "left.1", gain1, _uniform(g, cout, 0.0, 0.1), g)
    sd[p + "left.3.weight"] = _positive_conv(g, 3, inv, cout, config)
    # branch DC gain alpha (jittered) x its input's; the shifts are >= 0, so no ReLU clips
    _batchnorm(sd, p + "left.4", config.alpha * _uniform(g, cout, 0.7, 1.3) / gain1[inv], _uniform(g, cout, 0.0, 0.05), g)
    if stride != 1 or cin != cout:
        sd[p + "shortcut.0.weight"] = _positive_conv(g, 1, src, cin, config)
        _batchnorm(sd, p + "shortcut.1", _uniform(g, cout, 0.7, 1.3), _uniform(g, cout, 0.0, 0.05), g)


def _dc_features(sd: State, x: torch.Tensor) -> torch.Tensor:
    """Backbone output (before post_convolution) on constant images of the colours ``x [N, 3]``: ``[N, 256]``."""
    def conv(z, key):
        return z @ sd[key].sum((2, 3)).T

    def norm(z, p):
        return (z - sd[p + ".running_mean"]) / torch.sqrt(sd[p + ".running_var"] + BN_EPS) * sd[p + ".weight"] + sd[p + ".bias"]

    f = "feature_extraction."
    z = torch.relu(norm(conv(x, f + "conv1.0.weight"), f + "conv1.1"))
    for name, _, _, _ in BLOCKS:
        p = f + name + "."
        left = norm(conv(torch.relu(norm(conv(z, p + "left.0.weight"), p + "left.1")), p + "left.3.weight"), p + "left.4")
        short = norm(conv(z, p + "shortcut.0.weight"), p + "shortcut.1") if p + "shortcut.0.weight" in sd else z
        z = torch.relu(left + short)
    return z


def _embedding(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """``[N, 6]`` colour embedding: ``e(x) . e(y) = sum_c kappa_c cos(w_c (x_c - y_c))``."""
    out = []
    for c, (unit, _, _, w) in enumerate(COLOURS):
        k = unit / sigma / w
        out += [k * torch.cos(w * x[:, c]), k * torch.sin(w * x[:, c])]
    return torch.stack(out, 1)


def _readout(sd: State, g: torch.Generator, config: PriorConfig) -> float:
    """post_convolution: each 3x3 tap reads its colour embedding (6 dims of its own) from all channels."""
    x = torch.stack([_uniform(g, FIT_COLOURS, lo, hi) for _, (lo, hi), _, _ in COLOURS], 1)
    # edge channels are fitted nothing (they carry offsets and mixing on constant colours)
    colour = ~torch.isin(torch.arange(256) % 64, edge_channels(config))
    a = torch.cat([_dc_features(sd, x) * colour, torch.ones(FIT_COLOURS, 1, dtype=torch.float64)], 1)
    q, _ = torch.linalg.qr(torch.randn(64, 54, generator=g, dtype=torch.float64))
    w, bias, err = torch.zeros(64, 256, 3, 3, dtype=torch.float64), torch.zeros(64, dtype=torch.float64), 0.0
    for t in range(9):
        target = _embedding(x, config.patch_sigma[t != 4])
        sol = torch.linalg.lstsq(a, target, driver="gelsd").solution      # min-norm: spread over channels
        err = max(err, float((a @ sol - target).norm(dim=1).max() / target.norm(dim=1).max()))
        qt = q[:, 6 * t:6 * (t + 1)]
        w[:, :, t // 3, t % 3] = qt @ sol[:-1].T
        bias += qt @ sol[-1]
    sd["post_convolution.weight"] = w
    sd["post_convolution.bias"] = bias
    return err
