"""The streaming loop (torch-free): a tracker started on a source's first mask and stepped through
its frames, objects followed (lost, re-anchored), window edits applied, every frame handed to the
sinks. ``mast-run`` (:mod:`mast.runtime.run`) wires it to the command line; :func:`iter_records`
gives the ``--save-json`` records in Python.

Frames are BGR ``uint8 [H, W, 3]``; masks are object ids ``uint8 [H, W]`` (0 = background).
The tracker is any :class:`~mast.runtime.tracker.ObjectTracker` (local or a ``mast-serve`` client).
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mast.core.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_STOPPED, Interrupt
from mast.core.errors import InputError, MastError
from mast.core.masks import read_mask
from mast.runtime.boxmask import Box, boxes_to_mask, segment_box
from mast.runtime.edits import Editor, apply_edits
from mast.runtime.objects import LossConfig, ObjectMonitor
from mast.runtime.sinks import Sink, WindowSignal, frame_record
from mast.runtime.sources import Frame, FrameSource
from mast.runtime.tracker import ObjectTracker

ASPECT_TOLERANCE = 0.02  # relative aspect-ratio difference under which a mask is resized, not refused
REPORT_EVERY_S = 5.0     # seconds between progress lines while running


# -- first masks -----------------------------------------------------------------------------------
def conform_mask(mask: np.ndarray, frame_hw: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """``mask`` ``[h, w]`` made the frame's size ``frame_hw`` (H, W): returns (mask, warning or None).

    Same aspect ratio within :data:`ASPECT_TOLERANCE`: resized with nearest neighbour and a warning.
    Otherwise InputError (refused). The objects must survive the resize (else InputError).
    """
    (h, w), (fh, fw) = mask.shape[:2], frame_hw
    if (h, w) == (fh, fw):
        return mask, None
    if abs((h / w) / (fh / fw) - 1.0) > ASPECT_TOLERANCE:
        raise InputError(f"the mask is {w}x{h} but the frame is {fw}x{fh} (another aspect ratio: is it the "
                         "mask of another video?): give a mask of the frame's size")
    resized = cv2.resize(mask, (fw, fh), interpolation=cv2.INTER_NEAREST)
    if mask.any() and not resized.any():
        raise InputError(f"the objects of the {w}x{h} mask vanish when resized to the {fw}x{fh} frame: "
                         "give a mask of the frame's size")
    return resized, f"the mask is {w}x{h} but the frame is {fw}x{fh}: resized it (nearest) to the frame"


def to_stderr(line: str) -> None:
    """Default ``warn``: one line on stderr."""
    print(line, file=sys.stderr, flush=True)


def load_mask(path: Path) -> np.ndarray:
    """Object ids ``[H, W]`` uint8 from a palette or 0/255 PNG; InputError when it shows no object."""
    mask = read_mask(path)
    if not mask.any():
        raise InputError(f"the mask {path} has no object (all pixels are 0): draw at least one object "
                         "(palette ids 1..255, or white on a 0/255 PNG)")
    return mask


# -- the result --------------------------------------------------------------------------------------
@dataclass
class LoopTimes:
    """Wall seconds the loop spent, summed over the frames after the first (the first one makes the
    mask, possibly in a window), window pauses left out: ``read`` waiting for and decoding the next
    frame (a live source decodes in its own thread: then only the wait), ``track`` in the tracker
    (resize, colour, model, post-process; re-anchoring and edits included), ``loop`` the rest (the
    window, the outputs, the object monitor: the host work around the tracker)."""

    frames: int = 0
    read: float = 0.0
    track: float = 0.0
    loop: float = 0.0

    @property
    def fps(self) -> float:
        """Frames per second over these frames (0 without any)."""
        busy = self.read + self.track + self.loop
        return self.frames / busy if self.frames and busy > 0 else 0.0

    def per_frame_ms(self) -> dict[str, float]:
        """``read``, ``track`` and ``loop`` in milliseconds per frame (zeros without frames)."""
        n = max(self.frames, 1)
        return {"read": 1e3 * self.read / n, "track": 1e3 * self.track / n, "loop": 1e3 * self.loop / n}


@dataclass
class RunSummary:
    """What happened: frames processed, wall time (s) from the mask frame on, drops, why it ended;
    ``times`` splits the frames after the first (:class:`LoopTimes`), ``fps`` is their rate."""

    frames: int = 0
    seconds: float = 0.0
    times: LoopTimes = field(default_factory=LoopTimes)
    dropped: int = 0
    first_index: int | None = None
    last_index: int | None = None
    interrupted: bool = False      # Ctrl-C
    quit: bool = False             # the window's q/Esc
    stopped: str | None = None     # why the source failed mid-stream (stalled camera, bad frame)
    lost: int = 0                  # object losses reported (an object lost twice counts twice)
    outputs: list[tuple[str, Path, int]] = field(default_factory=list)  # (kind, path, items written)

    @property
    def fps(self) -> float:
        """Frames per second of the stream after its first frame (window pauses left out; the rate
        of the whole run when only one frame was processed)."""
        if self.times.fps > 0:
            return self.times.fps
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_STOPPED if self.stopped else EXIT_OK


# -- the loop ----------------------------------------------------------------------------------------
FirstMask = Callable[[np.ndarray], np.ndarray]
"""Makes the first mask: the first frame ``uint8 [H, W, 3]`` -> object ids ``uint8 [h, w]``."""


def first_mask(mask: np.ndarray | None = None, boxes: Sequence[Box] = (),
               warn: Callable[[str], None] = to_stderr) -> FirstMask:
    """The first mask: ``mask`` (ids) as given, or the objects of ``boxes`` segmented in the first
    frame (:func:`mast.runtime.boxmask.boxes_to_mask`, ids 1..n in box order; its warnings go to ``warn``)."""
    if mask is not None:
        return lambda frame: mask

    def from_boxes(frame: np.ndarray) -> np.ndarray:
        ids, warnings = boxes_to_mask(frame, boxes)
        for warning in warnings:
            warn(warning)
        return ids

    return from_boxes


def stream_masks(tracker: ObjectTracker, source: Iterable[Frame], make_mask: FirstMask, monitor: ObjectMonitor, *,
                 mask_frame: int = 0, editor: Editor | None = None, say: Callable[[str], None] = print,
                 warn: Callable[[str], None] = to_stderr) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Start ``tracker`` on frame ``mask_frame`` of ``source`` with ``make_mask(frame)``, then step it:
    yields ``(index, frame [H, W, 3], ids [H, W])`` per frame (``source``: a :class:`FrameSource` or any
    iterable of ``(index, frame)``). ``monitor`` follows the objects; a loss
    is reported once through ``warn``; with ``monitor.config.reanchor`` a lost object is re-segmented
    on the next frame in its last good box (:func:`reanchor_lost`). ``editor`` (the window) is shown
    every frame first; edits made on a paused frame re-anchor the tracker on it
    (:func:`mast.runtime.edits.apply_edits`) and the edited ids are the ones yielded."""
    started, lost = False, []
    for index, frame in source:
        if index < mask_frame:
            continue
        if not started:
            ids, started = _start(tracker, frame, make_mask(frame), warn), True
            monitor.anchor(ids)
        elif lost and monitor.config.reanchor:
            ids = reanchor_lost(tracker, frame, lost, monitor, say)
        else:
            ids = tracker.step(frame)
        edited = editor.review(index, frame, ids, sorted(monitor.objects), monitor.next_id) if editor else None
        if edited is not None:
            ids = apply_edits(tracker, monitor, frame, edited)
            say(f"frame {index}: {edited.describe()}")
        lost = monitor.update(ids)
        for k in lost:
            warn(monitor.describe_loss(k, index))
        yield index, frame, ids


