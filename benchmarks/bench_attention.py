"""One memory read of the CPU attention (``mast.core.attention``) on real keys.

    python benchmarks/bench_attention.py [--size 240x427] [--repeats 9] [--threads 2]
                                         [--kernel auto|fused|torch] [--channels C]
                                         [--against OLD_ATTENTION.py]

Keys: the shipped weights (bf16 encoder) on DAVIS camel frames 0, 5, 55, 57, 59 (the memory of frame
60 under the default schedule: distances 60, 55 read through their ROI at dilation 4, and 5, 3, 1
through restricted windows) and frame 60 as the query; 3 one-hot labels. ``--channels C`` keeps the
keys' first C channels (e.g. 56, the compact encoder's key width). Prints the fastest and the
median wall time and the least CPU time (all threads) of ``--repeats`` runs (ms) of the whole
read, of its three restricted windows alone and of its two ROI frames alone (where the time goes).
``--against`` loads another version of ``mast/core/attention.py`` (e.g. ``git show
REV:mast/core/attention.py > /tmp/old.py``) and times both in turn in this process, twice, with
the max abs difference of their outputs: an A/B on a noisy host.
"""
from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path

import cv2
import torch

from mast.core import attention as current
from mast.core.config import AttentionConfig
from mast.core.model import key_encoder
from mast.runtime.torch_backend import TorchBackend

CLIP = Path(__file__).resolve().parents[2] / "shared" / "data" / "davis2016-val-dev" / "JPEGImages" / "480p" / "camel"
MEMORY, DISTANCES, QUERY = (0, 5, 59, 57, 55), [60, 55, 1, 3, 5], 60


def timed(fn, repeats: int) -> tuple[float, float, float]:
    """Fastest and median wall time and least CPU time (this process, all threads) of ``repeats``
    runs of ``fn()``, ms. On a shared host the CPU time shows the work; the wall time, the wait."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return min(wall) * 1e3, sorted(wall)[len(wall) // 2] * 1e3, min(cpu) * 1e3


def load(path: Path):
    spec = importlib.util.spec_from_file_location("attention_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="240x427")
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kernel", choices=["auto", "fused", "torch"], default="auto",
                    help="this version's implementation (roi_memory_attention's kernel argument)")
    ap.add_argument("--channels", type=int, help="keep the keys' first C channels (default: all)")
    ap.add_argument("--against", type=Path, help="another mast/core/attention.py to time in turn with this one")
    a = ap.parse_args()
    if a.against is not None and not a.against.is_file():
        ap.error(f"--against {a.against}: no such file (expected a copy of mast/core/attention.py, e.g. "
                 "git show REV:core/attention.py > /tmp/old.py)")
    if not CLIP.is_dir():
        ap.error(f"the DAVIS camel frames are not at {CLIP} (expected ../shared/data beside the repository)")
    torch.set_num_threads(a.threads)
    h, w = (int(v) for v in a.size.split("x"))
    paths = sorted(CLIP.glob("*.jpg"))
    backend = TorchBackend(key_encoder("model"), precision="bf16")
    frame = lambda i: cv2.resize(cv2.imread(str(paths[i])), (w, h), interpolation=cv2.INTER_AREA)  # noqa: E731
    keys, query = [backend.encode(frame(i)) for i in MEMORY], backend.encode(frame(QUERY))
    if a.channels is not None:
        if not 1 <= a.channels <= query.shape[0]:
            ap.error(f"--channels {a.channels}: expected 1 to {query.shape[0]} (the keys' channels)")
        keys, query = [k[: a.channels].contiguous() for k in keys], query[: a.channels].contiguous()
    ids = torch.randint(0, 3, query.shape[1:], generator=torch.Generator().manual_seed(0))
    values = [(ids[None] == torch.arange(3)[:, None, None]).float() for _ in keys]
    cfg = AttentionConfig()
    this = lambda *args: current.roi_memory_attention(*args, kernel=a.kernel)  # noqa: E731
    versions = [(f"this/{a.kernel}", this)] + ([("against", load(a.against).roi_memory_attention)] if a.against else [])
    local, roi = [i for i, d in enumerate(DISTANCES) if not cfg.uses_roi(d)], [i for i, d in enumerate(DISTANCES) if cfg.uses_roi(d)]
    parts = {"read": range(len(keys)), "windows": local, "ROI": roi}
    print(f"{a.size}, C={query.shape[0]}, {a.threads} thread(s), {a.repeats} runs: "
          "wall fastest / wall median / CPU least (ms)")
    with torch.inference_mode():
        for _ in range(2 if a.against else 1):
            for name, read in versions:
                cells = []
                for part, idx in parts.items():
                    args = (query, [keys[i] for i in idx], [values[i] for i in idx], [DISTANCES[i] for i in idx], cfg)
                    best, median, cpu = timed(lambda: read(*args), a.repeats)
                    cells.append(f"{part} {best:6.0f} / {median:6.0f} / {cpu:6.0f}")
                print(f"{name:12s} " + "   ".join(cells))
        if a.against:
            outs = [read(query, keys, values, DISTANCES, cfg) for _, read in versions]
            print(f"max abs difference: {(outs[0] - outs[1]).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
