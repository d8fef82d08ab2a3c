"""Frame sources: videos, frame folders, cameras (missing / stalling) and the latest-frame reader."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mast.core.errors import InputError
from mast.runtime.sources import (
    CameraSource,
    FrameFolderSource,
    LatestFrameReader,
    SourceStalledError,
    VideoSource,
    open_source,
)

W, H = 64, 48
BITS = 8  # frame i shows i in binary: 8 vertical stripes of 8 px, white = 1 (survives mp4v coding)


def _frame(i: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    for b in range(BITS):
        if (i >> b) & 1:
            img[:, b * 8:(b + 1) * 8] = 255
    return img


def _index_of(bgr: np.ndarray) -> int:
    """Recover the index of a frame made by ``_frame``."""
    return sum(1 << b for b in range(BITS) if bgr[8:-8, b * 8 + 2:b * 8 + 6].mean() > 127)


def _write_video(path: Path, n: int, fps: float = 25.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    assert writer.isOpened()
    for i in range(n):
        writer.write(_frame(i))
    writer.release()
    return path


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return _write_video(tmp_path / "clip.mp4", 12)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(11):  # 2 before 10: natural order; mixed extensions
        cv2.imwrite(str(d / f"{i}.{'png' if i % 2 else 'jpg'}"), _frame(i))
    (d / "notes.txt").write_text("not a frame")
    return d


# -- video ---------------------------------------------------------------------------------------
def test_video_frames_in_order(video: Path) -> None:
    with VideoSource(video) as src:
        assert (src.fps, src.is_live, src.frame_size, src.name) == (25.0, False, (W, H), "clip.mp4")
        frames = list(src)
    assert [i for i, _ in frames] == list(range(12))
    assert [_index_of(f) for _, f in frames] == list(range(12))
    assert all(f.shape == (H, W, 3) and f.dtype == np.uint8 for _, f in frames)
    assert src.dropped == 0


def test_video_missing_or_unreadable(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="video not found"):
        VideoSource(tmp_path / "nope.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"this is not a video")
    with pytest.raises(InputError, match="bad.mp4"):
        VideoSource(bad)
    with pytest.raises(InputError, match="video not found"):
        VideoSource(tmp_path)  # a folder is not a video file


def test_video_fps_override(video: Path) -> None:
    with VideoSource(video, fps=7.5) as src:
        assert src.fps == 7.5


# -- frame folder --------------------------------------------------------------------------------
def test_folder_frames_in_natural_order(folder: Path) -> None:
    with FrameFolderSource(folder) as src:
        assert len(src) == 11 and src.frame_size == (W, H) and src.fps is None
        frames = list(src)
        assert [src.frame_name(i) for i, _ in frames] == [str(i) for i in range(11)]
    assert [i for i, _ in frames] == list(range(11))
    assert [_index_of(f) for _, f in frames] == list(range(11))
    assert all(f.shape == (H, W, 3) for _, f in frames)


def test_folder_missing_or_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="frame folder not found"):
        FrameFolderSource(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    with pytest.raises(InputError, match="no frames in"):
        FrameFolderSource(empty)


def test_folder_unreadable_image_is_named(folder: Path) -> None:
    (folder / "5.png").write_bytes(b"garbage, not a png")
    with FrameFolderSource(folder) as src, pytest.raises(InputError, match=r"5\.png"):
        for _ in src:
            pass
    (folder / "0.jpg").write_bytes(b"garbage")
    with pytest.raises(InputError, match=r"0\.jpg"):  # the first frame fails at open
        FrameFolderSource(folder)


def test_folder_size_mismatch(folder: Path) -> None:
    cv2.imwrite(str(folder / "3.png"), np.zeros((10, 10, 3), np.uint8))
    with FrameFolderSource(folder) as src, pytest.raises(InputError, match=r"3\.png.*one size"):
        list(src)


# -- camera --------------------------------------------------------------------------------------
def test_missing_camera_is_an_input_error_fast() -> None:
    start = time.monotonic()
    with pytest.raises(InputError, match="camera 99 could not be opened"):
        CameraSource(99)
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("latest", [False, True])
def test_camera_that_stops_mid_stream(video: Path, latest: bool) -> None:
    """A capture that delivers 12 frames then only fails: the frames come first, then the error."""
    src = CameraSource(0, opener=lambda _: cv2.VideoCapture(str(video)), latest=latest,
                       max_failures=5, timeout_s=5.0)
    seen: list[int] = []
    with src, pytest.raises(SourceStalledError, match="camera 0 stopped delivering frames"):
        for index, frame in src:
            seen.append(index)
            assert frame.shape == (H, W, 3)
    assert seen == sorted(set(seen)) and seen[-1] == 11
    if not latest:
        assert seen == list(range(12))


class _BlockingCapture:
    """A fake capture: one frame, then a read that blocks until released."""

    def __init__(self) -> None:
        self.release_event = threading.Event()
        self.reads = 0

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return True

    def get(self, prop: int) -> float:
        return 0.0

    def set(self, prop: int, value: float) -> bool:
        return False

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.reads += 1
        if self.reads > 1:
            self.release_event.wait(10)
            return False, None
        return True, _frame(1)

    def release(self) -> None:
        self.release_event.set()


def test_camera_read_that_hangs_times_out() -> None:
    cap = _BlockingCapture()
    src = CameraSource(3, opener=lambda _: cap, timeout_s=0.3, max_failures=1)
    assert src.fps is None and src.frame_size is None
    start = time.monotonic()
    seen = []
    try:
        with pytest.raises(SourceStalledError, match="camera 3 delivered no frame"):
            for index, _ in src:
                seen.append(index)
    finally:
        cap.release_event.set()
        src.close()
    assert seen == [0]
    assert time.monotonic() - start < 3.0


# -- latest-frame reader -------------------------------------------------------------------------
def test_latest_frame_reader_drops_stale_frames(tmp_path: Path) -> None:
    """Producer at 200 fps, consumer at ~20 fps: frames are dropped, never handed out of order."""
    path = _write_video(tmp_path / "live.mp4", 40)
    with VideoSource(path, simulate_live=True, fps=200) as src:
        assert src.is_live
        seen = []
        for index, frame in src:
            assert _index_of(frame) == index
            seen.append(index)
            time.sleep(0.05)
        dropped = src.dropped
    assert dropped > 0
    assert all(a < b for a, b in zip(seen, seen[1:]))
    assert len(seen) + dropped == 40
    assert seen[-1] == 39  # the newest frame is always delivered


def test_latest_frame_reader_over_any_iterable() -> None:
    frames = ((i, _frame(i)) for i in range(30))
    with LatestFrameReader(frames, pace_fps=300, timeout_s=2.0, name="gen") as reader:
        seen = []
        for index, _ in reader:
            seen.append(index)
            time.sleep(0.03)
    assert reader.dropped > 0 and reader.delivered == len(seen)
    assert seen == sorted(seen) and seen[-1] == 29
    assert len(seen) + reader.dropped == 30


def test_latest_frame_reader_fast_consumer_gets_everything() -> None:
    frames = ((i, _frame(i)) for i in range(20))
    reader = LatestFrameReader(frames, pace_fps=50, timeout_s=2.0)
    seen = [i for i, _ in reader]
    assert seen == sorted(seen) and seen[-1] == 19
    assert len(seen) + reader.dropped == 20 and reader.dropped < 10  # ~0 unless the CPU is starved


def test_latest_frame_reader_reraises_after_last_frame() -> None:
    def frames():
        yield 0, _frame(0)
        yield 1, _frame(1)
        raise SourceStalledError("boom")

    reader = LatestFrameReader(frames(), timeout_s=2.0)
    seen = []
    with pytest.raises(SourceStalledError, match="boom"):
        for index, _ in reader:
            seen.append(index)
            time.sleep(0.01)
    assert seen[-1] == 1


def test_close_stops_the_reader_thread(tmp_path: Path) -> None:
    path = _write_video(tmp_path / "long.mp4", 40)
    src = VideoSource(path, simulate_live=True, fps=20)
    for index, _ in src:
        break
    src.close()
    src.close()  # idempotent
    assert src._reader is not None and not src._reader.alive


# -- open_source ---------------------------------------------------------------------------------
def test_open_source_picks_one(video: Path, folder: Path) -> None:
    with open_source(video=video) as src:
        assert isinstance(src, VideoSource)
    with open_source(frames=folder) as src:
        assert isinstance(src, FrameFolderSource)
    with open_source(video=str(video), simulate_live=True, fps=50) as src:
        assert src.is_live and src.fps == 50
    with pytest.raises(InputError, match="camera 99"):
        open_source(camera=99)
    with pytest.raises(InputError, match="exactly one input"):
        open_source()
    with pytest.raises(InputError, match="exactly one input"):
        open_source(video=video, frames=folder)
