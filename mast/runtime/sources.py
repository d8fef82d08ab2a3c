"""Frame sources for the streaming runtime (torch-free).

Every source is a small object with the same interface:

- iterating it yields ``(index, bgr)`` pairs: ``index`` is the frame's position in the source
  (0, 1, 2, ...; a live source that drops stale frames skips indices), ``bgr`` is a ``uint8``
  array ``[H, W, 3]`` in OpenCV's BGR order. Sources are single-pass: iterate once.
- ``close()`` releases the device or file; sources are context managers.
- ``name`` (str), ``fps`` (frames per second, float, or None when unknown), ``is_live`` (bool),
  ``frame_size`` (``(width, height)`` in pixels, or None when unknown before the first frame),
  ``frame_name(index)`` (a file-name stem for that frame's outputs), ``dropped`` (stale frames
  skipped so far; always 0 for a non-live source).

A :class:`FrameReader` reads a source in a background thread, so decoding overlaps the tracker.
Live sources (a camera, or a video file with ``simulate_live=True``) in ``"latest"`` mode:
the thread grabs frames as fast as the device delivers them and the consumer always gets the newest
one, so a tracker slower than the camera never falls behind. Files (videos, frame folders) with
``prefetch=True`` (``mast-run``'s) in ``"all"`` mode: a short queue, every frame in order, nothing
dropped; without it they are read in the consumer's thread.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np

from mast.core.errors import InputError
from mast.core.images import list_images, read_frame

Frame = tuple[int, np.ndarray]


class SourceStalledError(InputError):
    """A live source (camera) that stopped delivering frames in the middle of the stream."""


@contextmanager
def _quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines (probing a missing camera prints several) for a moment."""
    logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if logging is None:
        yield
        return
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        logging.setLogLevel(level)


def _positive(value: float | None) -> float | None:
    """``value`` when it is a positive number, else None (OpenCV reports unknown fps as 0)."""
    return float(value) if value is not None and value > 0 else None


ReadMode = Literal["latest", "all"]
"""How a :class:`FrameReader` hands frames out: the newest only (live), or every one in order (files)."""