def reanchor_lost(tracker: ObjectTracker, frame: np.ndarray, lost: Sequence[int], monitor: ObjectMonitor,
                  say: Callable[[str], None] = print) -> np.ndarray:
    """``--reanchor-on-loss``: segment each ``lost`` object in ``frame`` inside its last good box
    (the box of its mask on the last frame where it was at or above the loss threshold), paint those
    masks over the tracker's prediction of ``frame`` (``Tracker.anchor(merge=True)``: the frame becomes
    the long-term anchor of every object) and take their new areas as anchored. Returns the ids ``[H, W]``."""
    fresh = np.zeros(frame.shape[:2], np.uint8)
    for k in lost:
        box = monitor.objects[k].good_box
        result = segment_box(frame, box)
        fresh[result.mask] = k
        say(f"re-anchored object {k} in its last good box {','.join(map(str, box))}"
            + (f" ({result.warning})" if result.warning else ""))
    monitor.anchor(fresh)
    return tracker.anchor(frame, fresh, merge=True)


def iter_records(tracker: ObjectTracker, source: FrameSource, *, mask: np.ndarray | None = None,
                 boxes: Sequence[Box] = (), mask_frame: int = 0, loss: LossConfig = LossConfig(),
                 say: Callable[[str], None] = print,
                 warn: Callable[[str], None] = to_stderr) -> Iterator[dict[str, Any]]:
    """Python API: the records of ``--save-json`` (:func:`mast.runtime.sinks.frame_record`), one per
    frame of ``source`` from ``mask_frame`` on, for the objects of ``mask`` (ids ``[H, W]``) or of
    ``boxes`` in the first frame. ``time`` is wall-clock seconds since the first record."""
    if (mask is None) == (not boxes):
        raise InputError("give the objects as a mask or as boxes (exactly one of them)")
    monitor, t0 = ObjectMonitor(loss), None
    for index, _, ids in stream_masks(tracker, source, first_mask(mask, boxes, warn), monitor,
                                      mask_frame=mask_frame, say=say, warn=warn):
        now = time.perf_counter()
        t0 = now if t0 is None else t0
        yield frame_record(index, now - t0, ids, monitor)


