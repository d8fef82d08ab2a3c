"""Self-supervised training data over raw, unlabeled video.

Sources
    Video files (``.mp4 .avi .mkv .mov``, decoded with ``cv2.VideoCapture``) and frame folders (a
    folder of ``.jpg/.jpeg/.png`` frames, in natural name order: ``f2`` before ``f10``). A path given
    by the user may be a video file, a frame folder, or a folder holding videos and/or frame folders
    up to two levels down (``raw-videos/videos/*.mp4``, ``raw-videos/frames/<seq>/*.jpg``).

Decoding
    Every frame is resized once (``cv2.INTER_AREA``) and kept in memory as uint8 BGR:
    ``framing="squash"`` (default) resizes it to ``size x size`` whatever its aspect (455x256 ->
    256x256: objects get 1.8x narrower than at inference); ``framing="crop"`` keeps the aspect
    (short side = ``size``: 455x256 -> 455x256) and every sample takes a square window of it (see
    Augmentation), so shapes keep their proportions. 256x256: 192 KiB a frame; the whole
    ``raw-videos`` set, 2283 frames, is ~430 MB squashed.
    Measured on the 2-core dev CPU: reading a 455x256 JPEG + resize costs ~1 ms (854x480: ~3 ms),
    copying a preloaded frame ~7 us, so frame folders are preloaded by default too
    (``DataConfig.preload=False`` reads them lazily, for sets that do not fit in memory; videos are
    always decoded up front because seeking in compressed video is slow and inexact).
    ``max_frames_per_video`` caps memory. Corrupt, unreadable or too-short sources are skipped with
    one ``SkippedVideoWarning`` each; if none is usable, ``InputError`` names the paths given.

Sampling (``ClipDataset``; the choices, with the paper sections they follow)
    Stage ``"pair"`` (paper Sec. 4, "pretrain the network with a pair of input frames"): a reference
    frame r and a target t = r + g, g uniform in [gap_min, gap_max] (default 2..8). The paper
    reconstructs I_t from a nearby frame (Sec. 3.1, I_{t-1}); adjacent frames of 25-30 fps video
    are nearly identical, so, like the official implementation (which draws the pair interval from
    {2, 5, 8}), the gap spans 2..8 frames.

    Stage ``"memory"`` (Sec. 3.3 and 4): the clip imitates the inference memory at a random time.
    Inference reads long-term {I_0, I_5} and short-term {I_t-5, I_t-3, I_t-1} (Sec. 4). Here:
      * long-term: ``n_long`` (2) frames at distances D, D - 5, ... (``long_spacing`` = 5, the
        I_0 / I_5 spacing), D uniform in [long_gap_min, long_gap_max] = [16, 60], clipped to the
        video. D > 15 so that the oldest reference always goes through ROI localisation
        (Sec. 3.3.2: dilation ceil(d/15), used for distant frames; docs/DESIGN.md: d > 15) and D up to 60
        covers every dilation 2..4 the tracker uses; the second one (D - 5, 11..55) falls on either
        side of 15, as frame 5 does at inference;
      * short-term: ``n_short`` (3) distinct distances drawn from [short_gap_min, short_gap_max] =
        [1, 5], the range of the inference schedule (t-1, t-3, t-5 is one of the draws); random
        rather than fixed because the paper finds the exact choice of frames matters little while
        having both long and short memory is essential (Sec. 4, Table 5).
    Clip order: oldest first, target last: [long..., short..., target]. Long-term references are
    always older than short-term ones (``long_gap_min - (n_long-1)*long_spacing > short_gap_max``).

Augmentation (``augment=True``; one draw per sample, applied identically to all its frames)
    horizontal flip (p = 0.5), square crop of side fraction in [crop_scale_min, 1] of the frame's
    short side, at a uniform position, resized to ``size x size`` (bilinear), brightness gain in
    [1 - brightness, 1 + brightness] (rounded, saturated). With ``framing="crop"`` and no
    augmentation, the centre ``size x size`` square.

Output of ``ClipDataset[i]`` (a dict; batch it with ``DataLoader(..., collate_fn=collate_clips)``)
    ``frames``        uint8 tensor [T, 3, S, S], BGR, channels first; T = 2 (pair) or
                      n_long + n_short + 1 (memory); target last. The trainer converts with
                      ``frames.float() / 255`` (on the GPU when it has one) and then to Lab (model
                      code). uint8 because a DataLoader moves 4x fewer bytes: measured 3x more
                      samples/s through a DataLoader than float32 here; ``as_float=True`` gives
                      float32 in [0, 1] instead (exactly the uint8 values / 255).
    ``distances``     int64 [T - 1]: target index - reference index, in source frames (>= 1).
    ``frame_indices`` int64 [T]: indices of the frames in their source.
    ``video``         int64 scalar: index into ``corpus.names``.
    Sample i depends only on (config, i) and the corpus, not on the worker or call order.

Typical use (both stages share one decoded corpus)
    corpus = load_corpus(paths, config)
    pairs, clips = ClipDataset(corpus, config, "pair"), ClipDataset(corpus, config, "memory")
    loader = DataLoader(pairs, batch_size=24, sampler=range(first_sample, last_sample),
                        num_workers=2, collate_fn=collate_clips)
"""
from __future__ import annotations

