"""Configuration of a training run (``mast-train``): one frozen dataclass, checked on creation."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

from mast.core.errors import MastError
from mast.training.data import STAGES, Framing

STAGE_LR = {"pair": 1e-3, "memory": 2e-5}  # paper Sec. 4
BatchNormMode = Literal["train", "frozen"]
Trainable = Literal["all", "readout", "stem"]
AmpMode = Literal["auto", "off", "bf16"]
StageName = Literal["pair", "memory"]  # = mast.training.data.STAGES


class TrainConfigError(MastError, ValueError):
    """An invalid training setting (a user-fixable mistake)."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run; stored in ``last.pt`` so ``--resume`` continues it exactly.

    data:         training sources (video files, frame folders, folders of those).
    out:          run folder: last.pt, encoder.pt, metrics.jsonl, tb/, loss.png.
    steps:        optimiser steps of the whole run (the LR schedule is scaled to it).
    stage:        "pair" (1 reference) or "memory" (long- and short-term references).
    size:         frames are resized to size x size pixels.
    framing:      "squash" (whole frame resized to size x size, aspect lost) or "crop" (aspect
                  kept, short side = size, a random square window per sample; data.py).
    batch_size:   samples per process and step (global batch = batch_size x world size).
    lr:           Adam learning rate; None = the stage's default (pair 1e-3, memory 2e-5).
    lr_milestones: fractions of ``steps`` after which the LR is multiplied by ``lr_gamma``
                  (paper: halved after 40 %, 60 %, 80 % of the iterations).
    init:         encoder checkpoint to start from (e.g. the pair stage's encoder.pt).
    save_every:   write last.pt and encoder.pt every this many steps (and at the end).
    val_davis:    DAVIS root for J&F at each save (``val_sequences`` first sequences, ``val_size``).
    workers:      DataLoader worker processes; None = 0 on CPU (sampling costs < 1 % of a CPU
                  step), 4 on CUDA.
    device:       "cpu" or "cuda".
    amp:          mixed precision of the encoder: "auto" (float16 + loss scaling on CUDA, off on
                  CPU), "off", or "bf16" (bfloat16 autocast; on CPUs with AMX/AVX512-BF16 it is
                  ~3x faster than float32).
    seed:         model initialisation, sample draws and dropped channels derive from it.
    log_every:    a metrics line every this many steps.
    augment:      light augmentation of the samples (flip, crop, brightness; see data.py).
    batchnorm:    "train" (batch statistics, running statistics updated: the paper's training) or
                  "frozen" (eval mode: the stored running statistics normalise, only the affine
                  parameters learn; what training from ``--init colour-prior`` needs, whose
                  construction lives in those statistics).
    trainable:    "all" parameters, or only the "readout" (``post_convolution``, the 3x3 conv that
                  maps the backbone's 256 channels to the 64-dim keys: a metric learned over fixed
                  features; the backbone gets no gradient, so a step costs about a forward pass),
                  or the "stem" and the read-out (``feature_extraction.conv1``: the 7x7 conv from the
                  Lab pixels and its norm's affine, where filters other than local colour means can
                  appear; the residual blocks stay as initialised).
    cycle_weight: weight of the round-trip term added to the reconstruction loss
                  (``mast.training.objective.cycle_spread``, key pixels^2); 0 = the paper's loss.
    label_offset: pixel of each 4x4 cell whose value the references give (1 = where inference reads
                  mask labels; 0 = the published code). Runs stored before the field existed used 0.
    """

    data: tuple[str, ...]
    out: str
    steps: int
    stage: str = "pair"
    size: int = 256
    framing: Framing = "squash"
    batch_size: int = 8
    lr: float | None = None
    lr_milestones: tuple[float, ...] = (0.4, 0.6, 0.8)
    lr_gamma: float = 0.5
    init: str | None = None
    save_every: int = 500
    val_davis: str | None = None
    val_sequences: int = 2
    val_size: tuple[int, int] = (240, 427)
    workers: int | None = None
    device: str = "cpu"
    amp: str = "auto"
    seed: int = 0
    log_every: int = 1
    augment: bool = True
    batchnorm: BatchNormMode = "train"
    trainable: Trainable = "all"
    cycle_weight: float = 0.0
    label_offset: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "data", tuple(str(p) for p in self.data))
        object.__setattr__(self, "lr_milestones", tuple(self.lr_milestones))
        object.__setattr__(self, "val_size", tuple(self.val_size))
        for problem in _problems(self):
            raise TrainConfigError(problem)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else STAGE_LR[self.stage]

    @property
    def num_workers(self) -> int:
        if self.workers is not None:
            return self.workers
        return min(4, os.cpu_count() or 1) if self.device == "cuda" else 0

    def milestones(self) -> list[int]:
        """Steps after which the LR drops: ``[int(f * steps) for f in lr_milestones]`` (>= 1)."""
        return [max(1, int(f * self.steps)) for f in self.lr_milestones]

    def to_dict(self) -> dict[str, Any]:
        """Plain python values (lists for tuples), safe for ``torch.load(weights_only=True)``."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        values = {"label_offset": 0, **values}  # runs stored before the field existed sampled at offset 0
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})

    def with_(self, **changes: Any) -> "TrainConfig":
        return replace(self, **changes)


# what a resumed run must share with the stored one for "continues exactly" to hold
RESUME_FIXED = ("stage", "size", "framing", "batch_size", "lr", "lr_milestones", "lr_gamma", "seed", "augment", "amp",
                "batchnorm", "trainable", "cycle_weight", "label_offset")


def _problems(c: TrainConfig):
    if not c.data:
        yield "no training data given: pass --data PATH (video files or frame folders)"
    if c.stage not in STAGES:
        yield f"unknown stage {c.stage!r}: expected one of {', '.join(STAGES)}"
    if c.steps < 1 or c.batch_size < 1 or c.save_every < 1 or c.log_every < 1:
        yield (f"steps={c.steps}, batch_size={c.batch_size}, save_every={c.save_every}, "
               f"log_every={c.log_every}: each must be >= 1")
    if c.size < 8 or c.size % 4:
        yield f"size={c.size}: expected a multiple of 4, at least 8 (e.g. 256)"
    if c.lr is not None and not c.lr > 0:
        yield f"lr={c.lr}: expected a positive learning rate"
    if c.device not in ("cpu", "cuda"):
        yield f"device={c.device!r}: expected cpu or cuda"
    if c.amp not in get_args(AmpMode):
        yield f"amp={c.amp!r}: expected auto, off or bf16"
    if c.batchnorm not in ("train", "frozen"):
        yield f"batchnorm={c.batchnorm!r}: expected train or frozen"
    if c.framing not in get_args(Framing):
        yield f"framing={c.framing!r}: expected squash or crop"
    if c.trainable not in get_args(Trainable):
        yield f"trainable={c.trainable!r}: expected all, readout or stem"
    if not c.cycle_weight >= 0:
        yield f"cycle_weight={c.cycle_weight}: expected >= 0 (0 = reconstruction only)"
    if not 0 <= c.label_offset < 4:
        yield f"label_offset={c.label_offset}: expected 0..3 (a pixel of the 4x4 cell; 0 = the published code)"
    if c.workers is not None and c.workers < 0:
        yield f"workers={c.workers}: expected >= 0"
    if c.val_sequences < 1 or len(c.val_size) != 2 or min(c.val_size) < 8:
        yield f"val_sequences={c.val_sequences}, val_size={c.val_size}: expected >= 1 and (H, W) >= 8"