def track_stream(tracker: ObjectTracker, source: FrameSource, make_mask: FirstMask, sinks: list[Sink], *,
                 monitor: ObjectMonitor | None = None, mask_frame: int = 0, max_frames: int | None = None,
                 interrupt: Interrupt | None = None, editor: Editor | None = None,
                 say: Callable[[str], None] = print, warn: Callable[[str], None] = to_stderr) -> RunSummary:
    """Start ``tracker`` on frame ``mask_frame`` of ``source`` with ``make_mask(frame)`` (ids), step
    it through the following frames (:func:`stream_masks`, with ``editor`` the window), and hand every
    frame and its ids to every sink. Returns the summary (its ``times`` split each frame after the
    first into reading, tracking and the rest of the loop); Ctrl-C, a window quit and a source failing
    after the first frame (a stalled camera, an unreadable frame) end the loop without raising. A
    failure before any frame raises."""
    summary, t0, last_report = RunSummary(), 0.0, time.perf_counter()
    monitor = monitor or ObjectMonitor()
    frames, timed = _TimedFrames(source), _TimedTracker(tracker)
    windows = [w for w in (editor, *sinks) if hasattr(w, "paused_s")]
    marks: list[tuple[float, float, float, float]] = []   # (now, read s, track s, paused s) after frame 1, last

    def mark() -> tuple[float, float, float, float]:
        return time.perf_counter(), frames.seconds, timed.seconds, sum(w.paused_s for w in windows)

    try:
        t0 = time.perf_counter()  # from the first frame read (mask_frame 0) on
        for index, frame, ids in stream_masks(timed, frames, make_mask, monitor, mask_frame=mask_frame,
                                              editor=editor, say=say, warn=warn):
            if summary.frames == 0:
                summary.first_index = index
            summary.frames, summary.last_index = summary.frames + 1, index
            summary.quit = _emit(sinks, index, frame, ids) or bool(editor and editor.quit_requested)
            if len(marks) < 2:
                marks.append(mark())
            else:
                marks[1] = mark()
            if summary.quit or (interrupt is not None and interrupt.requested):
                break
            if max_frames is not None and summary.frames >= max_frames:
                break
            if time.perf_counter() - last_report > REPORT_EVERY_S:
                last_report = time.perf_counter()
                say(f"frame {index}: {summary.frames} processed, "
                    f"{_loop_times(marks, summary.frames).fps:.2f} fps, {source.dropped} dropped")
    except KeyboardInterrupt:
        summary.interrupted = True
    except MastError as exc:  # a camera that stalls, an unreadable frame mid-folder, ...
        if summary.frames == 0:
            raise             # nothing processed: bad input (exit 2)
        summary.stopped = str(exc)
    summary.interrupted |= bool(interrupt is not None and interrupt.requested)
    summary.seconds = time.perf_counter() - t0 if summary.frames else 0.0
    summary.times = _loop_times(marks, summary.frames)
    summary.dropped = source.dropped
    summary.lost = sum(obj.losses for obj in monitor.objects.values())
    return summary


