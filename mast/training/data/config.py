"""Settings of the training data (:class:`DataConfig`), its stages and its typed errors."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator, Literal, Union

from mast.core.errors import MastError

STAGES = ("pair", "memory")
PathLike = Union[str, os.PathLike]
Framing = Literal["squash", "crop"]


class DataConfigError(MastError, ValueError):
    """Inconsistent sampling settings (a user-fixable configuration mistake)."""


@dataclass(frozen=True)
class DataConfig:
    """Sampling and decoding settings of the self-supervised training data.

    size:            frames are resized to size x size pixels (multiple of 4: encoder stride).
    framing:         "squash": whole frames resized to size x size (aspect lost); "crop": short
                     side resized to size (aspect kept), each sample a square window of it.
    gap_min/gap_max: pair stage, temporal gap (frames) between reference and target, inclusive.
    n_long, long_gap_min, long_gap_max, long_spacing: memory stage, long-term references at
                     distances D, D - long_spacing, ... with D uniform in [long_gap_min, long_gap_max].
    n_short, short_gap_min, short_gap_max: memory stage, short-term references at n_short
                     distinct distances drawn from [short_gap_min, short_gap_max].
    augment:         master switch of the three augmentations below.
    flip:            random horizontal flip (p = 0.5) of the whole sample.
    crop_scale_min:  random square crop of side fraction in [crop_scale_min, 1]; 1 disables.
    brightness:      brightness gain in [1 - brightness, 1 + brightness]; 0 disables.
    seed:            sample i is a function of (seed, i) only.
    epoch_length:    ``len()`` of the dataset (indices beyond it are valid too, for resuming).
    max_frames_per_video: keep only the first N frames of each source (memory cap); None = all.
    preload:         decode frame folders into memory (True) or read them per sample (False).
    decode_threads:  threads decoding sources in parallel; None = min(4, CPU count).
    progress:        show a progress bar while decoding.
    as_float:        samples' frames as float32 in [0, 1] instead of uint8 (same values / 255).
    """

    size: int = 256
    framing: Framing = "squash"
    gap_min: int = 2
    gap_max: int = 8
    n_long: int = 2
    long_gap_min: int = 16
    long_gap_max: int = 60
    long_spacing: int = 5
    n_short: int = 3
    short_gap_min: int = 1
    short_gap_max: int = 5
    augment: bool = True
    flip: bool = True
    crop_scale_min: float = 0.8
    brightness: float = 0.1
    seed: int = 0
    epoch_length: int = 10_000
    max_frames_per_video: int | None = None
    preload: bool = True
    decode_threads: int | None = None
    progress: bool = True
    as_float: bool = False

    def __post_init__(self) -> None:
        for problem in _config_problems(self):
            raise DataConfigError(f"invalid DataConfig: {problem}")

    def clip_length(self, stage: str) -> int:
        """Frames per sample T: 2 for "pair", n_long + n_short + 1 for "memory"."""
        return 2 if check_stage(stage) == "pair" else self.n_long + self.n_short + 1

    def min_frames(self, stage: str) -> int:
        """Fewest frames a source needs to give samples of ``stage``."""
        return (self.gap_min if check_stage(stage) == "pair" else self.long_gap_min) + 1


def _config_problems(c: DataConfig) -> Iterator[str]:
    """Yield one readable sentence per inconsistent DataConfig setting."""
    if c.size < 8 or c.size % 4:
        yield f"size={c.size}; expected a multiple of 4, at least 8 (e.g. 256)"
    if not 1 <= c.gap_min <= c.gap_max:
        yield f"gap range [{c.gap_min}, {c.gap_max}]; expected 1 <= gap_min <= gap_max"
    if c.n_long < 1 or c.n_short < 1:
        yield f"n_long={c.n_long}, n_short={c.n_short}; expected at least 1 of each"
    if c.short_gap_min < 1 or c.short_gap_max - c.short_gap_min + 1 < c.n_short:
        yield (f"short range [{c.short_gap_min}, {c.short_gap_max}] cannot hold {c.n_short} distinct "
               "gaps >= 1; widen it or lower n_short")
    if c.long_spacing < 1 or c.long_gap_max < c.long_gap_min:
        yield f"long_spacing={c.long_spacing}, long range [{c.long_gap_min}, {c.long_gap_max}] invalid"
    newest_long = c.long_gap_min - (c.n_long - 1) * c.long_spacing
    if newest_long <= c.short_gap_max:
        yield ("long-term references must be older than short-term ones: raise long_gap_min by "
               f"{c.short_gap_max + 1 - newest_long} or lower short_gap_max / long_spacing")
    if not 0 < c.crop_scale_min <= 1 or not 0 <= c.brightness < 1:
        yield (f"crop_scale_min={c.crop_scale_min} (expected (0, 1]), "
               f"brightness={c.brightness} (expected [0, 1))")
    if c.seed < 0 or c.epoch_length < 1:
        yield f"seed={c.seed}, epoch_length={c.epoch_length}; expected seed >= 0, epoch_length >= 1"
    if c.max_frames_per_video is not None and c.max_frames_per_video < 2:
        yield f"max_frames_per_video={c.max_frames_per_video}; expected None or >= 2"


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise DataConfigError(f"unknown training stage {stage!r}; expected one of {', '.join(STAGES)}")
    return stage
