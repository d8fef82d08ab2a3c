"""The decoded corpus: every usable source under the given paths at one frame size
(:func:`load_corpus`), decoded on a thread pool; unusable sources skipped with a warning."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import cv2
import numpy as np

from mast.core.errors import InputError
from mast.training.data.config import DataConfig, PathLike
from mast.training.data.decoding import ArrayFrames, FrameStore, LazyFolderFrames, decode_video, load_frame
from mast.training.data.sources import RawSource, as_paths, discover_sources, path_names, skip_source


def _load_source(source: RawSource, config: DataConfig) -> FrameStore | str:
    """Decode one source; a string is the reason it is unusable."""
    cap = config.max_frames_per_video
    if source.is_video:
        try:
            frames = decode_video(source.path, config.size, cap, config.framing)
        except cv2.error as err:
            return f"corrupt video ({str(err).strip().splitlines()[0]})"
        return ArrayFrames(frames) if len(frames) else "corrupt or unreadable video (no frame decoded)"
    files = source.frames[:cap] if cap else source.frames
    try:
        if config.preload:
            return ArrayFrames(np.stack([load_frame(f, config.size, config.framing) for f in files]))
        for probe in (files[0], files[-1]):  # cheap check; the rest is read per sample
            load_frame(probe, config.size, config.framing)
        return LazyFolderFrames(files, config.size, config.framing)
    except (InputError, cv2.error) as err:
        return str(err).strip().splitlines()[0]


@dataclass
class VideoCorpus:
    """Usable sources at one frame size: ``stores[v]`` holds the frames of ``names[v]``.

    ``given`` keeps the paths the user passed, for error messages.
    """

    size: int
    names: list[str]
    stores: list[FrameStore]
    given: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.stores)

    def num_frames(self, video: int) -> int:
        return len(self.stores[video])

    @property
    def total_frames(self) -> int:
        return sum(len(s) for s in self.stores)

    @property
    def nbytes(self) -> int:
        """Bytes of decoded frames held in memory."""
        return sum(s.frames.nbytes for s in self.stores if isinstance(s, ArrayFrames))


def load_corpus(paths: Sequence[PathLike] | PathLike,
                config: DataConfig = DataConfig()) -> VideoCorpus:
    """Discover and decode every source under ``paths`` at ``config.size``.

    Sources that are corrupt, unreadable or have fewer than 2 frames are skipped with one
    SkippedVideoWarning each; InputError when no usable source remains.
    """
    paths = as_paths(paths)
    sources = discover_sources(paths)
    stores, names = [], []
    for source, result in zip(sources, _decode_all(sources, config)):
        if isinstance(result, str):
            skip_source(source.path, result)
        elif len(result) < 2:
            skip_source(source.path, f"too short: {len(result)} frame, at least 2 needed")
        else:
            stores.append(result)
            names.append(str(source.path))
    if not stores:
        raise InputError(f"no usable video in {path_names(paths)}: every source was skipped (see the "
                         "warnings above); expected readable videos or frame folders of 2+ frames")
    return VideoCorpus(config.size, names, stores, tuple(str(p) for p in paths))


def _decode_all(sources: list[RawSource], config: DataConfig) -> Iterator[FrameStore | str]:
    """Decode sources on a thread pool (OpenCV releases the GIL), in order, with a progress bar."""
    threads = config.decode_threads or min(4, os.cpu_count() or 1)
    with _DecodeProgress(config.progress, len(sources)) as advance:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for source, result in zip(sources, pool.map(lambda s: _load_source(s, config), sources)):
                advance(source.path.name, 0 if isinstance(result, str) else len(result))
                yield result


class _DecodeProgress:
    """Context manager yielding ``advance(name, n_frames)``; a rich bar on stderr when enabled."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total, self.frames = enabled, total, 0

    def __enter__(self):
        if not self.enabled:
            return lambda name, n: None
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("decoding {task.description}"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("{task.fields[frames]} frames"), TimeElapsedColumn(),
                            console=Console(stderr=True))
        self.bar.__enter__()
        self.task = self.bar.add_task("videos", total=self.total, frames=0)
        return self._advance

    def _advance(self, name: str, n_frames: int) -> None:
        self.frames += n_frames
        self.bar.update(self.task, advance=1, description=name[:32], frames=self.frames)

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