import os
import re
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence, Union

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from mast.core.errors import InputError, MastError

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov"})
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png"})
STAGES = ("pair", "memory")
MAX_SCAN_DEPTH = 2
PathLike = Union[str, os.PathLike]
Framing = Literal["squash", "crop"]


class SkippedVideoWarning(UserWarning):
    """A video or frame folder was left out of the training data (corrupt, unreadable, too short)."""


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
        return 2 if _check_stage(stage) == "pair" else self.n_long + self.n_short + 1

    def min_frames(self, stage: str) -> int:
        """Fewest frames a source needs to give samples of ``stage``."""
        return (self.gap_min if _check_stage(stage) == "pair" else self.long_gap_min) + 1


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


def _check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise DataConfigError(f"unknown training stage {stage!r}; expected one of {', '.join(STAGES)}")
    return stage


# --------------------------------------------------------------------------------------------
# Discovery


@dataclass(frozen=True)
class VideoSource:
    """A discovered source: a video file (``frames`` empty) or a frame folder (its frame files)."""

    path: Path
    frames: tuple[Path, ...] = ()

    @property
    def is_video(self) -> bool:
        return not self.frames


def natural_key(name: str) -> list:
    """Sort key ordering embedded numbers by value: ``f2.jpg`` < ``f10.jpg``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def discover_sources(paths: Sequence[PathLike] | PathLike) -> list[VideoSource]:
    """Video files and frame folders under ``paths`` (files, frame folders, or folders of those).

    Folders are searched ``MAX_SCAN_DEPTH`` levels down; hidden entries are ignored. Raises
    InputError for a missing path, a file that is not a video, or when nothing is found.
    """
    found: dict[Path, VideoSource] = {}
    for given in _as_list(paths):
        path = Path(given).expanduser()
        for source in _sources_at(path):
            found.setdefault(source.path.resolve(), source)
    if not found:
        raise InputError(f"no video files or frame folders in {_names(paths)}: expected "
                         f"{'/'.join(sorted(VIDEO_EXTENSIONS))} videos or folders of .jpg/.png "
                         f"frames (searched {MAX_SCAN_DEPTH} levels down); check the --data path")
    return list(found.values())


def _sources_at(path: Path) -> list[VideoSource]:
    if path.is_dir():
        return _scan_dir(path, 0)
    if not path.exists():
        raise InputError(f"training data path {path} does not exist: expected a video file, a frame "
                         "folder or a folder of those; check the --data path")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise InputError(f"{path} is not a video file: expected one of "
                         f"{', '.join(sorted(VIDEO_EXTENSIONS))}, or a folder; check the --data path")
    return [VideoSource(path)]


def _scan_dir(folder: Path, depth: int) -> list[VideoSource]:
    """Sources in ``folder`` (its frames as one source, its videos) and in subfolders below it."""
    try:
        entries = sorted((e for e in folder.iterdir() if not e.name.startswith(".")),
                         key=lambda e: natural_key(e.name))
    except OSError as err:
        if depth == 0:
            raise InputError(f"cannot list {folder} ({err.strerror}): expected a readable folder of "
                             "videos or frames; check its permissions") from err
        _skip(folder, f"cannot list the folder ({err.strerror})", 4)
        return []
    files = [e for e in entries if e.is_file()]
    images = tuple(f for f in files if f.suffix.lower() in IMAGE_EXTENSIONS)
    sources = [VideoSource(folder, images)] if images else []
    sources += [VideoSource(f) for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
    if depth < MAX_SCAN_DEPTH:
        for sub in (e for e in entries if e.is_dir()):
            sources += _scan_dir(sub, depth + 1)
    return sources


def _as_list(paths: Sequence[PathLike] | PathLike) -> list[PathLike]:
    """Accept one path as well as a sequence of paths."""
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def _names(paths: Sequence[PathLike]) -> str:
    return ", ".join(str(p) for p in _as_list(paths)) or "(no path given)"


# --------------------------------------------------------------------------------------------
# Decoding


def frame_shape(height: int, width: int, size: int, framing: Framing = "squash") -> tuple[int, int]:
    """(h, w) a [height, width] frame is stored at: (size, size) for "squash"; for "crop" the
    short side becomes ``size`` and the long side keeps the aspect (rounded, at least ``size``)."""
    if framing == "squash":
        return size, size
    scale = size / min(height, width)
    return max(size, round(height * scale)), max(size, round(width * scale))


def resize_frame(frame: np.ndarray, size: int, framing: Framing = "squash") -> np.ndarray:
    """BGR uint8 [H, W, 3] of any size -> [h, w, 3] with (h, w) = ``frame_shape`` (cv2.INTER_AREA)."""
    h, w = frame_shape(*frame.shape[:2], size, framing)
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)


def decode_video(path: Path, size: int, max_frames: int | None = None,
                 framing: Framing = "squash") -> np.ndarray:
    """Decode a video file: uint8 BGR [N, h, w, 3] (``frame_shape``; N = 0 when unreadable)."""
    cap = cv2.VideoCapture(str(path))
    frames: list[np.ndarray] = []
    try:
        while cap.isOpened() and (max_frames is None or len(frames) < max_frames):
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            frames.append(resize_frame(_as_bgr(frame), size, framing))
    finally:
        cap.release()
    return np.stack(frames) if frames else np.zeros((0, size, size, 3), np.uint8)


def read_image(path: Path, size: int, framing: Framing = "squash") -> np.ndarray:
    """One frame file -> uint8 BGR [h, w, 3] (``frame_shape``); InputError when it cannot be read."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"cannot read frame {path}: expected a readable .jpg/.png image; "
                         "replace or delete the file")
    return resize_frame(image, size, framing)


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    return frame[..., :3]


