"""The two-stage self-supervised trainer behind ``mast-train`` (docs/DESIGN.md "Training").

One run = one stage. Stage 1: ``--stage pair`` (Adam, LR 1e-3 halved after 40/60/80 % of the
steps). Stage 2: ``--stage memory --init STAGE1/encoder.pt`` (LR 2e-5, same schedule shape).

Exact resumption. A step is a pure function of (weights, optimiser state, step number): sample
indices come from the step (``distributed.StepBatches``), sample content and the dropped channel
from (seed, sample index), and nothing else draws random numbers. ``last.pt`` stores weights,
Adam moments, schedule, AMP scaler, RNG states and the config; a run killed at any point and
resumed with ``--resume`` ends with the same weights as an uninterrupted one (bitwise on the same
machine and thread count; tested with SIGKILL in tests/training).

BatchNorm is trained as MAST does: train mode throughout (batch statistics over the B*T frames of a
step, running statistics updated with momentum 0.1 and saved for inference, where the tracker uses
eval mode). Under DDP each process normalises over its own frames (no SyncBatchNorm), as the
published code did under DataParallel.

Interrupting (Ctrl-C or SIGTERM) finishes the current step, writes ``last.pt`` and
``encoder.pt``, and stops; a second Ctrl-C stops at once without saving.
"""
from __future__ import annotations

import math
import os
import signal
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from mast.core.checkpoint import build_encoder, read_checkpoint, save_checkpoint
from mast.core.cli import Interrupt
from mast.core.encoder import Encoder
from mast.core.errors import NO_CUDA_GPU, InputError, MastError
from mast.training.config import RESUME_FIXED, TrainConfig, TrainConfigError
from mast.training.data import ClipDataset, DataConfig, collate_clips, load_corpus
from mast.training.distributed import (
    DistInfo,
    StepBatches,
    any_across,
    barrier,
    init_distributed,
    mean_across,
    shutdown_distributed,
)
from mast.training.monitor import MetricsLog, TrainProgress
from mast.training.holdout import HoldoutConfig, holdout_losses, holdout_pairs
from mast.training.objective import STRIDE, ObjectiveConfig, dropped_channels, reconstruction_loss
from mast.training.pretrained import IMAGENET_INIT, INIT_NAMES, imagenet_weights_path, named_encoder
from mast.training.state import StepSchedule, load_state, remove_stale_temps, save_state, set_rng_state
from mast.training.validate import validate_davis, validation_sequences

HOLDOUT = HoldoutConfig(every=16)  # ~40 pairs of davis2016-val-dev: ~20 s on one CPU thread
LAST = "last.pt"
ENCODER = "encoder.pt"
Printer = Callable[[str], None]


class TrainingDiverged(MastError):
    """The loss is no longer finite (learning rate too high, or half-precision overflow)."""


@dataclass
class TrainResult:
    """How a run ended: steps completed, whether it was interrupted, the last logged loss."""

    step: int
    steps: int
    interrupted: bool
    out: Path
    loss: float | None = None


def resolve_config(options: dict[str, Any], resume: bool) -> TrainConfig:
    """The run's config from the options the user gave (``None`` values = not given).

    Fresh run: the given options over the TrainConfig defaults. ``resume``: the config stored in
    ``out/last.pt``, with the given options applied; options that would break exact resumption
    (RESUME_FIXED) must equal the stored ones.
    """
    given = {k: v for k, v in options.items() if v is not None}
    if not resume:
        return TrainConfig(**given)
    stored = TrainConfig.from_dict(load_state(Path(given["out"]) / LAST)["config"])
    for key in RESUME_FIXED:
        if key in given and _norm(given[key]) != _norm(getattr(stored, key)):
            raise TrainConfigError(f"--resume: {key} {given[key]!r} differs from the run's {getattr(stored, key)!r}; "
                                   f"drop the option or start a new run in another --out folder")
    return stored.with_(**{k: v for k, v in given.items() if k != "init"})


