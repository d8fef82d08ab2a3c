"""Throughput of the training data: decoding, and samples per second for each stage and size.

    python benchmarks/bench_data.py [--data ../shared/data/raw-videos] [--samples 1000]

Prints, for each frame size: the decode time of the whole set (frames/s, MB held), then samples/s
of the "pair" and "memory" stages, augmentation on, uint8 output: in this process (``dataset[i]``);
through a DataLoader, batch 24 (w = num_workers; ``collate_clips`` unless "default collate"; one
run with float32 output); and in this process with frame folders read lazily (``preload=False``).

"""
from __future__ import annotations

import argparse
import os
import time
import warnings
from dataclasses import replace
from pathlib import Path

from torch.utils.data import DataLoader

from mast.runtime.bench import cpu_name
from mast.training.data import STAGES, ClipDataset, DataConfig, collate_clips, load_corpus

REPO = Path(__file__).resolve().parents[1]


def default_data() -> Path:
    shared = Path(os.environ.get("MAST_SHARED", REPO.parent / "shared"))
    return shared / "data" / "raw-videos"


def rate(fn, count: int) -> float:
    """Calls per second of ``fn(i)`` for i in range(count) (after one warm-up call)."""
    fn(0)
    start = time.perf_counter()
    for i in range(count):
        fn(i)
    return count / (time.perf_counter() - start)


def loader_rate(dataset: ClipDataset, count: int, workers: int, collate=collate_clips,
                batch: int = 24) -> float:
    """Samples per second delivered by a DataLoader over ``count`` samples (worker start included)."""
    loader = DataLoader(dataset, batch_size=batch, sampler=range(count), num_workers=workers,
                        collate_fn=collate)
    start = time.perf_counter()
    for _ in loader:
        pass
    return count / (time.perf_counter() - start)


def bench_size(data: Path, size: int, samples: int) -> None:
    config = DataConfig(size=size, progress=False)
    start = time.perf_counter()
    corpus = load_corpus([data], config)
    seconds = time.perf_counter() - start
    print(f"\n== {size}x{size}: decoded {len(corpus)} sources, {corpus.total_frames} frames in "
          f"{seconds:.2f} s ({corpus.total_frames / seconds:.0f} frames/s), "
          f"{corpus.nbytes / 2**20:.0f} MiB held")
    lazy_config = DataConfig(size=size, progress=False, preload=False)
    lazy = load_corpus([data], lazy_config)
    for stage in STAGES:
        ds = ClipDataset(corpus, config, stage)
        lazy_ds = ClipDataset(lazy, lazy_config, stage)
        float_ds = ClipDataset(corpus, replace(config, as_float=True), stage)
        figures = {
            "in-process": rate(ds.__getitem__, samples),
            "w=0 default collate": loader_rate(ds, samples, 0, collate=None),
            "w=0": loader_rate(ds, samples, 0),
            "w=2": loader_rate(ds, samples, 2),
            "w=2 float32": loader_rate(float_ds, samples, 2),
            "lazy folders": rate(lazy_ds.__getitem__, max(samples // 4, 50)),
        }
        print(f"  {stage} (T={config.clip_length(stage)}), samples/s:")
        for name, value in figures.items():
            print(f"    {name:22s} {value:8.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 128])
    args = parser.parse_args()
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; OMP_WAIT_POLICY="
          f"{os.environ.get('OMP_WAIT_POLICY', '(unset)')}; data: {args.data}")
    warnings.simplefilter("default")
    for size in args.sizes:
        bench_size(args.data, size, args.samples)


if __name__ == "__main__":
    main()
