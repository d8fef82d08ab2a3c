"""The batched multi-stream engine (torch-free): many streams, one model, one encoder call per step.

A table ``stream id -> stream`` (at most ``max_streams``); each stream is a
:class:`~mast.runtime.tracker.Tracker` on a fork of the backend (:meth:`Backend.fork`: the model is
shared, the stream has its own fixed-size ring-buffer bank, allocated when the stream starts and
bounded like a single tracker's: memory is at most ``max_streams`` banks). One :meth:`Engine.step`
takes at most one frame per stream, encodes the frames of one working size with one
``encode_batch`` call (frames of different sizes: one call per size), then runs each stream's
memory read and write exactly as the single-stream tracker does, so every stream gets the same
masks as its own :class:`Tracker` (tests/runtime/test_engine.py).

A bad request fails alone (:class:`StreamError`, the cause in its message); the others of the step
go on. Streams without a frame for ``idle_timeout`` seconds are freed (:meth:`Engine.expire`).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from mast.core.config import ModelConfig
from mast.core.errors import InputError, MastError
from mast.runtime.backend import Backend
from mast.runtime.protocol import UNKNOWN_STREAM
from mast.runtime.tracker import Tracker


class StreamError(InputError):
    """A request the engine refuses; its message names the cause. The other streams go on."""


class UnknownStreamError(StreamError):
    """A frame without a mask for a stream the table does not hold (never started, freed, or the
    server restarted): the client re-sends its last mask with the next frame."""


class FrameSizeError(StreamError):
    """A frame of another size than its stream's, or a mask of another size than its frame."""


class TableFullError(StreamError):
    """A new stream while ``max_streams`` streams are open."""


@dataclass(frozen=True)
class EngineConfig:
    """max_streams:  streams held at once (each holds one bank).
    idle_timeout: seconds without a frame after which a stream is freed.
    size:         working size (H, W) of every stream (frames resized to it, masks back); None:
                  each stream at its frames' own size (frames of one size are batched together)."""

    max_streams: int = 8
    idle_timeout: float = 60.0
    size: tuple[int, int] | None = None


@dataclass
class Job:
    """One request: ``frame`` BGR uint8 ``[H, W, 3]`` of stream ``stream_id``; ``mask`` uint8 ``[H, W]``
    (object ids, optional): it starts the stream, or re-anchors it (new ids are added): ``merge``
    paints its objects over the prediction, else it is the complete mask (``Tracker.anchor``)."""

    stream_id: str
    frame: np.ndarray
    mask: np.ndarray | None = None
    merge: bool = True


@dataclass
class Stream:
    """A stream's state: its tracker (own bank), its frames' size (H, W), when it last had a frame."""

    tracker: Tracker
    frame_size: tuple[int, int]
    last_seen: float
    frames: int = 0


@dataclass
class _Work:
    """A job accepted for this step: its tracker (new or held), its frame at the working size."""

    index: int
    job: Job
    tracker: Tracker
    work: np.ndarray
    new: bool
    key: object = None