class ArrayFrames:
    """Frames held in memory: uint8 BGR [N, h, w, 3] (``frame_shape``)."""

    def __init__(self, frames: np.ndarray) -> None:
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Frames at ``indices`` (int [k]) -> uint8 [k, h, w, 3] (a copy)."""
        return self.frames[indices]


class LazyFolderFrames:
    """A frame folder read per sample (``preload=False``): ~1-3 ms a frame instead of ~7 us."""

    def __init__(self, files: Sequence[Path], size: int, framing: Framing = "squash") -> None:
        self.files, self.size, self.framing = tuple(files), size, framing

    def __len__(self) -> int:
        return len(self.files)

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Frames at ``indices`` -> uint8 [k, h, w, 3]; InputError if a file became unreadable."""
        return np.stack([read_image(self.files[i], self.size, self.framing) for i in indices])


FrameStore = Union[ArrayFrames, LazyFolderFrames]


def _load_source(source: VideoSource, config: DataConfig) -> FrameStore | str:
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
            return ArrayFrames(np.stack([read_image(f, config.size, config.framing) for f in files]))
        for probe in (files[0], files[-1]):  # cheap check; the rest is read per sample
            read_image(probe, config.size, config.framing)
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
    paths = _as_list(paths)
    sources = discover_sources(paths)
    stores, names = [], []
    for source, result in zip(sources, _decode_all(sources, config)):
        if isinstance(result, str):
            _skip(source.path, result)
        elif len(result) < 2:
            _skip(source.path, f"too short: {len(result)} frame, at least 2 needed")
        else:
            stores.append(result)
            names.append(str(source.path))
    if not stores:
        raise InputError(f"no usable video in {_names(paths)}: every source was skipped (see the "
                         "warnings above); expected readable videos or frame folders of 2+ frames")
    return VideoCorpus(config.size, names, stores, tuple(str(p) for p in paths))


