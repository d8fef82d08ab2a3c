"""The fused CPU read in its steady state (``mast.core.attention_c.FusedBank``), by kernel and build.

    python benchmarks/bench_fused_bank.py [--size 240x427] [--rounds 8] [--threads 1]
                                          [--cflags= --cflags=-mno-avx512f ...] [--bf16] [--radius 12]

Keys: the shipped weights on DAVIS camel frames 0, 5, 55, 57, 59 (the memory of frame 60: distances
60 and 55 through their ROI at dilation 4, 5, 3 and 1 through restricted windows), frame 60 as the
query; 2 labels. Each round rewrites one short-term slot (its layout is redone, as in tracking)
and reads. Every build (``MAST_ATTENTION_CFLAGS`` values, one ``--cflags=VALUE`` each, written with
``=``; empty = the default ``-march=native`` build; default: that and ``-mno-avx512f``) is compiled, then the builds run in turn, round after round, so that a
noisy neighbour hits them alike. Prints per build the least wall and CPU time of a read (ms, all
threads) and, with one thread, the least CPU time of each kernel entry point: ``mast_read``
(restricted windows + the merge), ``mast_offsets`` (the ROI coarse search), ``mast_fine`` (the ROI
fine windows). ``--bf16`` adds the bf16-pair read of the default flags (``FusedBank(pairs=True)``,
AVX512-BF16 CPUs) as one more build.
"""
from __future__ import annotations

import argparse
import collections
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from mast.core import attention_c
from mast.core.config import AttentionConfig
from mast.core.model import key_encoder
from mast.runtime.torch_backend import TorchBackend

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import CLIP, DISTANCES, MEMORY, QUERY  # noqa: E402  (sibling script: the same memory)

KERNELS = ("mast_read", "mast_offsets", "mast_fine")


class Timed:
    """A compiled kernel library whose entry points add their thread's CPU time to ``spent``."""

    def __init__(self, lib) -> None:
        self.lib, self.spent = lib, collections.Counter()

    def __getattr__(self, name: str):
        fn = getattr(self.lib, name)

        def call(*args):
            start = time.thread_time()
            out = fn(*args)
            self.spent[name] += time.thread_time() - start
            return out
        return call


def inputs(size: str) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    h, w = (int(v) for v in size.split("x"))
    paths = sorted(CLIP.glob("*.jpg"))
    backend = TorchBackend(key_encoder("model"))
    frame = lambda i: cv2.resize(cv2.imread(str(paths[i])), (w, h), interpolation=cv2.INTER_AREA)  # noqa: E731
    keys = [backend.encode(frame(i)).numpy() for i in MEMORY]
    ids = np.random.default_rng(0).integers(0, 2, keys[0].shape[1:])
    return backend.encode(frame(QUERY)).numpy(), keys, [attention_c.one_hot(ids, 2) for _ in keys]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="240x427")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cflags", action="append", help="MAST_ATTENTION_CFLAGS of one build (repeat)")
    ap.add_argument("--bf16", action="store_true", help="also the bf16-pair read (AVX512-BF16 CPUs)")
    ap.add_argument("--radius", type=int, default=AttentionConfig.radius, help="attention window radius (1..31)")
    a = ap.parse_args()
    a.cflags = a.cflags or ["", "-mno-avx512f"]
    if not CLIP.is_dir():
        ap.error(f"the DAVIS camel frames are not at {CLIP} (expected ../shared/data beside the repository)")
    if not (len(a.size.split("x")) == 2 and all(v.isdigit() and int(v) >= 16 for v in a.size.split("x"))):
        ap.error(f"--size {a.size}: expected HxW of at least 16x16, e.g. 240x427")
    if a.rounds < 1 or a.threads < 1 or not 1 <= a.radius <= attention_c.MAX_RADIUS:
        ap.error(f"--rounds {a.rounds}, --threads {a.threads}, --radius {a.radius}: expected at least 1 each, "
                 f"a radius of at most {attention_c.MAX_RADIUS}")
    if a.bf16 and (reason := attention_c.bf16_available()) is not None:
        ap.error(f"--bf16: {reason}")
    query, keys, values = inputs(a.size)
    builds, pairs = [], [False] * len(a.cflags) + [True] * a.bf16
    for flags in a.cflags:
        os.environ[attention_c.EXTRA_FLAGS] = flags
        attention_c._library.cache_clear()
        builds.append(Timed(attention_c._library()))
    if a.bf16:
        os.environ[attention_c.EXTRA_FLAGS] = ""
        attention_c._bf16_library.cache_clear()
        builds.append(Timed(attention_c._bf16_library()))
        a.cflags.append("bf16 pairs")
    banks = []
    for build, pair in zip(builds, pairs):
        attention_c._library = attention_c._bf16_library = lambda build=build: build   # noqa: E731 - this bank's build
        bank = attention_c.FusedBank(len(keys), AttentionConfig(radius=a.radius), threads=a.threads, pairs=pair)
        for slot, (k, v) in enumerate(zip(keys, values)):
            bank.write(slot, k, v)
        banks.append(bank)
    best = [collections.defaultdict(lambda: float("inf")) for _ in builds]
    for r in range(a.rounds + 1):
        for build, bank, low in zip(builds, banks, best):
            attention_c._library = attention_c._bf16_library = lambda build=build: build   # noqa: E731
            slot = 2 + r % 3
            bank.write(slot, keys[slot], values[slot])
            build.spent.clear()
            wall, cpu = time.perf_counter(), time.process_time()
            bank.read(query, list(range(len(keys))), DISTANCES)
            times = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, **build.spent}
            if r:   # round 0 lays every slot out
                for name, t in times.items():
                    low[name] = min(low[name], t)
    print(f"{a.size}, C={query.shape[0]}, R={a.radius}, {a.threads} thread(s), least of {a.rounds} rounds (ms)")
    for flags, low in zip(a.cflags, best):
        parts = "  ".join(f"{k} {low[k] * 1e3:.1f}" for k in KERNELS) if a.threads == 1 else ""
        print(f"build [{flags or 'default'}]: read wall {low['wall'] * 1e3:.1f}  CPU {low['cpu'] * 1e3:.1f}  {parts}")


if __name__ == "__main__":
    main()
