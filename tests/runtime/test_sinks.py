"""Output sinks: palette PNGs, mp4 overlay videos (also after an interrupt), the window (headless)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mast.core.errors import InputError
from mast.core.masks import read_mask
from mast.runtime import sinks
from mast.runtime.sinks import (
    MaskPngSink,
    NoDisplayError,
    VideoSink,
    WindowSignal,
    WindowSink,
    display_available,
)

W, H = 96, 64


def _frame(i: int) -> np.ndarray:
    return np.full((H, W, 3), 40 + 10 * i, np.uint8)



def _count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} is not playable"
    n, size = 0, (0, 0)
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        n, size = n + 1, (frame.shape[1], frame.shape[0])
    cap.release()
    return n, size


# -- masks ---------------------------------------------------------------------------------------
def test_mask_png_sink_preserves_ids(toy_ids, tmp_path: Path) -> None:
    out = tmp_path / "out" / "masks"  # created at open
    with MaskPngSink(out) as sink:
        sink.write(0, _frame(0), toy_ids())
        sink.write(12, None, toy_ids())
    assert sorted(p.name for p in out.iterdir()) == ["00000.png", "00012.png"]
    back = read_mask(out / "00012.png")
    np.testing.assert_array_equal(back, toy_ids())
    assert set(np.unique(back).tolist()) == {0, 1, 3, 200}
    with Image.open(out / "00000.png") as im:
        assert im.mode == "P"


def test_mask_png_sink_uses_source_names(toy_ids, tmp_path: Path) -> None:
    names = ["frame_a", "frame_b"]
    with MaskPngSink(tmp_path, name_of=names.__getitem__) as sink:
        sink.write(1, None, toy_ids())
    assert (tmp_path / "frame_b.png").is_file()


def test_mask_png_sink_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    with pytest.raises(InputError, match="file.txt"):
        MaskPngSink(blocker / "masks")


# -- video ---------------------------------------------------------------------------------------
def test_video_sink_writes_playable_mp4(toy_ids, tmp_path: Path) -> None:
    path = tmp_path / "out.mp4"
    with VideoSink(path, fps=10, size=(W, H)) as sink:
        for i in range(6):
            sink.write(i, _frame(i), toy_ids())
    assert sink.written == 6
    assert _count_frames(path) == (6, (W, H))


def test_video_sink_closed_early_is_playable(toy_ids, tmp_path: Path) -> None:
    """A Ctrl-C in the middle of the loop: the `with` releases the writer, the file plays."""
    path = tmp_path / "interrupted.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoSink(path, fps=25, size=(W, H)) as sink:
            for i in range(20):
                if i == 4:
                    raise KeyboardInterrupt
                sink.write(i, _frame(i), toy_ids())
    assert _count_frames(path) == (4, (W, H))
    sink.close()  # idempotent


def test_video_sink_size_from_first_frame_and_resize(toy_ids, tmp_path: Path) -> None:
    path = tmp_path / "auto.mp4"
    with VideoSink(path, fps=None) as sink:
        assert sink.fps == 30.0
        sink.write(0, _frame(0), toy_ids())
        small = cv2.resize(_frame(1), (W // 2, H // 2))
        sink.write(1, small, np.zeros((H // 2, W // 2), np.uint8))  # resized to the first size
    assert _count_frames(path) == (2, (W, H))


def test_video_sink_unwritable_path_fails_at_open(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for size in ((W, H), None):
        with pytest.raises(InputError, match="file.txt"):
            VideoSink(blocker / "out.mp4", fps=10, size=size)
    with pytest.raises(InputError, match="is a folder"):
        VideoSink(tmp_path, fps=10, size=(W, H))
    assert blocker.read_text() == "x"


# -- display / window ----------------------------------------------------------------------------
def _forbid_gui(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("a cv2 GUI function was called without a display")

    for name in ("imshow", "namedWindow", "waitKey", "destroyWindow", "getWindowProperty"):
        monkeypatch.setattr(cv2, name, boom)


def test_no_display_when_display_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks.sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    _forbid_gui(monkeypatch)
    assert display_available() is False
    with pytest.raises(NoDisplayError, match="no display available"):
        WindowSink("tracking")


def test_display_set_depends_on_opencv_gui(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks.sys, "platform", "linux")
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    assert display_available() is sinks._cv2_has_gui()


class _FakeGui:
    """Stands in for OpenCV's window functions, replaying a list of keys."""

    def __init__(self, keys: list[int]) -> None:
        self.keys = list(keys)
        self.shown = 0
        self.destroyed = False

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(sinks, "display_available", lambda: True)
        monkeypatch.setattr(cv2, "namedWindow", lambda *a: None)
        monkeypatch.setattr(cv2, "imshow", self.imshow)
        monkeypatch.setattr(cv2, "waitKey", lambda ms: self.keys.pop(0) if self.keys else -1)
        monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: 1.0)
        monkeypatch.setattr(cv2, "destroyWindow", self.destroy)

    def imshow(self, title: str, img: np.ndarray) -> None:
        assert img.shape == (H, W, 3)
        self.shown += 1

    def destroy(self, title: str) -> None:
        self.destroyed = True


def test_window_keys(toy_ids, monkeypatch: pytest.MonkeyPatch) -> None:
    gui = _FakeGui([-1, -1, ord(" "), -1, -1, ord(" "), -1, 27])
    gui.install(monkeypatch)
    with WindowSink("t") as win:
        assert win.write(0, _frame(0), toy_ids()) is WindowSignal.CONTINUE
        assert win.write(1, _frame(1), toy_ids()) is WindowSignal.CONTINUE
        assert win.write(2, _frame(2), toy_ids()) is WindowSignal.CONTINUE  # paused, then resumed
        assert not win.paused
        assert win.write(3, _frame(3), toy_ids()) is WindowSignal.CONTINUE
        assert win.write(4, _frame(4), toy_ids()) is WindowSignal.QUIT  # Esc
        assert win.quit_requested and win.fps is not None
        assert win.write(5, _frame(5), toy_ids()) is WindowSignal.QUIT
    assert gui.destroyed and gui.shown == 8


def test_window_quit_while_paused(toy_ids, monkeypatch: pytest.MonkeyPatch) -> None:
    gui = _FakeGui([ord(" "), -1, ord("q")])
    gui.install(monkeypatch)
    with WindowSink("t") as win:
        assert win.write(0, _frame(0), toy_ids()) is WindowSignal.QUIT


def test_window_rate_and_pauses(toy_ids, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fps shown is the rate frames are shown at; a pause (10 s per key poll here) is summed in
    ``paused_s`` and left out of the rate. A fake clock: frames 0.1 s apart, nothing else moves it."""
    clock = [0.0]
    monkeypatch.setattr(sinks.time, "monotonic", lambda: clock[0])
    gui = _FakeGui([-1, -1, ord(" "), -1, ord(" "), -1])
    gui.install(monkeypatch)
    shown: list[np.ndarray] = []
    monkeypatch.setattr(cv2, "imshow", lambda title, img: shown.append(img))

    def wait_key(ms: int) -> int:
        clock[0] += 10.0 if win.paused else 0.0
        return gui.keys.pop(0) if gui.keys else -1

    monkeypatch.setattr(cv2, "waitKey", wait_key)
    with WindowSink("t") as win:
        for i in range(4):
            win.write(i, _frame(i), toy_ids())
            clock[0] += 0.1
        assert win.paused_s == pytest.approx(20.0) and win.fps == pytest.approx(10.0)
    assert len(shown) == 4 + 2                                          # the paused frame twice more
