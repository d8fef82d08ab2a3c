"""Experiment (not a tracker option): the short-term memory frames (restricted windows) read with one
radius and the long-term ones (ROI: coarse search and fine window) with another, one softmax over
all as usual; J&F on a DAVIS split with the shipped weights at 240x427.

    python benchmarks/radius_split_ab.py --short 8 --long 12 --split davis2016-val-dev --out runs/split
    OMP_NUM_THREADS=1 python benchmarks/radius_split_ab.py --short 12 --long 8 --bench [--threads 1] [--rounds 6]

The fused CPU read already takes the two radii in separate calls (``mast_read`` for the restricted
frames, ``mast_offsets`` / ``mast_fine`` for the ROI ones): this script rewrites
``FusedBank.read`` in memory so that ``mast_read`` (and the restricted frames' padding and work
space) get ``--short`` while the bank's configuration, and so the ROI branch, has ``--long``. Masks go
to ``OUT/s<short>-l<long>/SPLIT``; score them with ``mast-eval --davis ../shared/data/SPLIT --results
DIR``. ``--bench`` tracks nothing: it times the split read against one radius everywhere (``--short``)
on bench_fused_bank.py's memory (shipped keys, DAVIS camel, frame 60's five memory frames), the two
alternated round after round, and prints the least read time of each (ms). Needs the fused read (a C
compiler).
"""
from __future__ import annotations

import argparse
import inspect
import sys
import textwrap
import time
from pathlib import Path

from mast.core import attention_c
from mast.core.config import AttentionConfig
from mast.evaluation.davis import DavisDataset
from mast.evaluation.track import track_davis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_attention import CLIP, DISTANCES  # noqa: E402  (sibling scripts: bench_fused_bank's memory)
from bench_fused_bank import inputs  # noqa: E402

# the three places of FusedBank.read where the restricted frames' radius is the bank's
PATCHES = (("args = (ck, h, w, n_labels, r,", "args = (ck, h, w, n_labels, SHORT,"),
           ("lib.mast_work_floats(w, n_labels, r, len(slots))", "lib.mast_work_floats(w, n_labels, max(r, SHORT), len(slots))"),
           ("roi_pad if cfg.uses_roi(d) else r,", "roi_pad if cfg.uses_roi(d) else SHORT,"))


def split_read(short: int) -> None:
    """FusedBank.read with the restricted frames read at radius ``short``."""
    src = textwrap.dedent(inspect.getsource(attention_c.FusedBank.read))
    for old, new in PATCHES:
        if src.count(old) != 1:
            raise SystemExit(f"radius_split_ab: FusedBank.read no longer has {old!r}: update PATCHES")
        src = src.replace(old, new)
    namespace = {**vars(attention_c), "SHORT": short}
    exec(src, namespace)   # noqa: S102 - the library's own source, three names changed
    attention_c.FusedBank.read = namespace["read"]


def bench(short: int, long: int, threads: int, rounds: int) -> None:
    """The least read time (ms) of the split bank and of a bank at ``short`` everywhere, alternated."""
    if not CLIP.is_dir():
        raise SystemExit(f"radius_split_ab --bench: the DAVIS camel frames are not at {CLIP} (expected ../shared/data)")
    query, keys, values = inputs("240x427")
    whole = attention_c.FusedBank.read
    split_read(short)
    reads = {f"{short} everywhere": (whole, short), f"short {short} / long {long}": (attention_c.FusedBank.read, long)}
    banks = {}
    for name, (read, radius) in reads.items():
        banks[name] = attention_c.FusedBank(len(keys), AttentionConfig(radius=radius), threads=threads)
        for slot, (k, v) in enumerate(zip(keys, values)):
            banks[name].write(slot, k, v)
    best = dict.fromkeys(reads, float("inf"))
    for r in range(rounds + 1):
        for name, (read, _) in reads.items():
            start = time.perf_counter()
            read(banks[name], query, list(range(len(keys))), DISTANCES)
            if r:   # round 0 lays every slot out
                best[name] = min(best[name], time.perf_counter() - start)
    print(f"240x427, {threads} thread(s), least of {rounds} reads: "
          + ", ".join(f"{name} {t * 1e3:.1f} ms" for name, t in best.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", type=int, required=True, help="radius of the restricted (short-term) frames")
    ap.add_argument("--long", type=int, required=True, help="radius of the ROI (long-term) frames")
    ap.add_argument("--split", default="davis2016-val-dev", help="folder under ../shared/data")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("runs/radius-split"))
    ap.add_argument("--bench", action="store_true", help="time the split read instead of tracking (see above)")
    ap.add_argument("--threads", type=int, default=1, help="--bench: threads of the read")
    ap.add_argument("--rounds", type=int, default=6, help="--bench: reads of each bank")
    a = ap.parse_args()
    if not all(1 <= r <= attention_c.MAX_RADIUS for r in (a.short, a.long)):
        ap.error(f"--short {a.short}, --long {a.long}: expected radii from 1 to {attention_c.MAX_RADIUS}")
    if a.bench:
        if a.threads < 1 or a.rounds < 1:
            ap.error(f"--threads {a.threads}, --rounds {a.rounds}: expected at least 1 each")
        bench(a.short, a.long, a.threads, a.rounds)
        return
    root = a.data / a.split
    if not root.is_dir():
        ap.error(f"no DAVIS split at {root} (expected ../shared/data/{a.split}; or give --data)")
    split_read(a.short)
    out = a.out / f"s{a.short}-l{a.long}" / a.split
    start = time.perf_counter()
    seconds = track_davis(root, DavisDataset(root).sequences(), out, None, size=(240, 427), radius=a.long)
    print(f"short {a.short}, long {a.long}: {a.split} tracked into {out} in {time.perf_counter() - start:.0f} s "
          f"({1000 * sum(seconds.values()) / len(seconds):.1f} ms a frame, mean over sequences); "
          f"score: mast-eval --davis {root} --results {out}")


if __name__ == "__main__":
    main()
