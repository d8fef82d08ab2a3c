"""Output sinks for the streaming runtime (torch-free).

Every sink has ``write(index, bgr, ids)`` — ``index`` the source frame index, ``bgr`` the frame
``uint8 [H, W, 3]``, ``ids`` the object ids ``uint8 [H, W]`` (0 = background) — ``close()``, and
is a context manager, so outputs are finalised even when the loop is interrupted (Ctrl-C).

No cv2 GUI function is ever called unless :func:`display_available` says a display exists;
:class:`WindowSink` refuses to open otherwise and callers fall back to headless output. What the
video and the window draw (overlay, ids, key legends) is :mod:`mast.runtime.drawing`.
"""
from __future__ import annotations

import enum
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as coco_mask

from mast.core.errors import InputError, MastError
from mast.core.masks import write_mask
from mast.runtime.drawing import draw_status, render
from mast.runtime.objects import ObjectMonitor

DEFAULT_FPS = 30.0


class NoDisplayError(MastError):
    """A window was asked for where no display exists (headless machine, SSH without X)."""


def _cv2_has_gui() -> bool:
    """True when this OpenCV build has a GUI backend (opencv-python-headless has none)."""
    for line in cv2.getBuildInformation().splitlines():
        key, _, value = line.strip().partition(":")
        if key == "GUI":
            return value.strip().upper() not in ("", "NONE", "NO")
    return True


def display_available() -> bool:
    """True when a window can be shown: on Linux/BSD ``DISPLAY`` or ``WAYLAND_DISPLAY`` must be
    set; and OpenCV must have been built with a GUI backend."""
    if not (sys.platform.startswith("win") or sys.platform == "darwin"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return False
    return _cv2_has_gui()


class Sink:
    """Base class: ``write(index, bgr, ids)``, ``close()`` (idempotent), context manager."""

    def write(self, index: int, bgr: np.ndarray | None, ids: np.ndarray) -> object:
        raise NotImplementedError

    def close(self) -> None:
        """Finalise the output; safe to call twice."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _make_dir(path: Path, what: str) -> None:
    """Create ``path`` (and parents); InputError when that is impossible or it is not writable."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {what} {path}: {exc.strerror or exc} (expected a writable "
                         "folder): choose another output path") from exc
    if not os.access(path, os.W_OK):
        raise InputError(f"{what} {path} is not writable (expected a writable folder): "
                         "choose another output path or fix its permissions")


class MaskPngSink(Sink):
    """One palette PNG per frame (``mast.core.masks.write_mask``) in ``directory``.

    The file name is ``name_of(index) + ".png"`` — pass a source's ``frame_name`` to keep its names —
    or the zero-padded index (``00012.png``). The folder is created at open (InputError if impossible).
    """

    def __init__(self, directory: str | Path, *, name_of: Callable[[int], str] | None = None) -> None:
        self.directory = Path(directory)
        self.name_of = name_of or (lambda index: f"{index:05d}")
        self.written = 0
        _make_dir(self.directory, "mask folder")

    def path_for(self, index: int) -> Path:
        """Where frame ``index``'s mask goes."""
        return self.directory / f"{self.name_of(index)}.png"

    def write(self, index: int, bgr: np.ndarray | None, ids: np.ndarray) -> None:
        """Write ``ids`` ``[H, W]`` uint8 as a palette PNG; ``bgr`` is not used (may be None)."""
        write_mask(self.path_for(index), ids)
        self.written += 1


