"""Experiment (not a tracker option): the fused CPU read with int16 dot products against the float32
read, on bench_fused_bank.py's memory (shipped keys, DAVIS camel, frame 60's five memory frames).

    OMP_NUM_THREADS=1 python benchmarks/int16_read_ab.py [--cflags=-mno-avx512f] [--mac vnni] [--rounds 6] [--threads 1]

The kernel source is patched in a temporary copy (the repository's is not touched): the bf16 pair
layout (``FusedBank(pairs=True)``) holds int16 channel pairs instead, each value rounded from
``x * S`` (one scale S for the query and every key, the largest that keeps each value within int16
and every dot product within int32), ``mac`` becomes ``vpmaddwd`` + ``vpaddd`` (AVX2; AVX-512:
the 512-bit forms; ``--mac vnni``: one ``vpdpwssd``, AVX512-VNNI, or AVX-VNNI with AVX2 code), and
each score is converted to float and multiplied by 1 / S^2 where the kernel stores it. The two
builds (the same ``--cflags``) read in turn, round after round; the script prints the least wall
time of each, the least CPU time of each kernel entry point (one thread) and the largest difference
of the label distributions. Needs a C compiler and bench_fused_bank.py's data (../shared/data).
"""
from __future__ import annotations

import argparse
import collections
import functools
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mast.core import attention_c
from mast.core.cli import parse_size
from mast.core.config import AttentionConfig
from mast.core.errors import InputError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import CLIP, DISTANCES  # noqa: E402  (sibling scripts: the same memory)
from bench_fused_bank import KERNELS, Timed, inputs  # noqa: E402

MAC = """#else
static inline vf mac(vf acc, vf a, vf b) { return acc + a * b; }
#endif"""
# (old, new, times): each must occur exactly `times` times in the kernel source
PATCHES = (
    (MAC, """#elif VL == 16
static inline vf mac(vf acc, vf a, vf b) { return (vf)((vi)acc + (vi)_mm512_madd_epi16((__m512i)a, (__m512i)b)); }
#else
static inline vf mac(vf acc, vf a, vf b) { return (vf)((vi)acc + (vi)_mm256_madd_epi16((__m256i)a, (__m256i)b)); }
#endif
static inline vf fin(vf acc) { return __builtin_convertvector((vi)acc, vf) * (float)I16_UNSCALE; }""", 1),
    # --mac vnni replaces the two products above by one vpdpwssd (the lines below, on the patched source)
    ("s[j * sj + b + i] = acc[j][i];", "s[j * sj + b + i] = fin(acc[j][i]);", 1),
    ("for (int i = 0; i < 8; i++) s[b + i] = acc[i];", "for (int i = 0; i < 8; i++) s[b + i] = fin(acc[i]);", 1),
    ("                    s[b] = acc;\n", "                    s[b] = fin(acc);\n", 1),
    ("store(S + p * sp + u * ss + VL * v, acc[p][v]);", "store(S + p * sp + u * ss + VL * v, fin(acc[p][v]));", 1),
    ("const uint32_t lo = bf16_bits(x[(long)(2 * c2) * plane + i]);",
     "const uint32_t lo = i16_bits(x[(long)(2 * c2) * plane + i]);", 1),
    ("lo | bf16_bits(x[(long)(2 * c2 + 1) * plane + i]) << 16", "lo | i16_bits(x[(long)(2 * c2 + 1) * plane + i]) << 16", 1),
    ("static inline uint32_t pair_at(", """static inline uint32_t i16_bits(float x) {
    const float v = rintf(x * (float)I16_SCALE);
    return (uint16_t)(int16_t)(v > 32767.0f ? 32767.0f : v < -32767.0f ? -32767.0f : v);
}

static inline uint32_t pair_at(""", 1),
)


VNNI = (
    ("(vf)((vi)acc + (vi)_mm512_madd_epi16((__m512i)a, (__m512i)b))",
     "(vf)_mm512_dpwssd_epi32((__m512i)acc, (__m512i)a, (__m512i)b)", 1),
    ("(vf)((vi)acc + (vi)_mm256_madd_epi16((__m256i)a, (__m256i)b))",
     "(vf)_mm256_dpwssd_avx_epi32((__m256i)acc, (__m256i)a, (__m256i)b)", 1),
)


