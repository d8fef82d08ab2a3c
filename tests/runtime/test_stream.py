"""The streaming loop (mast.runtime.stream): where a frame's time goes (read, tracker, the rest), window
pauses left out of the rate, and a live camera behind a slow tracker dropping stale frames."""
from __future__ import annotations

import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from mast.runtime import stream
from mast.runtime.run import summary_lines
from mast.runtime.sources import CameraSource
from mast.runtime.stream import LoopTimes, RunSummary, track_stream

from .test_sources import _GatedCamera, _wait_until, camera_clip  # noqa: F401 - camera_clip is a fixture

# fake durations, binary fractions of a second so that their sums are exact
READ, TRACK, DRAW, OUT, PAUSE, MASK = 1 / 64, 1 / 8, 1 / 32, 1 / 16, 4.0, 2.0
N = 6


class _Clock:
    """A fake ``time`` module for the loop: the fakes below move it."""

    def __init__(self) -> None:
        self.now = 100.0
        self.module = types.SimpleNamespace(perf_counter=lambda: self.now)

    def spend(self, seconds: float) -> None:
        self.now += seconds


class _Source:
    def __init__(self, clock: _Clock, n: int) -> None:
        self.clock, self.n, self.dropped = clock, n, 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        for k in range(self.n):
            self.clock.spend(READ)
            yield k, np.full((8, 8, 3), k, np.uint8)
        self.clock.spend(READ)            # the end of the source: after the last frame, not counted