def _norm(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


class Trainer:
    """A configured run: data, model, optimiser and state, ready to ``run()``."""

    def __init__(self, config: TrainConfig, resume: bool = False, progress: bool = True,
                 info: DistInfo | None = None, say: Printer | None = None) -> None:
        self.config, self.info = config, info or DistInfo()
        self.progress = progress and self.info.is_main
        self.say = say or (lambda text: None)
        self.out = Path(config.out)
        self.device = _device(config.device, self.info)
        self._check_out(resume)
        if not resume:
            _check_init(config.init)
        self.dataset = self._dataset()
        self.val_sequences = (validation_sequences(config.val_davis, config.val_sequences)
                              if config.val_davis and self.info.is_main else [])
        self.holdout = holdout_pairs(config.val_davis, HOLDOUT) if self.val_sequences else None
        self.model = self._model(use_init=not resume)
        parameters = _trainable(self.model, config)  # before DDP, which registers what needs gradients
        self.ddp = self._wrap(self.model)
        self.optimizer = torch.optim.Adam(parameters, lr=config.learning_rate)
        self.schedule = StepSchedule(config.learning_rate, config.milestones(), config.lr_gamma)
        self.amp_dtype = _amp_dtype(config)
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.objective = ObjectiveConfig(seed=config.seed, cycle_weight=config.cycle_weight,
                                        label_offset=config.label_offset)
        self.step = self._restore() if resume else 0
        self._warn_oversubscribed()

    # ---------------------------------------------------------------- setup

    def _check_out(self, resume: bool) -> None:
        if self.info.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            remove_stale_temps(self.out)
        if not resume and (self.out / LAST).exists():
            raise InputError(f"{self.out} already holds a run ({LAST}): pass --resume to continue it, "
                             "or choose another --out folder")

    def _dataset(self) -> ClipDataset:
        c = self.config
        data = DataConfig(size=c.size, framing=c.framing, seed=c.seed, augment=c.augment, progress=self.progress)
        return ClipDataset(load_corpus(list(c.data), data), data, c.stage)

    def _model(self, use_init: bool) -> nn.Module:
        """The encoder: seeded initialisation, then ``--init`` weights (a checkpoint of either
        architecture, or a name of :data:`mast.training.pretrained.INIT_NAMES`: colour-prior,
        texture-prior, imagenet-mobilenetv2); a resumed run rebuilds the architecture its
        ``last.pt`` records and loads its own weights; batch norms in eval mode when
        ``batchnorm == "frozen"``.
        channels_last: oneDNN (and cuDNN) convolve NHWC without reordering every activation; on CPU
        a training step is 15-35 % faster (BENCHMARKS.md, training throughput)."""
        torch.manual_seed(self.config.seed)
        if self.config.init and use_init:
            model = named_encoder(self.config.init)
        elif use_init:
            model = Encoder()
        else:
            model = build_encoder(read_checkpoint(self.out / LAST).get("arch"), self.out / LAST)
        if getattr(model, "stride", STRIDE) != STRIDE:
            raise InputError(f"--init {self.config.init}: an encoder of key stride {model.stride}; training "
                             f"samples labels on the stride-{STRIDE} grid only: start from a stride-{STRIDE} encoder")
        model = model.to(self.device, memory_format=torch.channels_last).train()
        if self.config.batchnorm == "frozen":
            for module in model.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return model

    def _wrap(self, model: nn.Module) -> nn.Module:
        if not self.info.enabled:
            return model
        ids = [self.info.local_rank] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def _restore(self) -> int:
        state = load_state(self.out / LAST)
        self.model.load_state_dict(state["state_dict"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["scheduler"])
        if self.schedule.milestones != self.config.milestones():
            self.say(f"[yellow]--steps changed: LR milestones rescaled to {self.config.milestones()}")
            self.schedule.milestones = self.config.milestones()
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
        return int(state["step"])

    def _warn_oversubscribed(self) -> None:
        """On a busy CPU, torch's spinning OpenMP threads slow training down many times over
        (measured 8x on the shared 2-core dev machine at load 9): suggest one thread."""
        load, cores, threads = os.getloadavg()[0], os.cpu_count() or 1, torch.get_num_threads()
        if self.device.type == "cpu" and threads > 1 and load > cores and self.info.is_main:
            self.say(f"[yellow]warning: load average {load:.1f} on {cores} CPUs; with {threads} torch threads "
                     "training may crawl: set OMP_NUM_THREADS=1 if it does")

    # ---------------------------------------------------------------- loop

    def run(self) -> TrainResult:
        """Train from ``self.step`` to ``config.steps``; checkpoints, logs, validation."""
        c = self.config
        if self.step >= c.steps:
            self._save(self.step)
            return TrainResult(self.step, c.steps, False, self.out)
        batches = StepBatches(self.step, c.steps, c.batch_size, self.info)
        loader = DataLoader(self.dataset, batch_sampler=batches, num_workers=c.num_workers,
                            collate_fn=collate_clips, pin_memory=self.device.type == "cuda")
        log = MetricsLog(self.out, self.step) if self.info.is_main else None
        if self.step == 0 and self.val_sequences:  # the starting point of the validation curves
            save_checkpoint(self.out / ENCODER, self.model)
            self._validate(log)
        loss, stopped = None, False
        stopping = "[yellow]stopping: saving a checkpoint after this step (Ctrl-C again to quit without saving)"
        with Interrupt((signal.SIGINT, signal.SIGTERM), lambda: self.say(stopping)) as stop, \
                TrainProgress(c.steps, self.step, self.progress) as bar:
            self.say = bar.print if self.progress else self.say
            clock = _StepClock()
            for step, batch in zip(range(self.step, c.steps), loader):
                clock.data_done()
                lr = self.schedule.apply(self.optimizer)
                loss = mean_across(self._train_step(batch, batches.indices(step)), self.info, self.device)
                self.schedule.advance()
                self.step = step + 1
                bar.update(self.step, loss, lr, clock.steps_per_s())
                if log is not None and (self.step % c.log_every == 0 or self.step == c.steps):
                    log.write({"step": self.step, "loss": loss, "lr": lr, **clock.record(self.batch_global)})
                stopped = any_across(stop.requested, self.info, self.device)
                self._checkpoint(log, stopped)
                if stopped:
                    break
                clock.restart()
        if log is not None:
            log.close()
            _plot(self.out, self.say)
        return TrainResult(self.step, c.steps, self.step < c.steps, self.out, loss)

    @property
    def batch_global(self) -> int:
        return self.config.batch_size * self.info.world_size

    def _checkpoint(self, log: MetricsLog | None, stopping: bool) -> None:
        """After a step: save every ``save_every`` steps, at the end and when stopping; validate
        after the periodic and final saves."""
        c = self.config
        if self.step % c.save_every == 0 or self.step == c.steps or stopping:
            self._save(self.step)
            if not stopping:
                self._validate(log)

    def _train_step(self, batch: dict[str, torch.Tensor], indices: list[int]) -> float:
        """One optimiser step on ``batch`` (samples ``indices``); returns the loss."""
        frames = batch["frames"].to(self.device, non_blocking=True)
        distances = batch["distances"].to(self.device, non_blocking=True)
        channels = dropped_channels(indices, self.config.seed).to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = reconstruction_loss(self.ddp, frames, distances, channels, self.objective, self.amp_dtype)
        if not math.isfinite(loss.item()):
            raise TrainingDiverged(f"the loss became {loss.item()} at step {self.step + 1}; resume from the "
                                   f"last checkpoint with a lower --lr (or --amp off)")
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        return float(loss.item())

    def _save(self, step: int) -> None:
        """``last.pt`` then ``encoder.pt``, atomically, by the main process."""
        if self.info.is_main:
            save_state(self.out / LAST, self.model, self.optimizer, self.schedule, self.scaler, step,
                       self.config.to_dict())
            save_checkpoint(self.out / ENCODER, self.model)
        barrier(self.info)

    def _validate(self, log: MetricsLog | None) -> None:
        """Held-out reconstruction loss (all sequences of --val-davis) and J&F (the first few)."""
        if not self.val_sequences or log is None:
            return
        c = self.config
        losses = holdout_losses(self.model, self.holdout, HOLDOUT, self.objective)
        figures = validate_davis(c.val_davis, self.val_sequences, self.out / ENCODER, self.out / "val",
                                 c.val_size, c.device)
        log.write({"step": self.step, "val_loss": losses["loss"], "val_identity": losses["identity"],
                   "val_zero": losses["zero"], "val_spread": losses["spread"], **figures})
        self.say(f"step {self.step}: held-out loss {losses['loss']:.4f} (identity {losses['identity']:.4f}), "
                 f"round-trip spread {losses['spread']:.2f} px^2; "
                 f"J&F {100 * figures['val_jf']:.1f} on {', '.join(self.val_sequences)} "
                 f"at {c.val_size[0]}x{c.val_size[1]} ({figures['val_s']:.0f} s)")


class _StepClock:
    """Wall time of a step, split into waiting for the batch and computing on it."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.restart()

    def restart(self) -> None:
        self.tick, self.data_s = time.perf_counter(), 0.0

    def data_done(self) -> None:
        self.data_s = time.perf_counter() - self.tick

    def step_s(self) -> float:
        return time.perf_counter() - self.tick - self.data_s

    def steps_per_s(self) -> float:
        return 1.0 / max(1e-9, time.perf_counter() - self.tick)

    def record(self, batch: int) -> dict[str, float]:
        """The timing fields of a metrics line for a step of ``batch`` samples (all processes)."""
        total = max(1e-9, time.perf_counter() - self.tick)
        return {"samples_per_s": batch / total, "data_s": self.data_s, "step_s": self.step_s(),
                "time": time.perf_counter() - self.started}


def _trainable(model: nn.Module, config: TrainConfig) -> list[nn.Parameter]:
    """The parameters the optimiser updates; with ``trainable`` "readout" or "stem" (ResNet-18
    only) the others are set to ``requires_grad=False`` (no gradient is computed for them)."""
    if config.trainable == "all":
        return list(model.parameters())
    if not isinstance(model, Encoder):
        raise InputError(f"--trainable {config.trainable} names parts of the MAST ResNet-18; the "
                         f"{getattr(model, 'arch', 'given')} encoder trains with --trainable all")
    for parameter in model.feature_extraction.parameters():
        parameter.requires_grad_(False)
    learned = list(model.post_convolution.parameters())
    if config.trainable == "stem":
        learned += list(model.feature_extraction.conv1.parameters())
        for parameter in model.feature_extraction.conv1.parameters():
            parameter.requires_grad_(True)
    return learned


def _check_init(init: str | None) -> None:
    """Fail before the corpus is decoded when ``--init`` names neither a file nor a constructed prior."""
    if init and init not in INIT_NAMES and not Path(init).is_file():
        raise InputError(f"--init {init}: no such checkpoint file, and not a named initialisation "
                         f"({', '.join(INIT_NAMES)}); give an encoder .pt file or one of those names")
    if init == IMAGENET_INIT:
        imagenet_weights_path()   # the package that carries the weights is installed


def _device(name: str, info: DistInfo) -> torch.device:
    if name == "cuda":
        if not torch.cuda.is_available():
            raise InputError(NO_CUDA_GPU)
        return torch.device("cuda", info.local_rank)
    return torch.device("cpu")


def _amp_dtype(config: TrainConfig) -> torch.dtype | None:
    if config.amp == "bf16":
        return torch.bfloat16
    if config.amp == "auto" and config.device == "cuda":
        return torch.float16
    return None


def _plot(out: Path, say: Printer) -> None:
    """``out/loss.png`` when matplotlib is installed (the ``train`` extra)."""
    try:
        from mast.training.plot_loss import plot_loss

        plot_loss(out / "metrics.jsonl", out / "loss.png")
    except ImportError:
        say("matplotlib not installed: no loss.png (pip install matplotlib)")
    except Exception as exc:  # a plot must never fail a finished run
        warnings.warn(f"could not plot the loss curve: {exc}")


def train(config: TrainConfig, resume: bool = False, progress: bool = True,
          say: Printer | None = None) -> TrainResult:
    """Run one training stage (joins the torchrun process group when WORLD_SIZE > 1)."""
    info = init_distributed(config.device)
    try:
        return Trainer(config, resume, progress, info, say).run()
    finally:
        shutdown_distributed(info)
