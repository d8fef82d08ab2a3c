"""The batched multi-stream engine: the same masks as one Tracker per stream, one encoder call per
size per step, typed per-request errors, idle streams freed.

Real DAVIS frames (davis2016-val-dev) at small sizes and the shipped weights, fp32, one thread.
"""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mast.runtime.engine import (
    Engine,
    EngineConfig,
    FrameSizeError,
    Job,
    StreamError,
    TableFullError,
    UnknownStreamError,
)
from mast.runtime.factory import make_backend
from mast.runtime.tracker import Tracker

pytestmark = pytest.mark.usefixtures("one_thread")


class CountingBackend:
    """The backend with its ``encode_batch`` calls recorded (batch sizes); forks share the record."""

    def __init__(self, inner, calls: list[int] | None = None) -> None:
        self.inner, self.calls = inner, [] if calls is None else calls

    def encode_batch(self, frames: np.ndarray):
        self.calls.append(len(frames))
        return self.inner.encode_batch(frames)

    def fork(self) -> "CountingBackend":
        return CountingBackend(self.inner.fork(), self.calls)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


@pytest.fixture(scope="module")
def backend():
    return make_backend("torch", None, "cpu")


def test_torch_batch_encode_equals_single(backend, dev_clip):
    frames, _ = dev_clip("dog", 3, (64, 112))
    batch = backend.encode_batch(np.stack(frames))
    for frame, key in zip(frames, batch):
        assert np.array_equal(backend.encode(frame).numpy(), key.numpy())


@pytest.mark.parametrize("work_size", [None, (72, 128)])
def test_engine_masks_equal_one_tracker_per_stream(backend, dev_clip, work_size):
    """Three streams, two frame sizes, one re-anchor mid-stream and a stream joining late: each
    stream's masks equal a single-stream Tracker's on the same frames, bit for bit; frames of one
    working size go through one encoder call per step."""
    n = 7
    clips = {"camel": dev_clip("camel", n, (72, 128)),
             "cows": dev_clip("cows", n, (72, 128)),
             "dog": dev_clip("dog", n, (96, 171))}
    starts = {"camel": 0, "cows": 0, "dog": 2}          # dog joins at step 2
    reanchor = ("camel", 4)                               # camel gets a corrected mask at its frame 4
    engine = Engine(CountingBackend(backend), EngineConfig(max_streams=3, size=work_size))
    got: dict[str, list[np.ndarray]] = {name: [] for name in clips}
    for t in range(n):
        jobs = []
        for name, (frames, mask) in clips.items():
            k = t - starts[name]
            if 0 <= k < n - starts[name]:
                given = mask if k == 0 or (name, k) == reanchor else None
                jobs.append(Job(name, frames[k], given))
        for job, out in zip(jobs, engine.step(jobs)):
            assert isinstance(out, np.ndarray), out
            got[job.stream_id].append(out)
    calls = engine.backend.calls
    assert calls[0] == 2 and max(calls) <= 3   # camel + cows (72x128) in one call; dog joins later
    if work_size is not None:   # one working size: one encoder call per step over every stream
        assert len(calls) == n and calls[2] == 3
    for name, (frames, mask) in clips.items():
        tracker = Tracker(backend.fork(), size=work_size)
        want = [tracker.start(frames[0], mask)]
        for k in range(1, n - starts[name]):
            if (name, k) == reanchor:
                want.append(tracker.anchor(frames[k], mask, merge=True))
            else:
                want.append(tracker.step(frames[k]))
        assert len(got[name]) == len(want)
        for k, (a, b) in enumerate(zip(got[name], want)):
            assert a.shape == frames[0].shape[:2] and np.array_equal(a, b), f"{name} frame {k}"
        assert got[name][-1].any(), f"{name}: the object survives"


