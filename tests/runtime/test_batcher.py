"""Dynamic batching in front of the engine: one frame per stream per step, each stream's frames in
submission order, closed-loop clients batched together, refusals and shutdown per request."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from mast.runtime.batcher import SHUTTING_DOWN, Batcher
from mast.runtime.engine import Job, StreamError


class FakeEngine:
    """Records each step's (stream, frame value) pairs; a frame of value 255 is refused."""

    def __init__(self, step_s: float = 0.02) -> None:
        self.steps: list[list[tuple[str, int]]] = []
        self.step_s = step_s

    def step(self, jobs):
        time.sleep(self.step_s)
        self.steps.append([(job.stream_id, int(job.frame[0, 0, 0])) for job in jobs])
        return [StreamError("refused") if job.frame[0, 0, 0] == 255 else job.frame[..., 0] for job in jobs]

    def expire(self):
        return []


def frame(value: int) -> np.ndarray:
    return np.full((2, 2, 3), value, np.uint8)


def test_one_frame_per_stream_per_step_in_submission_order():
    engine = FakeEngine(step_s=0.05)
    batcher = Batcher(engine)
    results: dict[int, np.ndarray] = {}

    def submit(k: int) -> None:
        results[k] = batcher.submit(Job("a", frame(k)))

    threads = []
    for k in range(4):   # four frames of one stream in flight at once (a pipelining client)
        threads.append(threading.Thread(target=submit, args=(k,)))
        threads[-1].start()
        time.sleep(0.005)
    for t in threads:
        t.join(timeout=10)
    batcher.close()
    assert engine.steps == [[("a", k)] for k in range(4)]
    assert all(int(results[k][0, 0]) == k for k in range(4))


def test_closed_loop_streams_are_batched_together():
    """Clients that send their next frame on their answer stay in one step (no alternation)."""
    engine = FakeEngine(step_s=0.03)
    batcher = Batcher(engine)

    def client(name: str, offset: float) -> None:
        time.sleep(offset)
        for k in range(8):
            batcher.submit(Job(name, frame(k)))

    threads = [threading.Thread(target=client, args=(name, 0.01 * i)) for i, name in enumerate("abc")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    batcher.close()
    assert batcher.stats.frames == 24 and batcher.stats.steps <= 12, engine.steps
    for name in "abc":
        assert [k for step in engine.steps for s, k in step if s == name] == list(range(8))


def test_refusal_and_shutdown_fail_their_request_only():
    batcher = Batcher(FakeEngine())
    with pytest.raises(StreamError, match="refused"):
        batcher.submit(Job("a", frame(255)))
    assert int(batcher.submit(Job("a", frame(3)))[0, 0]) == 3
    batcher.close()
    with pytest.raises(StreamError, match=SHUTTING_DOWN):
        batcher.submit(Job("a", frame(4)))
