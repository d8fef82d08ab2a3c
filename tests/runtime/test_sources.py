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
    FrameReader,
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
    """Producer at 200 fps, consumer at ~20 fps: every frame is either handed out or dropped, never
    out of order, the last one always handed out (how many drop depends on the machine's load)."""
    path = _write_video(tmp_path / "live.mp4", 40)
    with VideoSource(path, simulate_live=True, fps=200) as src:
        assert src.is_live
        seen = []
        for index, frame in src:
            assert _index_of(frame) == index
            seen.append(index)
            time.sleep(0.05)
        dropped = src.dropped
    assert all(a < b for a, b in zip(seen, seen[1:]))
    assert len(seen) + dropped == 40
    assert seen[-1] == 39  # the newest frame is always delivered


def test_latest_frame_reader_over_any_iterable() -> None:
    frames = ((i, _frame(i)) for i in range(30))
    with FrameReader(frames, pace_fps=300, timeout_s=2.0, name="gen") as reader:
        seen = []
        for index, _ in reader:
            seen.append(index)
            time.sleep(0.03)
    assert reader.delivered == len(seen) and reader.produced == 30
    assert seen == sorted(seen) and seen[-1] == 29
    assert len(seen) + reader.dropped == 30


def test_latest_frame_reader_fast_consumer_gets_everything() -> None:
    frames = ((i, _frame(i)) for i in range(20))
    reader = FrameReader(frames, pace_fps=50, timeout_s=2.0)
    seen = [i for i, _ in reader]
    assert seen == sorted(seen) and seen[-1] == 19
    assert len(seen) + reader.dropped == 20


def test_latest_frame_reader_reraises_after_last_frame() -> None:
    def frames():
        yield 0, _frame(0)
        yield 1, _frame(1)
        raise SourceStalledError("boom")

    reader = FrameReader(frames(), timeout_s=2.0)
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


# -- a camera stand-in: a real video read through cv2.VideoCapture, paced by the test ------------
CAMERA_CLIP = "raw-videos/videos/carphone_pristine.mp4"   # 176x144, 120 frames


@pytest.fixture(scope="module")
def camera_clip(data_dir: Path) -> tuple[Path, list[np.ndarray]]:
    """The clip the fake cameras read, and its frames decoded once (the expected content)."""
    path = data_dir / CAMERA_CLIP
    cap = cv2.VideoCapture(str(path))
    frames = []
    ok, frame = cap.read()
    while ok:
        frames.append(frame)
        ok, frame = cap.read()
    cap.release()
    assert len(frames) == 120
    return path, frames


class _GatedCamera:
    """A camera whose every read waits until the test lets one frame through (``let``): the frames
    are a real video's, read with ``cv2.VideoCapture``; ``fail_at``: the read after that many frames
    raises (a driver error); past the file's end reads fail (an unplugged camera)."""

    def __init__(self, path: Path, fail_at: int | None = None) -> None:
        self.cap = cv2.VideoCapture(str(path))
        self.gate = threading.Semaphore(0)
        self.fail_at = fail_at
        self.reads = 0
        self.waiting = threading.Event()     # a read is blocked on the gate
        self.released = threading.Event()

    def isOpened(self) -> bool:  # noqa: N802 (OpenCV's name)
        return self.cap.isOpened()

    def get(self, prop: int) -> float:
        return self.cap.get(prop)

    def set(self, prop: int, value: float) -> bool:
        return False

    def let(self, n: int) -> None:
        for _ in range(n):
            self.gate.release()

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.waiting.set()
        passed = self.gate.acquire(timeout=30)     # a guard against a hung test, not a timing
        self.waiting.clear()
        if not passed or self.released.is_set():
            return False, None
        if self.reads == self.fail_at:
            raise RuntimeError("camera unplugged")
        self.reads += 1
        return self.cap.read()

    def release(self) -> None:
        self.released.set()
        self.cap.release()


class _PacedCamera(_GatedCamera):
    """The same video delivered in real time: frame k is read no earlier than k / fps s after the first."""

    def __init__(self, path: Path, fps: float) -> None:
        super().__init__(path)
        self.fps, self.start = fps, None

    def read(self) -> tuple[bool, np.ndarray | None]:
        self.start = time.monotonic() if self.start is None else self.start
        time.sleep(max(0.0, self.start + self.reads / self.fps - time.monotonic()))
        self.let(1)
        return super().read()


def _wait_until(condition, what: str) -> None:
    """Wait for another thread to reach ``condition`` (30 s: a guard against a hung test, not a timing)."""
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.001)


def test_camera_hands_a_slow_consumer_the_newest_frame(camera_clip) -> None:
    """The camera delivers 4 frames while the consumer is busy: it gets the 4th, the 3 before are
    dropped (counted); a consumer that keeps up loses nothing. Frames are the video's, in order."""
    path, expected = camera_clip
    cam = _GatedCamera(path)
    with CameraSource(0, opener=lambda _: cam, timeout_s=30, max_failures=1) as src:
        frames = iter(src)
        cam.let(1)
        index, frame = next(frames)
        assert index == 0 and np.array_equal(frame, expected[0]) and src.dropped == 0
        cam.let(4)                                    # the consumer is busy for 4 camera frames
        _wait_until(lambda: src._reader.produced == 5, "4 more frames from the camera")
        index, frame = next(frames)
        assert index == 4 and np.array_equal(frame, expected[4]) and src.dropped == 3
        for k in (5, 6):                              # keeping up: every frame
            cam.let(1)
            index, frame = next(frames)
            assert index == k and np.array_equal(frame, expected[k])
        assert src.dropped == 3 and src._reader.delivered == 4