def test_engine_refuses_bad_requests_and_serves_the_others(backend):
    """Unknown stream, frame of another size, a mask of another size, a malformed frame, an empty
    mask, a full table: each request fails alone with its cause; the good ones in the same step run."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
    mask = np.zeros((32, 48), np.uint8)
    mask[8:20, 10:30] = 1
    engine = Engine(backend, EngineConfig(max_streams=2))
    assert all(isinstance(r, np.ndarray) for r in engine.step([Job("a", frame, mask), Job("b", frame, mask)]))
    bad = [Job("a", frame),                                           # fine: a step
           Job("ghost", frame),                                       # unknown, no mask
           Job("b", frame[:16]),                                      # another size than b's frames
           Job("c", frame, mask)]                                     # table full (2 streams)
    out = engine.step(bad)
    assert isinstance(out[0], np.ndarray) and out[0].shape == (32, 48)
    assert isinstance(out[1], UnknownStreamError) and "unknown stream 'ghost'" in str(out[1])
    assert isinstance(out[2], FrameSizeError) and "48x16" in str(out[2]) and "48x32" in str(out[2])
    assert isinstance(out[3], TableFullError) and "--max-streams" in str(out[3])
    out = engine.step([Job("a", frame, mask[:16]), Job("b", frame.astype(np.float32)),
                       Job("x", frame, np.zeros_like(mask))])
    assert isinstance(out[0], FrameSizeError) and "mask" in str(out[0])
    assert isinstance(out[1], StreamError) and "float32" in str(out[1])
    assert isinstance(out[2], StreamError) and "no object" in str(out[2])
    with pytest.raises(ValueError, match="one frame per stream"):
        engine.step([Job("a", frame), Job("a", frame)])
    assert set(engine.streams) == {"a", "b"} and engine.streams["a"].frames == 2


def test_idle_streams_are_freed(backend):
    now = [0.0]
    engine = Engine(backend, EngineConfig(max_streams=1, idle_timeout=10.0), clock=lambda: now[0])
    frame = np.full((16, 24, 3), 90, np.uint8)
    mask = np.zeros((16, 24), np.uint8)
    mask[4:10, 4:12] = 3
    engine.step([Job("a", frame, mask)])
    now[0] = 9.0
    assert engine.expire() == [] and isinstance(engine.step([Job("a", frame)])[0], np.ndarray)
    now[0] = 19.5   # 10.5 s after its last frame
    assert engine.expire() == ["a"] and engine.streams == {}
    assert isinstance(engine.step([Job("a", frame)])[0], UnknownStreamError)
    assert isinstance(engine.step([Job("b", frame, mask)])[0], np.ndarray)   # the slot is free again


def test_serving_modules_import_no_torch():
    """The engine, the batcher, mast-serve (up to its bad-option error with --backend onnxruntime)
    and the client load no torch: a deployment box may not have it."""
    script = """
import json, sys
from mast.runtime import batcher, client, engine, serve
try:
    serve.main(["--backend", "onnxruntime"])
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"code": 2, "torch": False}, proc.stdout + proc.stderr


@pytest.mark.slow
def test_engine_on_onnxruntime_equals_its_tracker(dev_clip, tmp_path):
    """The torch-free backend forks too: two streams through the engine (frames resized to the
    export's size) give the masks of one onnxruntime Tracker each."""
    from mast.core.model import key_encoder
    from mast.export.onnx_export import ExportConfig, write_models
    from mast.runtime.ort_backend import OrtBackend

    write_models(tmp_path, key_encoder("random"), ExportConfig(72, 128, max_objects=2), "random", "random")
    backend = OrtBackend(tmp_path)
    clips = {"camel": dev_clip("camel", 4, (96, 171)), "cows": dev_clip("cows", 4, (120, 214))}
    engine = Engine(backend, EngineConfig(max_streams=2))
    got = {name: [] for name in clips}
    for k in range(4):
        jobs = [Job(name, frames[k], mask if k == 0 else None) for name, (frames, mask) in clips.items()]
        for job, out in zip(jobs, engine.step(jobs)):
            got[job.stream_id].append(out)
    for name, (frames, mask) in clips.items():
        tracker = Tracker(backend.fork())
        want = [tracker.start(frames[0], mask)] + [tracker.step(f) for f in frames[1:]]
        assert all(np.array_equal(a, b) for a, b in zip(got[name], want)), name
