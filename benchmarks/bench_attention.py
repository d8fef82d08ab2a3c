"""One memory read of the reference attention (``mast.core.attention``, CPU) on real keys.

    python benchmarks/bench_attention.py [--size 240x427] [--repeats 9] [--threads 2]
                                         [--against OLD_ATTENTION.py]

Keys: the shipped weights (bf16 encoder) on DAVIS camel frames 0, 5, 55, 57, 59 (the memory of frame
60 under the default schedule: distances 60, 55 read through their ROI at dilation 4, and 5, 3, 1
through restricted windows) and frame 60 as the query; 3 one-hot labels. Prints the fastest of
``--repeats`` runs (ms) of the whole read and of one coarse search. ``--against`` loads another
version of ``mast/core/attention.py`` (e.g. ``git show REV:core/attention.py > /tmp/old.py``) and times
both in turn in this process, twice, with the max abs difference of their outputs: an A/B on a
noisy host.
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


def fastest(fn, repeats: int) -> float:
    """Fastest of ``repeats`` runs of ``fn()``, ms."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


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
    ids = torch.randint(0, 3, query.shape[1:], generator=torch.Generator().manual_seed(0))
    values = [(ids[None] == torch.arange(3)[:, None, None]).float() for _ in keys]
    cfg = AttentionConfig()
    versions = [("this", current)] + ([("against", load(a.against))] if a.against else [])
    print(f"{a.size}, {a.threads} thread(s), fastest of {a.repeats}")
    with torch.inference_mode():
        for _ in range(2 if a.against else 1):
            for name, m in versions:
                read = fastest(lambda: m.roi_memory_attention(query, keys, values, DISTANCES, cfg), a.repeats)
                coarse = fastest(lambda: m._coarse_offsets(query, keys[0], cfg.dilation(60), cfg), a.repeats)
                print(f"{name:8s} read {read:7.1f} ms   coarse search {coarse:6.1f} ms")
        if a.against:
            outs = [m.roi_memory_attention(query, keys, values, DISTANCES, cfg) for _, m in versions]
            print(f"max abs difference: {(outs[0] - outs[1]).abs().max().item():.2e}")


if __name__ == "__main__":
    main()