@dataclass
class Engine:
    """Streams of one backend (see the module docstring). ``clock``: seconds (``time.monotonic``)."""

    backend: Backend
    config: EngineConfig = field(default_factory=EngineConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    clock: Callable[[], float] = time.monotonic
    streams: dict[str, Stream] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.backend.fork().close()   # a backend that cannot hold many banks (tensorrt) is refused here, once

    def step(self, jobs: Sequence[Job]) -> list[np.ndarray | StreamError]:
        """Run one step over ``jobs`` (at most one per stream): returns, in the jobs' order, each one's
        mask uint8 ``[H, W]`` (object ids, at its frame's size) or the :class:`StreamError` refusing it."""
        ids = [job.stream_id for job in jobs]
        if len(set(ids)) != len(ids):
            raise ValueError(f"one step takes at most one frame per stream, got streams {ids}")
        now = self.clock()
        self.expire(now)
        results: list[np.ndarray | StreamError] = [StreamError("not run")] * len(jobs)
        accepted: list[_Work] = []
        opening = 0
        for index, job in enumerate(jobs):
            try:
                accepted.append(self._accept(index, job, opening))
                opening += accepted[-1].new
            except StreamError as exc:
                results[index] = exc
        self._encode(accepted)
        for item in accepted:
            results[item.index] = self._run(item, now)
        return results

    def expire(self, now: float | None = None) -> list[str]:
        """Free the streams idle for more than ``idle_timeout`` s; returns their ids."""
        now = self.clock() if now is None else now
        idle = [sid for sid, s in self.streams.items() if now - s.last_seen > self.config.idle_timeout]
        for sid in idle:
            self.close_stream(sid)
        return idle

    def close_stream(self, stream_id: str) -> None:
        """Free ``stream_id``'s bank and table entry (nothing if it is not held)."""
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.tracker.close()

    # -- internals ---------------------------------------------------------------------------------
    def _accept(self, index: int, job: Job, opening: int) -> _Work:
        """Check ``job`` against the table; its tracker (a new one for a new stream) and working frame."""
        frame, mask, sid = job.frame, job.mask, job.stream_id
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3 or 0 in frame.shape:
            raise StreamError(f"stream {sid!r}: the frame is {frame.dtype} {list(frame.shape)}, expected uint8 "
                              "H x W x 3 (BGR)")
        h, w = frame.shape[:2]
        if mask is not None and (mask.dtype != np.uint8 or mask.shape != (h, w)):
            raise FrameSizeError(f"stream {sid!r}: the mask is {mask.dtype} {list(mask.shape)} but the frame is "
                                 f"{h}x{w}: give a uint8 mask of the frame's size (H x W object ids)")
        if mask is not None and not mask.any():
            raise StreamError(f"stream {sid!r}: the mask has no object (all pixels are 0): draw at least one "
                              "object id 1..255")
        stream = self.streams.get(sid)
        if stream is None:
            if mask is None:
                raise UnknownStreamError(
                    f"{UNKNOWN_STREAM} {sid!r}: this server holds no such stream (never started, freed after "
                    f"{self.config.idle_timeout:g} s idle, or the server restarted): send its mask with the frame")
            if len(self.streams) + opening >= self.config.max_streams:
                raise TableFullError(
                    f"stream {sid!r}: the stream table is full ({self.config.max_streams} streams, --max-streams): "
                    f"streams idle for {self.config.idle_timeout:g} s are freed (--idle-timeout), "
                    "or use another server")
            tracker = Tracker(self.backend.fork(), self.model, size=self.config.size)
            return _Work(index, job, tracker, tracker.work_frame(frame), new=True)
        if stream.frame_size != (h, w):
            sh, sw = stream.frame_size
            raise FrameSizeError(f"stream {sid!r}: the frame is {w}x{h} but this stream's frames are {sw}x{sh}: "
                                 "send frames of one size per stream (or start a new stream id)")
        return _Work(index, job, stream.tracker, stream.tracker.work_frame(frame), new=False)

    def _encode(self, accepted: list[_Work]) -> None:
        """One ``encode_batch`` per working size over the accepted frames; keys into the items."""
        groups: dict[tuple[int, ...], list[_Work]] = {}
        for item in accepted:
            groups.setdefault(item.work.shape, []).append(item)
        for items in groups.values():
            keys = self.backend.encode_batch(np.stack([item.work for item in items]))
            for item, key in zip(items, keys):
                item.key = key

    def _run(self, item: _Work, now: float) -> np.ndarray | StreamError:
        """The stream's own step on its encoded frame: start, re-anchor (merge) or step."""
        job, tracker = item.job, item.tracker
        try:
            if item.new:
                mask = tracker.start(job.frame, job.mask, key=item.key)
                self.streams[job.stream_id] = Stream(tracker, job.frame.shape[:2], now)
            elif job.mask is not None:
                mask = tracker.anchor(job.frame, job.mask, merge=job.merge, key=item.key)
            else:
                mask = tracker.step(job.frame, key=item.key)
        except MastError as exc:   # e.g. more objects than an exported model holds
            if item.new:
                tracker.close()
            return StreamError(f"stream {job.stream_id!r}: {exc}")
        stream = self.streams[job.stream_id]
        stream.last_seen, stream.frames = self.clock(), stream.frames + 1   # idle from when its frame is done
        return mask