class FrameReader:
    """Reads frames in a background thread and hands them to the consumer.

    ``frames`` is any iterable of ``(index, bgr)`` (e.g. a camera's blocking reads, a file's decoder).
    ``mode`` ``"latest"`` (live sources): the producer keeps a single slot; a frame replaced before
    the consumer took it is *dropped* (counted in ``dropped``): the consumer never gets an older frame
    after a newer one, and memory holds at most one waiting frame. ``"all"`` (files): a queue of up to
    ``depth`` frames; the producer waits while it is full: every frame, in order, none dropped (the
    next frames decode while the consumer works). ``produced`` counts the frames taken from ``frames``.

    ``pace_fps``: when set, the producer publishes at most this many frames per second (frame k
    is due ``k / pace_fps`` seconds after the start) — a video file then behaves like a camera.
    ``timeout_s``: the consumer raises :class:`SourceStalledError` when no new frame arrived for
    this many seconds (None: wait forever). An error raised by ``frames`` is re-raised to the
    consumer after the frames read before it were handed out (in ``"latest"`` mode: the newest).
    """

    def __init__(self, frames: Iterable[Frame], *, mode: ReadMode = "latest", depth: int = 2,
                 pace_fps: float | None = None, timeout_s: float | None = 5.0, name: str = "source") -> None:
        if mode not in ("latest", "all") or depth < 1:
            raise ValueError(f"FrameReader mode {mode!r}, depth {depth}: expected 'latest' or 'all', depth >= 1")
        self._frames = frames
        self.mode = mode
        self._depth = 1 if mode == "latest" else depth
        self._pace = _positive(pace_fps)
        self.timeout_s = timeout_s
        self.name = name
        self.dropped = 0
        self.delivered = 0
        self.produced = 0
        self._queue: deque[Frame] = deque()
        self._done = False
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._on_exit: list[Callable[[], None]] = []   # run by the producer thread as it ends
        self._thread = threading.Thread(target=self._produce, name=f"frames:{name}", daemon=True)

    # -- producer (background thread) --------------------------------------------------------
    def _produce(self) -> None:
        iterator = iter(self._frames)
        start = time.monotonic()
        try:
            for k, frame in enumerate(iterator):
                if self._stop.is_set() or not self._wait_due(start, k) or not self._publish(frame):
                    break
        except BaseException as exc:  # handed to the consumer, re-raised there
            with self._cond:
                self._error = exc
        finally:
            closer = getattr(iterator, "close", None)
            if closer is not None:
                closer()
            with self._cond:
                self._done = True
                self._cond.notify_all()
                on_exit, self._on_exit = self._on_exit, []
            for call in on_exit:
                call()

    def _wait_due(self, start: float, k: int) -> bool:
        """Sleep until frame ``k`` is due under ``pace_fps``; False when asked to stop meanwhile."""
        if self._pace is None:
            return True
        delay = start + k / self._pace - time.monotonic()
        return delay <= 0 or not self._stop.wait(delay)

    def _publish(self, frame: Frame) -> bool:
        """Hand ``frame`` over (in ``"all"`` mode once there is room); False when asked to stop meanwhile."""
        with self._cond:
            if self.mode == "latest":
                if self._queue:
                    self._queue.clear()
                    self.dropped += 1
            else:
                self._cond.wait_for(lambda: len(self._queue) < self._depth or self._stop.is_set())
                if self._stop.is_set():
                    return False
            self._queue.append(frame)
            self.produced += 1
            self._cond.notify_all()
            return True

    # -- consumer ----------------------------------------------------------------------------
    def start(self) -> "FrameReader":
        """Start the background thread (done by the first iteration; calling it twice is fine)."""
        if self._thread.ident is None:
            self._thread.start()
        return self

    def __iter__(self) -> "FrameReader":
        return self.start()

    def __next__(self) -> Frame:
        with self._cond:
            if not self._cond.wait_for(self._ready, timeout=self.timeout_s):
                raise SourceStalledError(
                    f"{self.name} delivered no frame for {self.timeout_s:g} s after "
                    f"{self.delivered} frame(s) (expected a steady stream): check that the camera "
                    "is connected and not used by another program")
            if self._queue:
                self.delivered += 1
                self._cond.notify_all()        # room for the producer ("all" mode)
                return self._queue.popleft()
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            raise StopIteration

    def _ready(self) -> bool:
        return bool(self._queue) or self._done

    @property
    def alive(self) -> bool:
        """True while the producer thread is still running."""
        return self._thread.is_alive()

    def close(self, join_timeout_s: float = 1.0) -> None:
        """Ask the producer to stop and wait up to ``join_timeout_s`` for it (it may be blocked
        inside a device read; it is a daemon thread and does not keep the process alive)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()            # a producer waiting for room
        if self._thread.is_alive():
            self._thread.join(join_timeout_s)

    def call_when_stopped(self, call: Callable[[], None]) -> None:
        """Run ``call`` once the producer thread has ended: now when it has ended or never started,
        else in that thread as it ends (e.g. release a device whose read was still blocked at close)."""
        with self._cond:
            if self._thread.is_alive() and not self._done:
                self._on_exit.append(call)
                return
        call()

    def __enter__(self) -> "FrameReader":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameSource:
    """Base class: the common interface (see the module docstring). Subclasses implement
    ``_read_frames()`` — a plain sequential generator of ``(index, bgr)`` — and ``_release()``.

    ``latest`` (live sources): read in ``"latest"`` mode (else every frame, in the consumer's
    thread, however late); ``prefetch`` (files): read ahead in ``"all"`` mode (else in the
    consumer's thread); ``timeout_s``: see :class:`FrameReader`."""

    name: str = "source"
    fps: float | None = None
    is_live: bool = False
    frame_size: tuple[int, int] | None = None

    def __init__(self, *, latest: bool = True, prefetch: bool = False, timeout_s: float | None = 5.0) -> None:
        self.latest = latest
        self.prefetch = prefetch
        self.timeout_s = timeout_s
        self._reader: FrameReader | None = None
        self._closed = False

    def _read_frames(self) -> Iterator[Frame]:
        raise NotImplementedError

    def _release(self) -> None:
        """Free the device or file handle (called once, by ``close()``)."""

    def _pace_fps(self) -> float | None:
        """Frames per second a live reader paces the producer at (None: no pacing)."""
        return None

    def frame_name(self, index: int) -> str:
        """File-name stem for frame ``index`` (e.g. ``"00012"``)."""
        return f"{index:05d}"

    @property
    def dropped(self) -> int:
        """Stale frames skipped so far by a live reader (0 for files: they drop none)."""
        return self._reader.dropped if self._reader is not None else 0

    def __iter__(self) -> Iterator[Frame]:
        if self._closed:
            raise InputError(f"{self.name} is closed (expected an open source): open it again")
        if self.is_live and self.latest:
            self._reader = FrameReader(self._read_frames(), mode="latest", pace_fps=self._pace_fps(),
                                       timeout_s=self.timeout_s, name=self.name)
        elif not self.is_live and self.prefetch:
            self._reader = FrameReader(self._read_frames(), mode="all", timeout_s=None, name=self.name)
        else:
            return self._read_frames()
        return iter(self._reader)

    def close(self) -> None:
        """Stop any reader thread and release the device or file; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._reader is None:
            self._release()
            return
        self._reader.close()
        # a read still blocked in the device: releasing now could crash; the thread releases it when the read returns
        self._reader.call_when_stopped(self._release)

    def __enter__(self) -> "FrameSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, fps={self.fps}, live={self.is_live})"


class CameraSource(FrameSource):
    """A camera read with OpenCV's ``VideoCapture(index)``; live: read in its own thread, the newest
    frame handed out (:class:`FrameReader` ``"latest"``) unless ``latest=False``.

    ``max_failures``: that many failed reads in a row end the stream with
    :class:`SourceStalledError` (after the frames read so far were handed out); ``timeout_s``: the
    same when a read blocks that long. ``width``/``height``/``fps`` request a capture mode (the
    camera may ignore it). ``opener`` builds the capture from the index (tests pass a fake).
    """

    def __init__(self, index: int, *, width: int | None = None, height: int | None = None,
                 fps: float | None = None, latest: bool = True, timeout_s: float | None = 5.0,
                 max_failures: int = 30, opener: Callable[[int], Any] = cv2.VideoCapture) -> None:
        super().__init__(latest=latest, timeout_s=timeout_s)
        self.index = int(index)
        self.name = f"camera {self.index}"
        self.is_live = True
        self.max_failures = max_failures
        self._cap = self._open(opener)
        self._request_mode(width, height, fps)
        self.fps = _positive(self._cap.get(cv2.CAP_PROP_FPS))
        w, h = (int(self._cap.get(p)) for p in (cv2.CAP_PROP_FRAME_WIDTH, cv2.CAP_PROP_FRAME_HEIGHT))
        self.frame_size = (w, h) if w > 0 and h > 0 else None

    def _open(self, opener: Callable[[int], Any]) -> Any:
        with _quiet_opencv():
            cap = opener(self.index)
        if cap is None or not cap.isOpened():
            if cap is not None:
                cap.release()
            raise InputError(
                f"camera {self.index} could not be opened (missing or busy?): expected a connected "
                f"video device (/dev/video{self.index} on Linux); check the index (e.g. "
                "`v4l2-ctl --list-devices`) and close other programs using the camera")
        return cap

    def _request_mode(self, width: int | None, height: int | None, fps: float | None) -> None:
        for prop, value in ((cv2.CAP_PROP_FRAME_WIDTH, width), (cv2.CAP_PROP_FRAME_HEIGHT, height),
                            (cv2.CAP_PROP_FPS, fps)):
            if value:
                self._cap.set(prop, float(value))

    def _read_frames(self) -> Iterator[Frame]:
        index, failures = 0, 0
        while True:
            ok, frame = self._cap.read()
            if ok and frame is not None:
                failures = 0
                yield index, frame
                index += 1
                continue
            failures += 1
            if failures >= self.max_failures:
                raise SourceStalledError(
                    f"{self.name} stopped delivering frames after {index} frame(s) "
                    f"({failures} failed reads in a row; expected a steady stream): check the "
                    "cable/driver and that no other program took the camera, then restart")
            time.sleep(0.01)

    def _release(self) -> None:
        self._cap.release()


class VideoSource(FrameSource):
    """A video file read with OpenCV (FFmpeg). Not live by default: every frame, in order (decoded
    ahead in a background thread with ``prefetch=True``, as ``mast-run`` does).

    ``simulate_live=True`` makes it stand in for a camera: frames are produced at ``fps`` (the
    file's rate unless given; 30 when the file has none) in a background thread and the consumer
    gets the newest one, stale frames being dropped (see :class:`FrameReader`).
    """

    def __init__(self, path: str | Path, *, simulate_live: bool = False, fps: float | None = None,
                 latest: bool = True, prefetch: bool = False, timeout_s: float | None = 5.0) -> None:
        super().__init__(latest=latest, prefetch=prefetch, timeout_s=timeout_s)
        self.path = Path(path)
        self.name = self.path.name
        self.is_live = simulate_live
        self._cap = self._open()
        self._first = self._read_first()
        self.fps = _positive(fps) or _positive(self._cap.get(cv2.CAP_PROP_FPS))
        h, w = self._first.shape[:2]
        self.frame_size = (w, h)

    def _open(self) -> Any:
        if not self.path.is_file():
            raise InputError(f"video not found: {self.path} (expected a video file such as .mp4 or "
                             ".avi): check the path")
        with _quiet_opencv():
            cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            cap.release()
            raise InputError(f"cannot open video {self.path} (expected a video OpenCV/FFmpeg can "
                             "decode, e.g. H.264 .mp4): re-encode it, e.g. "
                             "`ffmpeg -i IN -c:v libx264 out.mp4`")
        return cap

    def _read_first(self) -> np.ndarray:
        ok, frame = self._cap.read()
        if not ok or frame is None:
            self._cap.release()
            raise InputError(f"video {self.path} has no readable frame (expected at least one "
                             "decodable frame): check that the file is complete")
        return frame

    def _pace_fps(self) -> float | None:
        return self.fps or 30.0

    def _read_frames(self) -> Iterator[Frame]:
        frame, index = self._first, 0
        self._first = None
        if frame is None:
            raise InputError(f"{self.name} was already read (sources are single-pass): open it again")
        while frame is not None:
            yield index, frame
            ok, frame = self._cap.read()
            frame = frame if ok else None
            index += 1

    def _release(self) -> None:
        self._cap.release()


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class FrameFolderSource(FrameSource):
    """A folder of ``.jpg``/``.jpeg``/``.png`` frames, in natural name order
    (:func:`mast.core.images.list_images`); not live: every frame, in order (decoded ahead in a
    background thread with ``prefetch=True``, as ``mast-run`` does).

    All frames must have the first frame's size. ``frame_name(i)`` is the i-th file's stem, so
    outputs keep the input's names (DAVIS ``00000.jpg`` -> ``00000.png``). A JPEG cut short is
    tracked as decoded and ``warn`` is told, naming the file (:func:`mast.core.images.read_frame`).
    """

    def __init__(self, path: str | Path, *, fps: float | None = None, prefetch: bool = False,
                 warn: Callable[[str], None] | None = None) -> None:
        super().__init__(latest=False, prefetch=prefetch, timeout_s=None)
        self.warn = warn or _to_stderr
        self.path = Path(path)
        self.name = self.path.name
        self.fps = _positive(fps)
        self.files = self._list_files()
        h, w = self._load(self.files[0]).shape[:2]
        self.frame_size = (w, h)

    def _list_files(self) -> list[Path]:
        if not self.path.is_dir():
            raise InputError(f"frame folder not found: {self.path} (expected a folder of .jpg/.png "
                             "frames): check the path")
        files = list_images(self.path)
        if not files:
            raise InputError(f"no frames in {self.path} (expected .jpg, .jpeg or .png files): "
                             "point to the folder that holds the images")
        return files

    def _load(self, file: Path) -> np.ndarray:
        """Read one frame as BGR ``[H, W, 3]`` uint8; InputError naming the file when unreadable."""
        frame, warning = read_frame(file, "frame")
        if warning:
            self.warn(f"warning: {warning}")
        if self.frame_size is not None and (frame.shape[1], frame.shape[0]) != self.frame_size:
            raise InputError(f"frame {file} is {frame.shape[1]}x{frame.shape[0]} but the first frame "
                             f"is {self.frame_size[0]}x{self.frame_size[1]} (expected one size): "
                             "resize the frames to one size")
        return frame

    def frame_name(self, index: int) -> str:
        return self.files[index].stem if 0 <= index < len(self.files) else super().frame_name(index)

    def __len__(self) -> int:
        return len(self.files)

    def _read_frames(self) -> Iterator[Frame]:
        for index, file in enumerate(self.files):
            yield index, self._load(file)


def open_source(camera: int | None = None, video: str | Path | None = None,
                frames: str | Path | None = None, **options: Any) -> FrameSource:
    """Open exactly one of a camera index, a video file or a frame folder.

    ``options`` go to the chosen source's constructor (e.g. ``fps``, ``simulate_live``).
    Raises InputError when none or several are given, or when the input cannot be opened.
    """
    given = [name for name, value in (("camera", camera), ("video", video), ("frames", frames))
             if value is not None]
    if len(given) != 1:
        raise InputError(f"expected exactly one input (camera, video or frames), got "
                         f"{', '.join(given) or 'none'}: pass one of --camera N, --video FILE, "
                         "--frames DIR")
    if camera is not None:
        return CameraSource(camera, **options)
    if video is not None:
        return VideoSource(video, **options)
    return FrameFolderSource(frames, **options)
