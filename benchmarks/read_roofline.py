"""How close the fused CPU read runs to this machine's FMA peak, measured, not taken from a datasheet.

    python benchmarks/read_roofline.py [--size 240x427] [--threads 1 2] [--rounds 8] [--seconds 1.0]

1. The FMA peak: a register-only loop of independent fused multiply-adds (12 accumulators, no
   memory traffic), built with ``$CC`` (else ``cc``) once for 8-float (AVX2) vectors and, where the CPU
   has AVX-512, once for 16-float vectors; run on 1 thread, then on T threads at once (Python threads
   calling the C loop, the GIL released). GFLOP/s = 2 x lanes x FMAs per second, all threads together.
   Two vCPUs that share one core's floating-point units (SMT siblings seen as two cores by a VM)
   show it here: T threads give the rate of one.
2. The read: ``mast.core.attention_c.FusedBank`` on bench_fused_bank's memory (shipped keys, DAVIS
   camel, 5 frames: 2 through the ROI branch, 3 restricted windows), AVX2 build and native build,
   least and median wall time of ``--rounds`` reads per thread count.
3. The specification's dot products: per query pixel and channel, 625 candidates per restricted
   frame, 625 (coarse search) + 676 (the fine window's 26 x 26 integer grid) per ROI frame; 2 FLOP
   per channel and candidate. ``% of peak`` = those FLOP / (read time x the peak of the same build
   and thread count): what is left for the exponentials, softmax, value blend and layouts, and how
   far any implementation of this arithmetic can go on this machine.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mast.core import attention_c
from mast.core.cli import parse_size
from mast.core.config import AttentionConfig
from mast.core.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import CLIP, DISTANCES  # noqa: E402  (sibling scripts: the same memory)
from bench_fused_bank import inputs  # noqa: E402

PEAK_SOURCE = r"""
#include <time.h>
typedef float vf __attribute__((vector_size(4 * VL)));
#define ACC(j) vf a##j = x * (j * 1e-3f);
#define FMA(j) a##j = a##j * x + y;
#define SUM(j) s += a##j[0];
#define EACH(M) M(0) M(1) M(2) M(3) M(4) M(5) M(6) M(7) M(8) M(9) M(10) M(11)
/* seconds for n rounds of 12 independent FMAs on VL-float vectors, each accumulator a register */
double fma_seconds(long n) {
    vf x, y;
    for (int i = 0; i < VL; i++) { x[i] = 0.999f; y[i] = 1e-4f; }
    EACH(ACC)
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (long k = 0; k < n; k++) {
        EACH(FMA)
        __asm__("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5));
        __asm__("" : "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    float s = 0;
    EACH(SUM)
    return (t1.tv_sec - t0.tv_sec) + 1e-9 * (t1.tv_nsec - t0.tv_nsec) + (s == 12345.0f);
}
"""
BUILDS = {"AVX2": ("-mno-avx512f", 8), "AVX-512": ("", 16)}   # name: (extra flags, lanes)


def _has_avx512() -> bool:
    return " avx512f" in attention_c._cpu_flags()


def peak_library(flags: str, lanes: int, where: Path) -> ctypes.CDLL:
    """The FMA loop built for ``lanes``-float vectors with ``-O2 -march=native flags``."""
    cc = os.environ.get("CC", "cc")
    src, lib = where / f"peak{lanes}.c", where / f"peak{lanes}.so"
    src.write_text(PEAK_SOURCE)
    run = subprocess.run([cc, "-O2", "-march=native", *flags.split(), f"-DVL={lanes}", "-shared", "-fPIC",
                          "-o", str(lib), str(src)], capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"read_roofline: building the FMA loop with {cc} failed: {run.stderr.strip()[:300]}")
    dll = ctypes.CDLL(str(lib))
    dll.fma_seconds.restype, dll.fma_seconds.argtypes = ctypes.c_double, [ctypes.c_long]
    return dll


def peak_gflops(dll: ctypes.CDLL, lanes: int, threads: int, seconds: float) -> float:
    """GFLOP/s of ``threads`` copies of the loop run at once (the best of three tries)."""
    n = max(1, int((1 << 20) * seconds / dll.fma_seconds(1 << 20)))
    best = 0.0
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(3):
            spent = list(pool.map(dll.fma_seconds, [n] * threads))
            best = max(best, threads * n * 12 * lanes * 2 / max(spent) / 1e9)
    return best


def read_times(flags: str, threads: int, rounds: int, query, keys, values) -> np.ndarray:
    """Wall seconds of ``rounds`` steady-state reads (one short-term slot rewritten each round)."""
    os.environ[attention_c.EXTRA_FLAGS] = flags
    attention_c._library.cache_clear()
    bank = attention_c.FusedBank(len(keys), threads=threads)
    for slot, (k, v) in enumerate(zip(keys, values)):
        bank.write(slot, k, v)
    spent = []
    for r in range(rounds + 1):
        slot = 2 + r % 3
        bank.write(slot, keys[slot], values[slot])
        start = time.perf_counter()
        bank.read(query, list(range(len(keys))), DISTANCES)
        if r:   # round 0 lays every slot out
            spent.append(time.perf_counter() - start)
    return np.array(spent)


def spec_gflop(query: np.ndarray, radius: int = 12) -> float:
    """The specification's dot-product GFLOP of one read of bench_fused_bank's memory."""
    c, h, w = query.shape
    n = 2 * radius + 1
    rois = sum(AttentionConfig().uses_roi(d) for d in DISTANCES)
    candidates = (len(DISTANCES) - rois) * n * n + rois * (n * n + (n + 1) ** 2)
    return 2.0 * c * h * w * candidates / 1e9


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="240x427")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one FMA-loop run")
    a = ap.parse_args()
    if shutil.which(os.environ.get("CC", "cc")) is None:
        ap.error("no C compiler: install gcc or set CC")
    if not CLIP.is_dir():
        ap.error(f"the DAVIS camel frames are not at {CLIP} (expected ../shared/data beside the repository)")
    if a.rounds < 1 or min(a.threads) < 1 or a.seconds <= 0:
        ap.error(f"--rounds {a.rounds}, --threads {a.threads}, --seconds {a.seconds}: expected positive values")
    try:
        a.size = "x".join(map(str, parse_size(a.size)))     # the tools' one size rule
    except InputError as e:
        ap.error(str(e))
    builds = {k: v for k, v in BUILDS.items() if k == "AVX2" or _has_avx512()}
    query, keys, values = inputs(a.size)
    gflop = spec_gflop(query)
    print(f"{a.size}: C={query.shape[0]}, the specification's dot products {gflop:.2f} GFLOP a read")
    print("| build | threads | FMA peak GFLOP/s | read ms: least / median | spec GFLOP/s | % of peak |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for name, (flags, lanes) in builds.items():
            dll = peak_library(flags, lanes, Path(tmp))
            for t in a.threads:
                peak = peak_gflops(dll, lanes, t, a.seconds)
                spent = read_times(flags, t, a.rounds, query, keys, values)
                rate = gflop / np.median(spent)
                print(f"| {name} | {t} | {peak:.0f} | {spent.min() * 1e3:.1f} / {np.median(spent) * 1e3:.1f} "
                      f"| {rate:.0f} | {100 * rate / peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
