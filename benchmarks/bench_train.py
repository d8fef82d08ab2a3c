"""Training throughput on this machine: samples/s of the training step, and of the data pipeline alone.

    python benchmarks/bench_train.py [--data ../shared/data/raw-videos] [--sizes 128 256]
        [--stages pair memory] [--batch 8] [--steps 3] [--amp off bf16] [--threads N]

For each size, stage and precision: the DataLoader alone (``--workers`` processes, the trainer's
sampler and collate, augmentation on) delivering ``--steps`` batches, then ``--steps`` optimiser
steps (after one warm-up step) of the real training step (Lab, channel dropout, encoder forward
and backward, batched ROI attention, Adam) on batches fetched beforehand: the two rates side by
side show whether decoding/sampling could limit training. Memory-stage batches are
``--batch // 2`` samples (6 frames each instead of 2). Prints the CPU, thread count and load
average, which matter on a shared machine.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from mast.core.encoder import Encoder
from mast.training.data import ClipDataset, DataConfig, collate_clips, load_corpus
from mast.training.distributed import StepBatches
from mast.training.objective import ObjectiveConfig, dropped_channels, reconstruction_loss

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_data import cpu_name, default_data  # noqa: E402  (sibling script)


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def data_rate(dataset: ClipDataset, batch: int, steps: int, workers: int) -> float:
    """Samples/s delivered by the trainer's DataLoader (worker start-up included)."""
    loader = DataLoader(dataset, batch_sampler=StepBatches(0, steps, batch), num_workers=workers,
                        collate_fn=collate_clips)
    start = time.perf_counter()
    for _ in loader:
        pass
    return batch * steps / (time.perf_counter() - start)


def train_rate(dataset: ClipDataset, batch: int, steps: int, amp: str) -> tuple[float, float]:
    """(samples/s, seconds per step) of ``steps`` training steps after one warm-up step."""
    sampler = StepBatches(0, steps + 1, batch)
    batches = [collate_clips([dataset[i] for i in idx]) for idx in sampler]
    torch.manual_seed(0)
    model = Encoder().to(memory_format=torch.channels_last).train()   # as the trainer builds it
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    dtype = torch.bfloat16 if amp == "bf16" else None
    times = []
    for step, b in enumerate(batches):
        start = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss = reconstruction_loss(model, b["frames"], b["distances"], dropped_channels(sampler.indices(step)),
                                   ObjectiveConfig(), dtype)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    per_step = sum(times[1:]) / steps
    return batch / per_step, per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=default_data())
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256])
    parser.add_argument("--stages", nargs="+", default=["pair", "memory"])
    parser.add_argument("--batch", type=int, default=8, help="pair-stage batch (memory: half)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--amp", nargs="+", default=["off", "bf16"])
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} torch threads; load average at start {load()}")
    for size in args.sizes:
        config = DataConfig(size=size, progress=False)
        start = time.perf_counter()
        corpus = load_corpus([args.data], config)
        print(f"\n== {size}x{size}: decoded {corpus.total_frames} frames of {len(corpus)} sources once in "
              f"{time.perf_counter() - start:.1f} s (held in memory)")
        for stage in args.stages:
            batch = args.batch if stage == "pair" else max(1, args.batch // 2)
            dataset = ClipDataset(corpus, config, stage)
            loader = data_rate(dataset, batch, max(args.steps, 20), args.workers)
            for amp in args.amp:
                rate, per_step = train_rate(dataset, batch, args.steps, amp)
                frames = batch * config.clip_length(stage)
                print(f"{stage:6s} batch {batch:2d} ({frames:2d} frames) {amp:4s}: train {rate:6.2f} samples/s "
                      f"({per_step:6.2f} s/step, {frames / per_step:5.2f} frames/s) | data pipeline "
                      f"{loader:7.0f} samples/s (workers={args.workers}) | load {load()} | "
                      f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB", flush=True)


if __name__ == "__main__":
    main()