def test_camera_error_reaches_the_consumer_after_the_newest_frame(camera_clip) -> None:
    path, expected = camera_clip
    cam = _GatedCamera(path, fail_at=3)
    with CameraSource(0, opener=lambda _: cam, timeout_s=30) as src:
        frames = iter(src)
        cam.let(4)                                    # 3 frames, then the read that raises
        _wait_until(lambda: not src._reader.alive, "the camera thread to end on the error")
        index, frame = next(frames)
        assert index == 2 and np.array_equal(frame, expected[2]) and src.dropped == 2
        with pytest.raises(RuntimeError, match="camera unplugged"):
            next(frames)


def test_close_with_a_read_blocked_releases_the_camera_when_it_returns(camera_clip) -> None:
    path, _ = camera_clip
    cam = _GatedCamera(path)
    src = CameraSource(0, opener=lambda _: cam, timeout_s=30)
    frames = iter(src)
    cam.let(1)
    assert next(frames)[0] == 0
    _wait_until(cam.waiting.is_set, "the next read to block")
    src.close()                                       # the read is still blocked in the "driver"
    assert not cam.released.is_set() and src._reader.alive
    cam.let(1)                                        # the read returns: the thread stops, releases
    _wait_until(cam.released.is_set, "the camera to be released")
    _wait_until(lambda: not src._reader.alive, "the reader thread to end")
    assert src._reader.delivered == 1                 # nothing handed out after close


def test_real_time_camera_and_a_slow_consumer(camera_clip) -> None:
    """A 240 fps camera and a consumer busy 10 ms per frame: frames come in order with the video's
    content, each one either handed out or dropped, the last one handed out, then the camera's
    end as an error (how many drop depends on the machine's load: not asserted)."""
    path, expected = camera_clip
    cam = _PacedCamera(path, fps=240)
    seen = []
    with CameraSource(0, opener=lambda _: cam, timeout_s=30, max_failures=1) as src, \
            pytest.raises(SourceStalledError, match="camera 0 stopped delivering frames after 120"):
        for index, frame in src:
            assert np.array_equal(frame, expected[index])
            seen.append(index)
            time.sleep(0.01)
    assert all(a < b for a, b in zip(seen, seen[1:])) and seen[-1] == 119
    assert len(seen) + src.dropped == 120 and src._reader.produced == 120


def test_files_give_every_frame_to_a_slow_consumer(camera_clip, tmp_path: Path) -> None:
    """Video files and frame folders are not live: no reader thread, nothing dropped, every frame."""
    path, expected = camera_clip
    folder = tmp_path / "frames"
    folder.mkdir()
    for k, frame in enumerate(expected[:12]):
        cv2.imwrite(str(folder / f"{k}.png"), frame)
    for src, n in ((VideoSource(path, prefetch=True), 120), (FrameFolderSource(folder, prefetch=True), 12)):
        with src:
            seen = []
            for index, frame in src:
                assert np.array_equal(frame, expected[index])
                seen.append(index)
                time.sleep(0.002)
            assert seen == list(range(n)) and src.dropped == 0 and src._reader.mode == "all"
    with VideoSource(path) as src:                                    # read in the consumer's thread
        assert [i for i, _ in src][-1] == 119 and src._reader is None


def test_reader_in_all_mode_reads_ahead_a_bounded_queue_and_drops_nothing() -> None:
    taken: list[int] = []

    def frames():
        for i in range(10):
            taken.append(i)
            yield i, _frame(i)

    reader = FrameReader(frames(), mode="all", depth=2, timeout_s=30)
    it = iter(reader)
    _wait_until(lambda: len(taken) == 3, "the producer to read ahead")
    assert reader.produced == 2                      # frame 2 waits for room: the queue holds 2
    first = next(it)
    assert first[0] == 0 and _index_of(first[1]) == 0
    _wait_until(lambda: len(taken) == 4, "the producer to go on once there is room")
    assert [i for i, _ in it] == list(range(1, 10))
    assert reader.dropped == 0 and reader.delivered == reader.produced == 10


def test_reader_in_all_mode_errors_after_every_frame_before_and_stops_on_close() -> None:
    def failing():
        yield from ((i, _frame(i)) for i in range(3))
        raise InputError("cannot read frame 3")

    reader = FrameReader(failing(), mode="all", depth=1, timeout_s=30)
    seen = []
    with pytest.raises(InputError, match="cannot read frame 3"):
        for index, _ in reader:
            seen.append(index)
    assert seen == [0, 1, 2]
    endless = FrameReader(((i, _frame(i % 200)) for i in range(10**9)), mode="all", depth=2, timeout_s=30)
    assert next(iter(endless))[0] == 0
    _wait_until(lambda: endless.produced == 3, "the queue to fill")
    endless.close()                                  # the producer waits for room: woken, it stops
    _wait_until(lambda: not endless.alive, "the reader thread to end")
    with pytest.raises(ValueError, match="expected 'latest' or 'all'"):
        FrameReader([], mode="newest")


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
