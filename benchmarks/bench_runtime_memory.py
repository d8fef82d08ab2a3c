"""Memory of the streaming tracker on a long stream: resident memory at frame 10,000 vs frame 200.

    python benchmarks/bench_runtime_memory.py --frames 10000 --size 120x214 --json OUT.json
    python benchmarks/bench_runtime_memory.py --frames 10000 --model EXPORT_DIR --json OUT.json   # onnxruntime

Plays the bundled demo clip back and forth (0..24, 23..0, 1.. — an endless continuous stream),
tracks it with the torch backend on CPU (the shipped weights, or while none ship an untrained
encoder of the same architecture: the same tensors, hence the same memory), and samples the
process's resident set size (``VmRSS``, after ``gc.collect()`` and glibc's ``malloc_trim``, so that
it counts live memory, not the allocator's cache; the untrimmed figure is recorded too) at frames
200, 500, 1000, 2000, ...
It passes (exit 0) when RSS at the last frame is within 5 % of RSS at frame 200, the bank's tensors
kept their shapes and storage (allocated once, at start) and the slot table its length. A small
working size keeps a 10,000-frame run within the time of a CI job on 2 cores; the bank's layout
does not depend on the size.
"""
from __future__ import annotations

import argparse
import ctypes
import gc
import json
import sys
import time
from pathlib import Path

from mast.core.errors import MastError
from mast.runtime import factory
from mast.runtime.bench import clip_frames, cpu_name
from mast.core.cli import parse_size
from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK
from mast.runtime.stream import conform_mask, load_mask
from mast.runtime.tracker import Tracker

TOLERANCE = 0.05
BASE_FRAME = 200


def trim_heap() -> None:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``), so that RSS measures live
    memory rather than what the allocator happens to keep cached (that alone moves RSS by ~10 %)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rss_mib() -> float:
    """Current resident set size of this process (``/proc/self/status`` VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def checkpoints(frames: int) -> list[int]:
    """Frames at which memory is sampled: 200, 500, 1000, then every 1000, and the last."""
    marks = {BASE_FRAME, 500, 1000, frames, *range(1000, frames, 1000)}
    return sorted(m for m in marks if m <= frames)


def bank_state(backend) -> list[tuple[tuple[int, ...], int]]:
    """(shape, storage address) of the bank arrays (torch: keys and one-hot values; onnxruntime:
    keys and label maps): unchanged means allocated once."""
    if backend.name == "onnxruntime":
        return [(a.shape, a.ctypes.data) for a in (backend.keys, backend.labels)]
    return [(tuple(t.shape), t.data_ptr()) for t in (backend.keys, backend.values)]


def _threads(backend) -> int:
    if backend.name == "onnxruntime":
        return backend.encoder.get_session_options().intra_op_num_threads   # memory is None with the fused read
    import torch  # noqa: PLC0415
    return torch.get_num_threads()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--size", default="120x214", help="working size HxW")
    ap.add_argument("--keys", choices=["model", "lab", "random"], default=None)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default: the backend's)")
    ap.add_argument("--model", type=Path, default=None,
                    help="an export folder: run the onnxruntime backend on it (at its size) instead of torch")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    if a.model is not None:
        from mast.runtime.ort_backend import OrtBackend  # noqa: PLC0415 - torch-free
        keys, backend = "export", OrtBackend(a.model, "cpu", threads=a.threads)
    else:
        if a.threads:
            import torch  # noqa: PLC0415 - the torch backend is used anyway
            torch.set_num_threads(a.threads)
        keys = a.keys or ("model" if factory.shipped_weights() else "random")
        backend = factory.make_backend("torch", None, "cpu", keys=keys)
    tracker = Tracker(backend, size=None if a.model is not None else parse_size(a.size))
    frames = clip_frames(DEMO_FRAMES)
    first = next(frames)
    tracker.start(first, conform_mask(load_mask(DEMO_MASK), first.shape[:2])[0])
    bank0, n_slots = bank_state(backend), len(tracker.slots.frames)
    samples, raw, marks, start = {}, {}, checkpoints(a.frames), time.perf_counter()
    for t in range(1, a.frames + 1):
        tracker.step(next(frames))
        if t in marks:
            gc.collect()
            raw[t] = round(rss_mib(), 1)
            trim_heap()
            samples[t] = round(rss_mib(), 1)
            print(f"frame {t}: RSS {samples[t]:.1f} MiB after malloc_trim ({raw[t]:.1f} before), "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
    base, last = samples[min(samples)], samples[a.frames]
    growth = (last - base) / base
    report = {
        "cpu": cpu_name(), "backend": backend.name, "threads": _threads(backend), "keys": keys,
        "size": "x".join(map(str, backend.input_size)) if a.model is not None else a.size,
        "frames": a.frames, "rss_mib": samples, "rss_mib_before_trim": raw,
        "growth_vs_frame_%d" % min(samples): round(growth, 4),
        "bank_unchanged": bank_state(backend) == bank0, "bank_shapes": [s for s, _ in bank0],
        "slot_table_len": [n_slots, len(tracker.slots.frames)],
        "seconds": round(time.perf_counter() - start, 1),
        "command": " ".join(["python", *sys.argv]),
    }
    ok = abs(growth) <= TOLERANCE and report["bank_unchanged"] and n_slots == len(tracker.slots.frames)
    report["pass"] = ok
    print(json.dumps(report, indent=1))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    try:
        sys.exit(main())
    except MastError as exc:   # bad --model and the like: one line, no traceback
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