def _decode_all(sources: list[VideoSource], config: DataConfig) -> Iterator[FrameStore | str]:
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


def _skip(path: Path | str, reason: str, stacklevel: int = 3) -> None:
    """One SkippedVideoWarning, attributed to the caller ``stacklevel - 1`` frames up."""
    warnings.warn(f"skipping {path}: {reason}", SkippedVideoWarning, stacklevel=stacklevel)


# --------------------------------------------------------------------------------------------
# Sampling


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
        self.corpus, self.config, self.stage = corpus, config, _check_stage(stage)
        self.videos = self._usable_videos()
        self._cum_frames = np.cumsum([corpus.num_frames(v) for v in self.videos])

    def _usable_videos(self) -> np.ndarray:
        need = self.config.min_frames(self.stage)
        keep = []
        for v, name in enumerate(self.corpus.names):
            n = self.corpus.num_frames(v)
            if n < need:
                _skip(name, f"too short for the {self.stage} stage: {n} frames, at least {need} needed", 4)
            else:
                keep.append(v)
        if not keep:
            raise InputError(f"no usable video in {_names(self.corpus.given)} for the {self.stage} stage: "
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


# --------------------------------------------------------------------------------------------
# Augmentation


def augment_clip(frames: np.ndarray, rng: np.random.Generator, config: DataConfig) -> np.ndarray:
    """uint8 BGR [T, h, w, 3] (short side S) -> uint8 BGR [T, S, S, 3], one draw for all frames.

    The same random numbers are drawn whatever the flags, so toggling one augmentation does not
    change the others' draws.
    """
    flip, x0, y0 = rng.random(3)
    scale = rng.uniform(config.crop_scale_min, 1.0)
    gain = rng.uniform(1.0 - config.brightness, 1.0 + config.brightness)
    if not config.augment:
        return _crop_resize(frames, 1.0, 0.5, 0.5)  # the centre square (the frame itself if square)
    frames = _crop_resize(frames, scale, x0, y0)
    if config.flip and flip < 0.5:
        frames = frames[:, :, ::-1]
    if config.brightness > 0:
        frames = _brighten(frames, gain)
    return frames


def to_tensor(frames: np.ndarray, as_float: bool = False) -> torch.Tensor:
    """uint8 BGR [T, S, S, 3] -> [T, 3, S, S]: uint8, or float32 in [0, 1] when ``as_float``.

    Done in numpy: torch's intra-op threads made the float conversion ~30x slower in the main
    process on the 2-core dev machine.
    """
    chw = frames.transpose(0, 3, 1, 2)
    if not as_float:
        return torch.from_numpy(np.ascontiguousarray(chw))
    out = chw.astype(np.float32, order="C")
    out /= np.float32(255.0)  # division, so values equal ``uint8_tensor.float() / 255`` exactly
    return torch.from_numpy(out)


def _brighten(frames: np.ndarray, gain: float) -> np.ndarray:
    """Multiply uint8 frames [T, S, S, 3] by ``gain`` (rounded, saturated) through one lookup table."""
    lut = np.clip(np.arange(256) * gain + 0.5, 0, 255).astype(np.uint8)
    t, h, w, c = frames.shape
    return cv2.LUT(np.ascontiguousarray(frames).reshape(t * h, w, c), lut).reshape(t, h, w, c)


def _crop_resize(frames: np.ndarray, scale: float, x0: float, y0: float) -> np.ndarray:
    """[T, h, w, 3] -> [T, S, S, 3], S = min(h, w): the square of side ``scale * S`` at relative
    position (x0, y0) in [0, 1), resized to S (bilinear; not resized when it is S already)."""
    h, w = frames.shape[1:3]
    size = min(h, w)
    side = max(1, min(size, int(round(scale * size))))
    x, y = int(x0 * (w - side + 1)), int(y0 * (h - side + 1))
    crop = frames[:, y:y + side, x:x + side]
    if side == size:
        return crop
    return np.stack([cv2.resize(f, (size, size), interpolation=cv2.INTER_LINEAR) for f in crop])
