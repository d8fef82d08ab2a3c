"""The compact encoder (mast.core.mobilenet): layout, geometry, key norm, colour kernel, Lab -> RGB."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from mast.core.errors import CheckpointError
from mast.core.lab import bgr_to_lab
from mast.core.mobilenet import TAP_CHANNELS, CompactConfig, CompactEncoder, LabToRgb


def test_state_dict_is_the_original_mobilenetv2_layout():
    """Parameter names ``features.N.conv.K.*`` (the ImageNet file's), plus the temperature scalar."""
    names = CompactEncoder(CompactConfig(taps=(4, 7))).state_dict()
    assert "features.0.0.weight" in names and "features.6.conv.7.running_var" in names
    assert "features.7.conv.0.weight" not in names   # only the blocks the taps need
    assert names["temperature"].shape == () and float(names["temperature"]) == pytest.approx(0.05)


@pytest.mark.parametrize("size", [(240, 427), (33, 50), (17, 9)])
def test_keys_are_at_stride_4_with_norm_sqrt_inverse_temperature(size):
    torch.manual_seed(0)
    model = CompactEncoder(CompactConfig(taps=(4, 7, 11), temperature=0.08)).eval()
    keys = model(torch.randn(2, 3, *size))
    h, w = -(-size[0] // 4), -(-size[1] // 4)
    assert keys.shape == (2, TAP_CHANNELS[4] + TAP_CHANNELS[7] + TAP_CHANNELS[11], h, w) == (2, model.key_dim, h, w)
    # float32 rounding of a norm over C channels, twice (normalise, then measure): 2 C eps relative
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(keys.norm(dim=1), torch.full((2, h, w), math.sqrt(1 / 0.08)),
                               rtol=2 * model.key_dim * eps, atol=0)


def test_colour_channels_are_a_cosine_kernel_of_the_cell_mean():
    """Two constant frames: the colour part of their key dot product is w/3 sum_c cos(f_c dLab_c)."""
    model = CompactEncoder(CompactConfig(taps=(4,), colour_weight=3.0)).eval()
    a, b = torch.tensor([0.2, -0.1, 0.3]), torch.tensor([-0.4, 0.25, 0.1])
    with torch.no_grad():
        ka = model(a.view(1, 3, 1, 1).expand(1, 3, 8, 8))[0, -6:, 0, 0]
        kb = model(b.view(1, 3, 1, 1).expand(1, 3, 8, 8))[0, -6:, 0, 0]
    freq = torch.tensor([math.pi / 2.2, math.pi / 1.2, math.pi / 1.2])
    assert float(ka @ kb) == pytest.approx(float((torch.cos(freq * (a - b))).sum()), rel=1e-5)


def test_lab_to_rgb_inverts_step_1(data_dir):
    """OpenCV's Lab (a fixed-point table, ~4e-3 off the CIE formula) inverted by the CIE formula."""
    bgr = cv2.imread(str(data_dir / "davis2016-val-dev/JPEGImages/480p/camel/00000.jpg"))
    rgb = LabToRgb()(torch.from_numpy(bgr_to_lab(bgr))[None])[0].permute(1, 2, 0).numpy()
    err = np.abs(rgb - bgr[..., ::-1] / 255.0)
    assert err.max() < 1e-2 and err.mean() < 2e-3


def _lab_to_rgb_out_of_place(lab: torch.Tensor) -> torch.Tensor:
    """LabToRgb's arithmetic written with a new tensor per operation (its form before it updated
    its intermediates in place)."""
    def finv(f):
        k = 6 / 29
        hi, lo = f.clamp_min(k), f.clamp_max(k)
        return hi * hi * hi + (3 * k * k) * (lo - k)

    fy = lab[:, 0:1] * (50 / 116) + 66 / 116
    x, y, z = (finv(f) for f in (fy + lab[:, 1:2] * (127 / 500), fy, fy - lab[:, 2:3] * (127 / 200)))
    m = LabToRgb().xyz_to_rgb
    rgb = torch.cat([m[o, 0] * x + m[o, 1] * y + m[o, 2] * z for o in range(3)], 1).clamp(0, 1)
    power = 1.055 * torch.exp(torch.log(rgb.clamp_min(0.0031308)) * (1 / 2.4)) - 0.055
    linear = 12.92 * rgb
    return linear + (rgb > 0.0031308).to(rgb.dtype) * (power - linear)


def test_lab_to_rgb_in_place_is_the_same_arithmetic_and_keeps_its_input(data_dir):
    """The in-place front gives the out-of-place formula's bits and leaves the Lab it is given (which
    the colour channels read afterwards) as it was; the encoder still trains through it."""
    bgr = cv2.imread(str(data_dir / "davis2016-val-dev/JPEGImages/480p/camel/00000.jpg"))
    lab = torch.from_numpy(bgr_to_lab(cv2.resize(bgr, (107, 60))))[None]
    kept = lab.clone()
    assert torch.equal(LabToRgb()(lab), _lab_to_rgb_out_of_place(kept))
    assert torch.equal(lab, kept)
    model = CompactEncoder(CompactConfig(colour_weight=0.5))
    model(lab).square().sum().backward()
    assert torch.equal(lab, kept) and model.features[0][0].weight.grad.abs().sum() > 0


def test_half_precision_copy_keeps_float32_keys():
    torch.manual_seed(0)
    model = CompactEncoder().eval()
    x = torch.randn(1, 3, 32, 48)
    half = CompactEncoder().eval()
    half.load_state_dict(model.state_dict())
    out = half.to(torch.bfloat16)(x)
    assert out.dtype == torch.float32
    cos = torch.nn.functional.cosine_similarity(out, model(x), dim=1)
    assert cos.min() > 0.98   # bf16 blocks (8-bit mantissa) through 6 blocks


@pytest.mark.parametrize("size", [(240, 427), (33, 50), (17, 9)])
def test_stride_8_keys_are_the_stride_8_taps_themselves(size):
    """Stride 8: keys at ceil(H/8) x ceil(W/8), the tap of stride 8 read as it is (no resampling)."""
    torch.manual_seed(0)
    model = CompactEncoder(CompactConfig(taps=(7,), temperature=0.1, stride=8)).eval()
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        keys = model(x)
        tap = model.features(model.to_rgb(x).sub(model.mean).div(model.std))
    h, w = -(-size[0] // 8), -(-size[1] // 8)
    assert model.stride == 8 and keys.shape == (1, TAP_CHANNELS[7], h, w) == (1, model.key_dim, h, w)
    torch.testing.assert_close(keys, torch.nn.functional.normalize(tap, dim=1) * math.sqrt(1 / 0.1))


def test_stride_8_colour_channels_are_the_8x8_cell_means():
    """A frame whose 8x8 cells are constant (each its own Lab): a key's colour channels are its cell's."""
    model = CompactEncoder(CompactConfig(taps=(7,), colour_weight=3.0, stride=8)).eval()
    cells = torch.rand(1, 3, 3, 5) * 2 - 1
    frame = cells.repeat_interleave(8, 2).repeat_interleave(8, 3)[..., :20, :37]   # partial last cells
    with torch.no_grad():
        colour = model(frame)[0, -6:]
    freq = torch.tensor([math.pi / 2.2, math.pi / 1.2, math.pi / 1.2]).view(3, 1, 1)
    want = torch.cat([(cells[0] * freq).cos(), (cells[0] * freq).sin()])
    assert colour.shape == (6, 3, 5)
    torch.testing.assert_close(colour, want, rtol=1e-5, atol=1e-6)


def test_stride_is_recorded_and_old_records_mean_stride_4():
    assert CompactEncoder(CompactConfig(taps=(7,), stride=8)).arch_record()["stride"] == 8
    assert CompactEncoder(CompactConfig(taps=(4, 7))).arch_record()["stride"] == 4
    assert CompactConfig(taps=(4, 7)).stride == 4   # a record without the field (v6) is stride 4


@pytest.mark.parametrize("settings", [{"taps": ()}, {"taps": (2,)}, {"taps": (40,)}, {"temperature": 0.0},
                                      {"norm": "l1"}, {"colour_weight": -1.0}, {"stride": 16},
                                      {"taps": (4, 7), "stride": 8}])
def test_bad_settings_are_refused(settings):
    with pytest.raises(CheckpointError):
        CompactConfig(**settings)