def object_record(ids: np.ndarray, k: int, present: bool) -> dict[str, Any]:
    """JSON-ready record of object ``k`` in ``ids`` ``uint8 [H, W]``: ``id``, ``bbox`` ``[x, y, w, h]``
    (pixels, ``pycocotools.mask.toBbox``), ``area`` (pixels), ``rle`` (COCO compressed RLE, ``counts``
    as str), ``present``."""
    rle = coco_mask.encode(np.asfortranarray(ids == k, dtype=np.uint8))
    bbox = coco_mask.toBbox(rle)
    return {"id": int(k), "bbox": [float(v) for v in bbox], "area": int(coco_mask.area(rle)),
            "rle": {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")},
            "present": bool(present)}


def frame_record(frame: int, seconds: float, ids: np.ndarray, monitor: ObjectMonitor) -> dict[str, Any]:
    """One line of ``--save-json``: ``{"frame", "time", "objects": [...]}`` for the frame of source index
    ``frame``, ``seconds`` after the first record, with ``ids`` ``uint8 [H, W]``; every object the
    ``monitor`` knows is listed (by id), absent or lost ones with ``"present": false``."""
    return {"frame": int(frame), "time": round(float(seconds), 6),
            "objects": [object_record(ids, k, monitor.present(k)) for k in sorted(monitor.objects)]}


class JsonLinesSink(Sink):
    """``--save-json``: one :func:`frame_record` per frame, one JSON object per line (JSON Lines).

    The file is created (parents too) at open: InputError before any frame when it cannot be. Each
    line is written whole and flushed at once; ``close()`` cuts anything after the last complete line
    (a write broken by a second Ctrl-C), so the file always ends on a complete line. ``time`` is
    wall-clock seconds since the first line. ``monitor`` supplies the object ids and their presence.
    """

    def __init__(self, path: str | Path, monitor: ObjectMonitor) -> None:
        self.path = Path(path)
        self.monitor = monitor
        self.written = 0
        self._t0: float | None = None
        self._complete = 0   # bytes up to the end of the last complete line
        if self.path.is_dir():
            raise InputError(f"JSON output {self.path} is a folder (expected a file path such as "
                             "out.jsonl): add a file name")
        _make_dir(self.path.parent, "JSON output folder")
        try:
            self._file = open(self.path, "wb", buffering=0)  # noqa: SIM115 - closed by close()
        except OSError as exc:
            raise InputError(f"cannot write JSON lines to {self.path}: {exc.strerror or exc}: "
                             "choose another output path") from exc

    def write(self, index: int, bgr: np.ndarray | None, ids: np.ndarray) -> None:
        """Append the record of frame ``index`` with ``ids`` ``[H, W]``; ``bgr`` is not used (may be None)."""
        now = time.perf_counter()
        self._t0 = now if self._t0 is None else self._t0
        line = (json.dumps(frame_record(index, now - self._t0, ids, self.monitor)) + "\n").encode("utf-8")
        view = memoryview(line)
        while view:                       # a raw file may take part of a write
            view = view[self._file.write(view):]
        self._complete += len(line)
        self.written += 1

    def close(self) -> None:
        """Cut a partial last line (if any) and close the file; safe to call twice."""
        if self._file.closed:
            return
        if self._file.seek(0, os.SEEK_END) != self._complete:
            self._file.truncate(self._complete)
        self._file.close()


class VideoSink(Sink):
    """An mp4 (codec ``mp4v``) of the colour overlay with object ids drawn at their centroids.

    ``fps``: frames per second of the file (None or <= 0: 30). ``size``: ``(width, height)`` in
    pixels; None takes the first frame's size. The path is checked at open — InputError before
    any frame is processed when it cannot be written. ``close()`` always releases the writer, so
    the file is complete and playable even after an interrupt; frames of another size are resized.
    """

    def __init__(self, path: str | Path, fps: float | None = DEFAULT_FPS,
                 size: tuple[int, int] | None = None, *, alpha: float = 0.5) -> None:
        self.path = Path(path)
        self.fps = float(fps) if fps and fps > 0 else DEFAULT_FPS
        self.size = tuple(size) if size is not None else None
        self.alpha = alpha
        self.written = 0
        self._writer: cv2.VideoWriter | None = None
        if self.path.is_dir():
            raise InputError(f"video output {self.path} is a folder (expected a file path such as "
                             "out.mp4): add a file name")
        _make_dir(self.path.parent, "video output folder")
        if self.size is not None:
            self._writer = self._open(self.size)
        else:
            self._open((16, 16)).release()  # probe now, reopen at the first frame
            self.path.unlink(missing_ok=True)

    def _open(self, size: tuple[int, int]) -> cv2.VideoWriter:
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps,
                                 (int(size[0]), int(size[1])))
        if not writer.isOpened():
            writer.release()
            raise InputError(f"cannot write video {self.path} (expected a writable .mp4/.avi path): "
                             "choose another output path")
        return writer

    def write(self, index: int, bgr: np.ndarray, ids: np.ndarray) -> None:
        """Append the overlay of ``ids`` ``[H, W]`` on ``bgr`` ``[H, W, 3]`` as one video frame."""
        if self._writer is None:
            self.size = (bgr.shape[1], bgr.shape[0])
            self._writer = self._open(self.size)
        frame = render(bgr, ids, self.alpha)
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        self._writer.write(frame)
        self.written += 1

    def close(self) -> None:
        """Release the writer (finalises the file); safe to call twice."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()


class WindowSignal(enum.Enum):
    """What the window asks the caller to do after a frame was shown."""

    CONTINUE = "continue"
    QUIT = "quit"


_QUIT_KEYS = (ord("q"), ord("Q"), 27)  # q, Esc
_PAUSE_KEY = ord(" ")


class WindowSink(Sink):
    """An OpenCV window showing the overlay, the ids and the live frame rate (an exponential moving
    average of the rate at which frames are shown, pauses left out; ``paused_s`` sums the pauses).

    Keys (listed at the bottom of the window, :attr:`legend`): ``q``/Esc quit, space pauses (and
    resumes). ``write`` returns a :class:`WindowSignal`;
    ``quit_requested`` stays True once the user asked to quit (or closed the window).
    Raises :class:`NoDisplayError` at open when :func:`display_available` is False; no cv2 GUI
    function is called then.
    """

    legend: tuple[str, ...] = ("space: pause   q/Esc: quit",)

    def __init__(self, title: str = "mast", *, alpha: float = 0.5) -> None:
        if not display_available():
            raise NoDisplayError(f"cannot open window {title!r}: no display available (DISPLAY/"
                                 "WAYLAND_DISPLAY unset or OpenCV built without GUI): run headless "
                                 "and write masks or a video instead")
        self.title = title
        self.alpha = alpha
        self.quit_requested = False
        self.paused = False
        self.fps: float | None = None  # exponential moving average of the display rate
        self.paused_s = 0.0            # wall seconds spent paused (and editing) so far
        self._last: float | None = None
        self._open = True
        cv2.namedWindow(title, cv2.WINDOW_NORMAL)

    def _tick(self) -> None:
        now = time.monotonic()
        if self._last is not None and now > self._last:
            rate = 1.0 / (now - self._last)
            self.fps = rate if self.fps is None else 0.9 * self.fps + 0.1 * rate
        self._last = now

    def _annotate(self, frame: np.ndarray) -> np.ndarray:
        """Write the frame rate (and "[paused]") and the keys into ``frame`` in place; returns it."""
        text = f"{self.fps:.1f} fps" if self.fps is not None else "-- fps"
        return draw_status(frame, text + ("  [paused]" if self.paused else ""), self.legend)

    def write(self, index: int, bgr: np.ndarray, ids: np.ndarray) -> WindowSignal:
        """Show the frame; handle keys (blocks while paused). Returns CONTINUE or QUIT."""
        if self.quit_requested or not self._open:
            return WindowSignal.QUIT
        self._tick()
        overlay = render(bgr, ids, self.alpha)
        cv2.imshow(self.title, self._annotate(overlay.copy()))
        self._handle_key(cv2.waitKey(1) & 0xFF)
        if self.paused:
            start = time.monotonic()
            self._wait_while_paused(bgr, ids, overlay)
            self.paused_s += time.monotonic() - start
        return WindowSignal.QUIT if self.quit_requested else WindowSignal.CONTINUE

    def _wait_while_paused(self, bgr: np.ndarray, ids: np.ndarray, overlay: np.ndarray) -> None:
        """Keep the window responsive until space (resume) or q/Esc (quit); ``overlay`` is
        :func:`render` of ``bgr`` and ``ids`` (a subclass may edit ``ids``: :mod:`mast.runtime.edit_window`)."""
        while self.paused and not self.quit_requested:
            cv2.imshow(self.title, self._annotate(overlay.copy()))
            self._handle_key(cv2.waitKey(50) & 0xFF)
        self._last = time.monotonic()  # the pause does not count in the frame rate

    def _handle_key(self, key: int) -> None:
        if key in _QUIT_KEYS or self._window_closed():
            self.quit_requested = True
        elif key == _PAUSE_KEY:
            self.paused = not self.paused

    def _window_closed(self) -> bool:
        try:
            return cv2.getWindowProperty(self.title, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def close(self) -> None:
        """Destroy the window; safe to call twice."""
        if not self._open:
            return
        self._open = False
        try:
            cv2.destroyWindow(self.title)
            cv2.waitKey(1)
        except cv2.error:
            pass