class _Tracker:
    def __init__(self, clock: _Clock) -> None:
        self.clock, self.calls = clock, []

    def _mask(self, name: str, frame: np.ndarray) -> np.ndarray:
        self.clock.spend(TRACK)
        self.calls.append(name)
        ids = np.zeros(frame.shape[:2], np.uint8)
        ids[2:6, 2:6] = 1
        return ids

    def start(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._mask("start", frame)

    def step(self, frame: np.ndarray) -> np.ndarray:
        return self._mask("step", frame)

    def anchor(self, frame: np.ndarray, mask: np.ndarray, merge: bool = False) -> np.ndarray:
        return self._mask("anchor", frame)

    def close(self) -> None:
        pass


class _Window:
    """An editor that draws each frame and pauses once, on frame 3."""

    quit_requested = False

    def __init__(self, clock: _Clock) -> None:
        self.clock, self.paused_s = clock, 0.0

    def review(self, index: int, bgr: np.ndarray, ids: np.ndarray, objects, next_id: int) -> None:
        self.clock.spend(DRAW)
        if index == 3:
            self.clock.spend(PAUSE)
            self.paused_s += PAUSE


class _Sink:
    def __init__(self, clock: _Clock) -> None:
        self.clock, self.written = clock, []

    def write(self, index: int, bgr: np.ndarray, ids: np.ndarray) -> None:
        self.clock.spend(OUT)
        self.written.append(index)


def test_loop_times_split_each_frame_after_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(stream, "time", clock.module)
    tracker, sink = _Tracker(clock), _Sink(clock)

    def make_mask(frame: np.ndarray) -> np.ndarray:   # e.g. GrabCut from --box: not in the rate
        clock.spend(MASK)
        return np.ones(frame.shape[:2], np.uint8)

    said: list[str] = []
    summary = track_stream(tracker, _Source(clock, N), make_mask, [sink], editor=_Window(clock), say=said.append)
    assert said == ["frame 3: 4 processed, 4.27 fps, 0 dropped"]   # 5 s passed (the pause): the rate without it
    assert summary.frames == N and sink.written == list(range(N)) and tracker.calls == ["start"] + ["step"] * (N - 1)
    t = summary.times
    assert t.frames == N - 1
    assert t.read == pytest.approx(READ * (N - 1)) and t.track == pytest.approx(TRACK * (N - 1))
    assert t.loop == pytest.approx((DRAW + OUT) * (N - 1))          # the pause is not in it
    assert summary.fps == pytest.approx(1 / (READ + TRACK + DRAW + OUT))
    assert summary.seconds == pytest.approx(MASK + PAUSE + N * (READ + TRACK + DRAW + OUT) + READ)
    ms = t.per_frame_ms()
    assert ms == pytest.approx({"read": 1e3 * READ, "track": 1e3 * TRACK, "loop": 1e3 * (DRAW + OUT)})


def test_one_frame_has_no_split(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(stream, "time", clock.module)
    summary = track_stream(_Tracker(clock), _Source(clock, 1), lambda f: np.ones(f.shape[:2], np.uint8), [],
                           say=lambda _: None)
    assert summary.frames == 1 and summary.times == LoopTimes()
    assert summary.fps == pytest.approx(1 / summary.seconds)
    assert len(summary_lines(summary)) == 1 and "after the first" not in summary_lines(summary)[0]


def test_summary_prints_the_rate_and_the_split() -> None:
    summary = RunSummary(frames=11, seconds=3.0, dropped=4,
                         times=LoopTimes(frames=10, read=0.01, track=0.95, loop=0.04))
    lines = summary_lines(summary)
    assert lines[0] == "processed 11 frame(s) in 3.0 s: 10.00 fps after the first, 4 stale frame(s) dropped"
    assert lines[1] == "per frame: tracker 95.0 ms, waiting for the source 1.0 ms, window and outputs 4.0 ms"


class _SlowTracker:
    """A tracker during whose every step the camera delivers 3 frames (the tracker is 3x slower)."""

    def __init__(self, cam: _GatedCamera, source: CameraSource) -> None:
        self.cam, self.source, self.seen = cam, source, []

    def _track(self, frame: np.ndarray) -> np.ndarray:
        self.seen.append(frame)
        produced = self.source._reader.produced
        self.cam.let(3)
        _wait_until(lambda: self.source._reader.produced == produced + 3, "3 camera frames")
        return np.ones(frame.shape[:2], np.uint8)

    def start(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._track(frame)

    def step(self, frame: np.ndarray) -> np.ndarray:
        return self._track(frame)

    def anchor(self, frame: np.ndarray, mask: np.ndarray, merge: bool = False) -> np.ndarray:
        return self._track(frame)

    def close(self) -> None:
        pass


def test_slow_tracker_on_a_live_camera_takes_the_newest_frame(camera_clip) -> None:  # noqa: F811
    """The camera (a real video through cv2.VideoCapture) delivers 3 frames per tracked frame: the
    loop tracks every third one (the newest), drops the 2 before it, and never falls behind."""
    path, expected = camera_clip
    cam = _GatedCamera(path)
    cam.let(1)
    with CameraSource(0, opener=lambda _: cam, timeout_s=30, max_failures=1) as source:
        tracker, sink = _SlowTracker(cam, source), _Sink(_Clock())
        summary = track_stream(tracker, source, lambda f: np.ones(f.shape[:2], np.uint8), [sink],
                               max_frames=10, say=lambda _: None)
    assert sink.written == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]
    assert all(np.array_equal(f, expected[k]) for f, k in zip(tracker.seen, sink.written))
    # 2 dropped per tracked frame, the last one's included (frames 28 and 29: 30 waits, never taken)
    assert summary.frames == 10 and summary.dropped == 2 * 10 and summary.times.frames == 9


def test_iter_records_time_from_the_first_record(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clock = _Clock()
    monkeypatch.setattr(stream, "time", clock.module)
    mask = np.zeros((8, 8), np.uint8)
    mask[2:6, 2:6] = 1
    records = list(stream.iter_records(_Tracker(clock), _Source(clock, 3), mask=mask, say=lambda _: None))
    assert [r["frame"] for r in records] == [0, 1, 2]
    assert [r["time"] for r in records] == pytest.approx([0.0, READ + TRACK, 2 * (READ + TRACK)])