def int16_source(scale: float, vnni: bool) -> Path:
    """A patched copy of the kernel (int16 pairs at scale ``scale``) in a temporary folder."""
    src = attention_c.SOURCE.read_text()
    for old, new, times in PATCHES + VNNI * vnni:
        if src.count(old) != times:
            raise SystemExit(f"int16_read_ab: the kernel no longer has {old[:60]!r} {times} time(s): update PATCHES")
        src = src.replace(old, new)
    src = f"#define I16_SCALE {scale!r}\n#define I16_UNSCALE {1 / scale ** 2!r}\n" + src
    path = Path(tempfile.mkdtemp()) / "attention_kernel_int16.c"
    path.write_text(src)
    return path


def common_scale(maps: list[np.ndarray]) -> float:
    """The largest S with |x S| <= 32767 for every value and |<q, k>| S^2 < 2^31 for any two pixels."""
    top = max(float(np.abs(m).max()) for m in maps)
    norm = max(float(np.sqrt((m.astype(np.float64) ** 2).sum(0)).max()) for m in maps)
    return 0.99 * min(32767 / top, (2 ** 31 - 1) ** 0.5 / norm)


def use(build: Timed) -> None:
    """Make ``build`` the library every FusedBank loads (both the float32 and the pair slot)."""
    attention_c._library = attention_c._bf16_library = functools.lru_cache(maxsize=1)(lambda: build)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="240x427")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cflags", default="", help="MAST_ATTENTION_CFLAGS of both builds (e.g. -mno-avx512f)")
    ap.add_argument("--mac", choices=("madd", "vnni"), default="madd",
                    help="int16 products: vpmaddwd + vpaddd, or one vpdpwssd (AVX512-VNNI / AVX-VNNI)")
    a = ap.parse_args()
    if a.rounds < 1 or a.threads < 1:
        ap.error(f"--rounds {a.rounds}, --threads {a.threads}: expected at least 1 each")
    try:
        parse_size(a.size)
    except InputError as err:
        ap.error(str(err))
    if not CLIP.is_dir():
        ap.error(f"the DAVIS camel frames are not at {CLIP} (expected ../shared/data beside the repository)")
    need = "avx_vnni" if "-mno-avx512f" in a.cflags else "avx512_vnni"
    if a.mac == "vnni" and f" {need}" not in attention_c._cpu_flags():
        ap.error(f"--mac vnni with cflags [{a.cflags}] needs {need} in /proc/cpuinfo's flags (this CPU has none)")
    query, keys, values = inputs(a.size)
    scale = common_scale([query, *keys])
    os.environ[attention_c.EXTRA_FLAGS] = a.cflags
    attention_c._library.cache_clear()
    fp32 = Timed(attention_c._library())
    shipped, attention_c.SOURCE = attention_c.SOURCE, int16_source(scale, a.mac == "vnni")
    try:
        int16 = Timed(attention_c._build(("-DMAST_I16",)))
    finally:
        attention_c.SOURCE = shipped
    attention_c.bf16_available = lambda: None    # the pair layout, here of int16 pairs
    builds, outs = {"float32": fp32, "int16 pairs": int16}, {}
    banks, best = {}, {name: collections.defaultdict(lambda: float("inf")) for name in builds}
    for name, build in builds.items():
        use(build)
        banks[name] = attention_c.FusedBank(len(keys), AttentionConfig(), threads=a.threads, pairs=name != "float32")
        for slot, (k, v) in enumerate(zip(keys, values)):
            banks[name].write(slot, k, v)
    for r in range(a.rounds + 1):
        for name, build in builds.items():
            use(build)
            build.spent.clear()
            wall, cpu = time.perf_counter(), time.process_time()
            outs[name] = banks[name].read(query, list(range(len(keys))), DISTANCES)
            times = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu, **build.spent}
            if r:   # round 0 lays every slot out
                for key, t in times.items():
                    best[name][key] = min(best[name][key], t)
    print(f"{a.size}, C={query.shape[0]}, int16 scale {scale:.1f}, cflags [{a.cflags or 'default'}], "
          f"int16 products {a.mac}, {a.threads} thread(s), least of {a.rounds} rounds (ms)")
    for name, low in best.items():
        parts = "  ".join(f"{k} {low[k] * 1e3:.1f}" for k in KERNELS) if a.threads == 1 else ""
        print(f"{name}: read wall {low['wall'] * 1e3:.1f}  CPU {low['cpu'] * 1e3:.1f}  {parts}")
    diff = np.abs(outs["int16 pairs"] - outs["float32"])
    print(f"label distributions: max |int16 - float32| {diff.max():.2e}, mean {diff.mean():.2e}")


if __name__ == "__main__":
    main()
