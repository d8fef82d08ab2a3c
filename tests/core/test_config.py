"""mast.core.config: the tracker's configuration for a key stride, and the attention radius option."""
from __future__ import annotations

import numpy as np
import pytest

from mast.core.config import MAX_RADIUS, REACH, ModelConfig, check_radius
from mast.core.errors import InputError


def test_for_stride_keeps_the_reach_unless_a_radius_is_given():
    assert ModelConfig.for_stride(4).attention.radius == REACH // 4 == 12
    assert ModelConfig.for_stride(8).attention.radius == REACH // 8 == 6
    cfg = ModelConfig.for_stride(4, radius=8)
    assert cfg.attention.radius == 8 and cfg.stride == 4 and cfg.label_offset == 1
    assert cfg.attention.roi_threshold == ModelConfig().attention.roi_threshold   # only the radius changes
    assert ModelConfig.for_stride(8, radius=MAX_RADIUS).attention.radius == MAX_RADIUS
    radius = ModelConfig.for_stride(4, radius=np.int64(8)).attention.radius   # e.g. from a numpy sweep
    assert radius == 8 and type(radius) is int


@pytest.mark.parametrize("radius", [0, -3, MAX_RADIUS + 1, 8.0, "8", True])
def test_bad_radius_is_one_line_input_error(radius):
    with pytest.raises(InputError, match=r"attention radius .*expected a whole number of key pixels from 1 to 31"):
        check_radius(radius)
    with pytest.raises(InputError):
        ModelConfig.for_stride(4, radius=radius)
