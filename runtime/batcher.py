"""Dynamic batching in front of the engine (torch-free): frames submitted from many threads (the
server's model instances, one request each), one :meth:`Engine.step` at a time.

A step takes every waiting frame, at most one per stream (the earliest): a stream's later frames
wait for the next steps, so each stream's frames run one per step, in the order they were
submitted. While a step runs, the next frames queue up (continuous batching); before a step the
loop waits ``max_delay`` s for more frames to join. Idle streams are freed every ``tick`` s when
no frame comes.
"""
from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from mast.runtime.engine import Engine, Job, StreamError

SHUTTING_DOWN = "the server is shutting down: this frame was not tracked"


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

    def __init__(self, engine: Engine, max_delay: float = 0.002, tick: float = 1.0) -> None:
        self.engine, self.max_delay, self.tick = engine, max_delay, tick
        self.stats = BatchStats()
        self._pending: deque[tuple[Job, Future]] = deque()
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
            if self._closed:
                return None
        threading.Event().wait(self.max_delay)   # let frames arriving together join this step
        with self._cond:
            taken, later, seen = [], deque(), set()
            for job, future in self._pending:
                (later if job.stream_id in seen else taken).append((job, future))
                seen.add(job.stream_id)
            self._pending = later
        return taken

    def _loop(self) -> None:
        while (taken := self._take()) is not None:
            try:
                results = self.engine.step([job for job, _ in taken])
            except Exception as exc:  # noqa: BLE001 - a bug must fail these requests, not the server
                results = [exc] * len(taken)
            self.stats.steps += 1
            self.stats.frames += len(taken)
            for (_, future), result in zip(taken, results):
                if isinstance(result, Exception):
                    future.set_exception(result)
                else:
                    future.set_result(result)
