"""Dynamic batching in front of the engine (torch-free): frames submitted from many threads (the
server's model instances, one request each), one :meth:`Engine.step` at a time.

A step takes every waiting frame, at most one per stream (the earliest): a stream's later frames
wait for the next steps, so each stream's frames run one per step, in the order they were
submitted. While a step runs, the next frames queue up (continuous batching). Before a step the
loop waits, at most ``max_delay`` s, until every *active* stream (one that submitted a frame within
the last second, or two steps if longer) has a frame waiting: clients that send their next frame
when they get their mask would otherwise fall out of phase and alternate, one stream per step.
Idle streams are freed every ``tick`` s when no frame comes.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from mast.runtime.engine import Engine, Job, StreamError
from mast.runtime.protocol import SHUTTING_DOWN as SHUTTING_DOWN_CAUSE

SHUTTING_DOWN = f"{SHUTTING_DOWN_CAUSE}: this frame was not tracked; send it again when the server is back"


@dataclass
class BatchStats:
    """Steps run and frames they took (``frames / steps``: the mean batch)."""

    steps: int = 0
    frames: int = 0

    @property
    def mean_batch(self) -> float:
        return self.frames / self.steps if self.steps else 0.0


class Batcher:
    """Runs ``engine`` in its own thread over the frames of :meth:`submit` (see the module docstring)."""

    def __init__(self, engine: Engine, max_delay: float = 0.05, tick: float = 1.0) -> None:
        self.engine, self.max_delay, self.tick = engine, max_delay, tick
        self.stats = BatchStats()
        self._pending: deque[tuple[Job, Future]] = deque()
        self._submitted: dict[str, float] = {}   # stream id -> when it last submitted a frame
        self._step_s = 0.0                        # how long the last step took
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="mast-batcher", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> np.ndarray:
        """Track ``job``'s frame in a coming step: its mask uint8 ``[H, W]``; raises the
        :class:`StreamError` refusing it."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise StreamError(SHUTTING_DOWN)
            self._pending.append((job, future))
            self._submitted[job.stream_id] = time.monotonic()
            self._cond.notify()
        return future.result()

    def close(self) -> None:
        """Stop after the running step; frames still waiting get a StreamError."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()
        while self._pending:
            self._pending.popleft()[1].set_exception(StreamError(SHUTTING_DOWN))

    def _take(self) -> list[tuple[Job, Future]] | None:
        """The next step's frames (the earliest per stream), None once closed."""
        with self._cond:
            while not self._pending and not self._closed:
                if not self._cond.wait(timeout=self.tick):
                    self.engine.expire()
            deadline = time.monotonic() + self.max_delay
            while not self._closed and self._waiting() < self._active() and time.monotonic() < deadline:
                self._cond.wait(timeout=max(0.0, deadline - time.monotonic()))
            if self._closed:
                return None
            taken, later, seen = [], deque(), set()
            for job, future in self._pending:
                (later if job.stream_id in seen else taken).append((job, future))
                seen.add(job.stream_id)
            self._pending = later
        return taken

    def _waiting(self) -> int:
        """Streams with a frame waiting (under the lock)."""
        return len({job.stream_id for job, _ in self._pending})

    def _active(self) -> int:
        """Streams that submitted within the last second (or two steps, if longer); older ones are
        forgotten (under the lock)."""
        since = time.monotonic() - max(1.0, 2 * self._step_s)
        self._submitted = {sid: t for sid, t in self._submitted.items() if t >= since}
        return len(self._submitted)

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            t0 = time.monotonic()
            try:
                results = self.engine.step([job for job, _ in taken])
            except Exception as exc:  # noqa: BLE001 - a bug must fail these requests, not the server
                results = [exc] * len(taken)
            self._step_s = time.monotonic() - t0
            self.stats.steps += 1
            self.stats.frames += len(taken)
            for (_, future), result in zip(taken, results):
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
