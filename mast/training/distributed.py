"""Multi-process training through ``torchrun`` (DDP) and the per-rank slice of the sample range.

``torchrun --nproc-per-node G mast-train ...`` starts one process per device with RANK,
LOCAL_RANK and WORLD_SIZE in the environment; with WORLD_SIZE > 1 the process group is
initialised from them (NCCL on CUDA, Gloo on CPU). Sample indices are global: step s of a run
with per-process batch B and world size W covers samples [s*B*W, (s+1)*B*W), and rank r takes
[s*B*W + r*B, s*B*W + (r+1)*B) (the DistributedSampler split, without shuffling: sample i is
already random, a function of (seed, i)). A resumed run restarts at its step's first sample.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank, world size, local rank (device index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str) -> DistInfo:
    """Join the torchrun process group when WORLD_SIZE > 1; a single-process DistInfo otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if device == "cuda":
        torch.cuda.set_device(info.local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device == "cuda" else "gloo")
    return info


def shutdown_distributed(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def mean_across(value: float, info: DistInfo, device: torch.device) -> float:
    """The mean of a per-process float over all processes (itself when single-process)."""
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / info.world_size


def any_across(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """True on every process when ``flag`` is True on any (so all stop after the same step)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


class StepBatches:
    """Batch sampler: the sample indices of steps [start, stop) for one rank (module docstring)."""

    def __init__(self, start: int, stop: int, batch_size: int, info: DistInfo = DistInfo()) -> None:
        self.start, self.stop, self.batch, self.info = start, stop, batch_size, info

    def indices(self, step: int) -> list[int]:
        """Global sample indices of this rank at ``step``: ``[batch_size]``."""
        first = step * self.batch * self.info.world_size + self.info.rank * self.batch
        return list(range(first, first + self.batch))

    def __iter__(self) -> Iterator[list[int]]:
        return (self.indices(step) for step in range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)
