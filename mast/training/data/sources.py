"""Discovery of raw training video: video files and frame folders under the paths a user gives
(:func:`discover_sources`), and the warning that skips an unusable one."""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from mast.core.errors import InputError
from mast.core.images import is_image, natural_key
from mast.training.data.config import PathLike

VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mkv", ".mov"})
MAX_SCAN_DEPTH = 2


class SkippedVideoWarning(UserWarning):
    """A video or frame folder was left out of the training data (corrupt, unreadable, too short)."""


@dataclass(frozen=True)
class RawSource:
    """A discovered training source: a video file (``frames`` empty) or a frame folder (its frame
    files, in natural order). Not :class:`mast.runtime.sources.RawSource` (a stream being tracked)."""

    path: Path
    frames: tuple[Path, ...] = ()

    @property
    def is_video(self) -> bool:
        return not self.frames


def discover_sources(paths: Sequence[PathLike] | PathLike) -> list[RawSource]:
    """Video files and frame folders under ``paths`` (files, frame folders, or folders of those).

    Folders are searched ``MAX_SCAN_DEPTH`` levels down; hidden entries are ignored. Raises
    InputError for a missing path, a file that is not a video, or when nothing is found.
    """
    found: dict[Path, RawSource] = {}
    for given in as_paths(paths):
        path = Path(given).expanduser()
        for source in _sources_at(path):
            found.setdefault(source.path.resolve(), source)
    if not found:
        raise InputError(f"no video files or frame folders in {path_names(paths)}: expected "
                         f"{'/'.join(sorted(VIDEO_EXTENSIONS))} videos or folders of .jpg/.png "
                         f"frames (searched {MAX_SCAN_DEPTH} levels down); check the --data path")
    return list(found.values())


def _sources_at(path: Path) -> list[RawSource]:
    if path.is_dir():
        return _scan_dir(path, 0)
    if not path.exists():
        raise InputError(f"training data path {path} does not exist: expected a video file, a frame "
                         "folder or a folder of those; check the --data path")
    if path.suffix.lower() not in VIDEO_EXTENSIONS:
        raise InputError(f"{path} is not a video file: expected one of "
                         f"{', '.join(sorted(VIDEO_EXTENSIONS))}, or a folder; check the --data path")
    return [RawSource(path)]


def _scan_dir(folder: Path, depth: int) -> list[RawSource]:
    """Sources in ``folder`` (its frames as one source, its videos) and in subfolders below it."""
    try:
        entries = sorted((e for e in folder.iterdir() if not e.name.startswith(".")),
                         key=lambda e: natural_key(e.name))
    except OSError as err:
        if depth == 0:
            raise InputError(f"cannot list {folder} ({err.strerror}): expected a readable folder of "
                             "videos or frames; check its permissions") from err
        skip_source(folder, f"cannot list the folder ({err.strerror})", 4)
        return []
    files = [e for e in entries if e.is_file()]
    images = tuple(f for f in files if is_image(f))
    sources = [RawSource(folder, images)] if images else []
    sources += [RawSource(f) for f in files if f.suffix.lower() in VIDEO_EXTENSIONS]
    if depth < MAX_SCAN_DEPTH:
        for sub in (e for e in entries if e.is_dir()):
            sources += _scan_dir(sub, depth + 1)
    return sources


def as_paths(paths: Sequence[PathLike] | PathLike) -> list[PathLike]:
    """Accept one path as well as a sequence of paths."""
    return [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)


def path_names(paths: Sequence[PathLike]) -> str:
    return ", ".join(str(p) for p in as_paths(paths)) or "(no path given)"



def skip_source(path: Path | str, reason: str, stacklevel: int = 3) -> None:
    """One SkippedVideoWarning, attributed to the caller ``stacklevel - 1`` frames up."""
    warnings.warn(f"skipping {path}: {reason}", SkippedVideoWarning, stacklevel=stacklevel)
