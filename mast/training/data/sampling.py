"""Sampling: which frames of which video make training sample i (:class:`ClipDataset`; the rules
are in :mod:`mast.training.data`'s docstring), and their batching."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mast.core.errors import InputError
from mast.training.data.augment import augment_clip, to_tensor
from mast.training.data.config import DataConfig, DataConfigError, PathLike, check_stage
from mast.training.data.corpus import VideoCorpus, load_corpus
from mast.training.data.sources import path_names, skip_source


class ClipDataset(Dataset):
    """Map-style dataset of training samples (see the module docstring for the sampling rules).

    ``dataset[i]`` -> {"frames": uint8 [T, 3, S, S] BGR (float32 in [0, 1] if ``config.as_float``),
    "distances": int64 [T-1], "frame_indices": int64 [T], "video": int64 []}; any i >= 0 is valid
    (``len`` is ``config.epoch_length``), so a resumed run continues with
    ``sampler=range(start, stop)``.
    Sources with fewer than ``config.min_frames(stage)`` frames are skipped with one warning each.
    Videos are drawn with probability proportional to their frame count.
    """

    def __init__(self, corpus: VideoCorpus, config: DataConfig = DataConfig(), stage: str = "pair"):
        if corpus.size != config.size:
            raise DataConfigError(f"corpus decoded at {corpus.size}px but config.size={config.size}; "
                                  "load the corpus with the same DataConfig")
        self.corpus, self.config, self.stage = corpus, config, check_stage(stage)
        self.videos = self._usable_videos()
        self._cum_frames = np.cumsum([corpus.num_frames(v) for v in self.videos])

    def _usable_videos(self) -> np.ndarray:
        need = self.config.min_frames(self.stage)
        keep = []
        for v, name in enumerate(self.corpus.names):
            n = self.corpus.num_frames(v)
            if n < need:
                skip_source(name, f"too short for the {self.stage} stage: {n} frames, at least {need} needed", 4)
            else:
                keep.append(v)
        if not keep:
            raise InputError(f"no usable video in {path_names(self.corpus.given)} for the {self.stage} stage: "
                             f"every source has fewer than {need} frames; add longer videos or lower "
                             "the gap settings")
        return np.asarray(keep)

    def __len__(self) -> int:
        return self.config.epoch_length

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        video, indices = self.sample_indices(index)
        frames = self.corpus.stores[video].get(indices)
        target = indices[-1]
        return {
            "frames": to_tensor(augment_clip(frames, self._rng(index, 1), self.config), self.config.as_float),
            "distances": torch.as_tensor(target - indices[:-1], dtype=torch.int64),
            "frame_indices": torch.as_tensor(indices, dtype=torch.int64),
            "video": torch.tensor(video, dtype=torch.int64),
        }

    def sample_indices(self, index: int) -> tuple[int, np.ndarray]:
        """(video, frame indices int64 [T]) of sample ``index``, oldest frame first, target last."""
        if index < 0:
            raise IndexError(f"sample index {index} < 0")
        rng = self._rng(index, 0)
        pick = int(np.searchsorted(self._cum_frames, rng.integers(self._cum_frames[-1]), side="right"))
        video = int(self.videos[pick])
        n = self.corpus.num_frames(video)
        sampler = sample_pair if self.stage == "pair" else sample_memory_clip
        return video, sampler(rng, n, self.config)

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, int(index), stream])


def collate_clips(samples: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch (leading dim B) with numpy, not torch ops.

    Same result as the default DataLoader collation, but it never enters torch's OpenMP thread
    pool: on the 2-core dev machine, OpenMP threads spinning after each torch op starved the
    sampling code running in the same process (DataLoader ``num_workers=0``) by ~20x.
    """
    return {key: torch.from_numpy(np.stack([s[key].numpy() for s in samples])) for key in samples[0]}


def build_dataset(paths: Sequence[PathLike] | PathLike, config: DataConfig = DataConfig(),
                  stage: str = "pair") -> ClipDataset:
    """``load_corpus`` + ``ClipDataset`` in one call (reuse the corpus to build the other stage)."""
    return ClipDataset(load_corpus(paths, config), config, stage)


def sample_pair(rng: np.random.Generator, n: int, config: DataConfig) -> np.ndarray:
    """[reference, target] indices in a video of ``n`` frames; gap in [gap_min, min(gap_max, n-1)]."""
    gap = int(rng.integers(config.gap_min, min(config.gap_max, n - 1) + 1))
    ref = int(rng.integers(0, n - gap))
    return np.array([ref, ref + gap], dtype=np.int64)


def sample_memory_clip(rng: np.random.Generator, n: int, config: DataConfig) -> np.ndarray:
    """Indices [long..., short..., target] (int64 [n_long + n_short + 1]) in a video of ``n`` frames.

    Long-term distances D, D - long_spacing, ... with D in [long_gap_min, min(long_gap_max, n-1)];
    short-term: n_short distinct distances in [short_gap_min, short_gap_max], largest first.
    """
    far = int(rng.integers(config.long_gap_min, min(config.long_gap_max, n - 1) + 1))
    target = int(rng.integers(far, n))
    long_d = far - config.long_spacing * np.arange(config.n_long)
    short_pool = np.arange(config.short_gap_min, config.short_gap_max + 1)
    short_d = np.sort(rng.choice(short_pool, size=config.n_short, replace=False))[::-1]
    distances = np.concatenate([long_d, short_d, [0]])
    return (target - distances).astype(np.int64)
