"""Experiment (not a tracker option): the short-term memory frames (restricted windows) read with one
radius and the long-term ones (ROI: coarse search and fine window) with another, one softmax over
all as usual; J&F on a DAVIS split with the shipped weights at 240x427.

    python benchmarks/radius_split_ab.py --short 8 --long 12 --split davis2016-val-dev --out runs/split

The fused CPU read already takes the two radii in separate calls (``mast_read`` for the restricted
frames, ``mast_offsets`` / ``mast_fine`` for the ROI ones): this script rewrites
``FusedBank.read`` in memory so that ``mast_read`` (and the restricted frames' padding and work
space) get ``--short`` while the bank's configuration, and so the ROI branch, has ``--long``. Masks go
to ``OUT/s<short>-l<long>/SPLIT``; score them with ``mast-eval --davis ../shared/data/SPLIT --results
DIR``. Needs the fused read (a C compiler).
"""
from __future__ import annotations

import argparse
import inspect
import textwrap
import time
from pathlib import Path

from mast.core import attention_c
from mast.evaluation.davis import DavisDataset
from mast.evaluation.track import track_davis

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--short", type=int, required=True, help="radius of the restricted (short-term) frames")
    ap.add_argument("--long", type=int, required=True, help="radius of the ROI (long-term) frames")
    ap.add_argument("--split", default="davis2016-val-dev", help="folder under ../shared/data")
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    ap.add_argument("--out", type=Path, default=Path("runs/radius-split"))
    a = ap.parse_args()
    if not all(1 <= r <= attention_c.MAX_RADIUS for r in (a.short, a.long)):
        ap.error(f"--short {a.short}, --long {a.long}: expected radii from 1 to {attention_c.MAX_RADIUS}")
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