def _loop_times(marks: list[tuple[float, float, float, float]], frames: int) -> LoopTimes:
    """:class:`LoopTimes` between the marks taken after the first and after the last frame."""
    if len(marks) < 2:
        return LoopTimes()
    (t1, read1, track1, paused1), (t2, read2, track2, paused2) = marks
    read, track = read2 - read1, track2 - track1
    busy = (t2 - t1) - (paused2 - paused1)
    return LoopTimes(frames=frames - 1, read=read, track=track, loop=max(busy - read - track, 0.0))


class _TimedFrames:
    """Iterates ``source`` once, adding the wall time spent waiting for each frame to ``seconds``."""

    def __init__(self, source: Iterable[Frame]) -> None:
        self.source = source
        self.seconds = 0.0

    def __iter__(self) -> Iterator[Frame]:
        frames = iter(self.source)
        while True:
            start = time.perf_counter()
            try:
                item = next(frames)
            except StopIteration:
                return
            finally:
                self.seconds += time.perf_counter() - start
            yield item


class _TimedTracker:
    """``tracker`` (an :class:`ObjectTracker`) adding the wall time of its calls to ``seconds``."""

    def __init__(self, tracker: ObjectTracker) -> None:
        self.tracker = tracker
        self.seconds = 0.0

    def _timed(self, call: Callable[..., np.ndarray], *args: Any) -> np.ndarray:
        start = time.perf_counter()
        try:
            return call(*args)
        finally:
            self.seconds += time.perf_counter() - start

    def start(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._timed(self.tracker.start, frame, mask)

    def step(self, frame: np.ndarray) -> np.ndarray:
        return self._timed(self.tracker.step, frame)

    def anchor(self, frame: np.ndarray, mask: np.ndarray, merge: bool = False) -> np.ndarray:
        return self._timed(self.tracker.anchor, frame, mask, merge)

    def close(self) -> None:
        self.tracker.close()


def _start(tracker: ObjectTracker, frame: np.ndarray, mask: np.ndarray, warn: Callable[[str], None]) -> np.ndarray:
    mask, warning = conform_mask(mask, frame.shape[:2])
    if warning:
        warn(warning)   # a resized mask: on stderr with the other warnings
    return tracker.start(frame, mask)


def _emit(sinks: list[Sink], index: int, frame: np.ndarray, ids: np.ndarray) -> bool:
    """Write to every sink; True when a window asked to quit."""
    quit_asked = False
    for sink in sinks:
        quit_asked |= sink.write(index, frame, ids) is WindowSignal.QUIT
    return quit_asked
