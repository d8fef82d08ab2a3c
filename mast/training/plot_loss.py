"""The loss curve of a run as a PNG, from its ``metrics.jsonl`` (needs matplotlib: the train extra).

    python -m mast.training.plot_loss RUN_DIR_OR_METRICS [--out loss.png] [--smooth 25]

``mast-train`` writes ``DIR/loss.png`` itself at the end of a run when matplotlib is installed.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from mast.core.errors import InputError
from mast.training.monitor import METRICS_FILE, read_metrics


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` values: ``[N] -> [N]`` (the first ones over fewer)."""
    values = np.asarray(values, float)
    window = max(1, min(window, len(values)))
    sums = np.cumsum(np.concatenate([[0.0], values]))
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(0, idx - window)
    return (sums[idx] - sums[lo]) / (idx - lo)


def plot_loss(metrics: str | Path, out: str | Path, smooth: int = 25, title: str | None = None) -> Path:
    """Write the loss (raw and smoothed) against the step, and J&F when logged, to ``out`` (PNG);
    when the held-out loss is logged, a second panel shows it against the identity predictor.

    ``metrics``: a metrics.jsonl file or the run folder holding it. InputError without loss lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    path = Path(metrics)
    path = path / METRICS_FILE if path.is_dir() else path
    if not path.is_file():
        raise InputError(f"no metrics file at {path}: expected DIR/{METRICS_FILE} of a mast-train run")
    records = read_metrics(path)
    train = [r for r in records if "loss" in r]
    if not train:
        raise InputError(f"{path} holds no loss lines yet")
    steps = np.array([r["step"] for r in train], float)
    loss = np.array([r["loss"] for r in train], float)
    held_out = [r for r in records if "val_loss" in r]
    fig, axes = plt.subplots(2 if held_out else 1, 1, figsize=(8, 8 if held_out else 4.5), dpi=120, squeeze=False)
    ax = axes[0, 0]
    ax.plot(steps, loss, color="#9ecae1", linewidth=0.8, label="loss (per step)")
    ax.plot(steps, moving_average(loss, smooth), color="#08519c", linewidth=1.8, label=f"mean of {smooth} steps")
    ax.set_xlabel("step")
    ax.set_ylabel("Huber loss (x20 units)")
    ax.grid(alpha=0.3)
    val = [r for r in records if "val_jf" in r]
    if val:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in val], [100 * r["val_jf"] for r in val], "o-", color="#d95f0e", label="val J&F")
        ax2.set_ylabel("validation J&F (%)")
        ax2.legend(loc="upper right")
    ax.legend(loc="upper center" if val else "upper right")
    ax.set_title(title or f"MAST training loss ({path.parent.name})")
    if held_out:
        _plot_held_out(axes[1, 0], held_out)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out)
    plt.close(fig)
    return out


def _plot_held_out(ax, records: list[dict]) -> None:
    """Held-out reconstruction loss against the step, with the identity and zero predictors."""
    steps = [r["step"] for r in records]
    ax.plot(steps, [r["val_loss"] for r in records], "o-", color="#08519c", label="encoder (held-out frames)")
    ax.plot(steps, [r["val_identity"] for r in records], "s--", color="#d95f0e", label="identity (copy the reference)")
    ax.plot(steps, [r["val_zero"] for r in records], "^:", color="grey", label="zero (grey)")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out Huber loss (x20 units)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left")


def main(argv: Optional[list[str]] = None) -> None:
    """``python -m mast.training.plot_loss RUN [--out PNG] [--smooth N]``."""
    import typer
    from rich.console import Console

    def command(run: Path = typer.Argument(..., help="run folder or its metrics.jsonl"),
                out: Optional[Path] = typer.Option(None, "--out", help="PNG to write (default RUN/loss.png)"),
                smooth: int = typer.Option(25, min=1, help="moving-average window (steps)")) -> None:
        target = out or ((run if run.is_dir() else run.parent) / "loss.png")
        try:
            written = plot_loss(run, target, smooth)
        except InputError as exc:
            Console(stderr=True).print(f"[bold red]error: {exc}", soft_wrap=True)
            raise typer.Exit(2) from None
        Console().print(f"wrote {written}")

    app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False)
    app.command()(command)
    app(args=argv, prog_name="python -m mast.training.plot_loss")


if __name__ == "__main__":  # pragma: no cover
    main()
