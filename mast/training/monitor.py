"""What a run reports: ``metrics.jsonl``, TensorBoard scalars, and the progress bar.

``DIR/metrics.jsonl``: one JSON object per line, flushed as it is written. Training lines hold
``step`` (steps completed), ``loss`` (this step's loss, mean over processes), ``lr`` (the LR the
step used), ``samples_per_s`` (global batch / wall time of the step, data wait included),
``data_s`` (seconds waiting for the batch), ``step_s`` (seconds of forward, backward and update),
``time`` (seconds since the run started). Validation lines hold ``step`` and ``val_jf``,
``val_j``, ``val_f`` (fractions) and ``val_s``. A resumed run first drops the lines of steps after
its checkpoint (they are done again).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

METRICS_FILE = "metrics.jsonl"


def truncate_metrics(path: Path, last_step: int) -> None:
    """Keep only the lines of ``path`` with ``step <= last_step`` (and unparsable-free)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:  # a line cut by a kill
            continue
        if int(record.get("step", 0)) <= last_step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl file (lines that do not parse are skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLog:
    """Appends JSON lines to ``DIR/metrics.jsonl`` and mirrors the numbers to TensorBoard."""

    def __init__(self, out: Path, start_step: int, tensorboard: bool = True) -> None:
        self.path = out / METRICS_FILE
        truncate_metrics(self.path, start_step)
        self.file = open(self.path, "a", encoding="utf-8")
        self.writer = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed: the JSON log is enough
                pass
            else:
                self.writer = SummaryWriter(log_dir=str(out / "tb"), purge_step=start_step + 1)

    def write(self, record: dict[str, Any]) -> None:
        """One line, flushed; each numeric field except ``step`` also as a TensorBoard scalar."""
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    group = "val" if key.startswith("val_") else "train"
                    self.writer.add_scalar(f"{group}/{key}", value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


class TrainProgress:
    """Progress on stderr: a rich bar (steps, loss, lr, it/s, elapsed, remaining) on a terminal;
    elsewhere (a log file) one plain line every ``line_every_s`` seconds and at the last step."""

    def __init__(self, total: int, start: int, enabled: bool = True, line_every_s: float = 30.0) -> None:
        self.enabled, self.total, self.line_every_s = enabled, total, line_every_s
        self.console = Console(stderr=True)
        self.live = enabled and self.console.is_terminal
        self.last_line = time.perf_counter()
        if self.live:
            self.bar = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[rate]} it/s"),
                                TimeElapsedColumn(), TimeRemainingColumn(), console=self.console)
            self.task = self.bar.add_task("train", total=total, completed=start, loss="-", lr="-", rate="-")

    def __enter__(self) -> "TrainProgress":
        if self.live:
            self.bar.start()
        return self

    def update(self, step: int, loss: float, lr: float, steps_per_s: float) -> None:
        if self.live:
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", lr=f"{lr:.2e}",
                            rate=f"{steps_per_s:.2f}")
        elif self.enabled and (time.perf_counter() - self.last_line >= self.line_every_s or step == self.total):
            self.last_line = time.perf_counter()
            self.console.print(f"step {step}/{self.total}  loss {loss:.4f}  lr {lr:.2e}  {steps_per_s:.2f} it/s",
                               soft_wrap=True)

    def print(self, text: str) -> None:
        """A line above the bar (or on stderr without one)."""
        (self.bar.console if self.live else self.console).print(text, soft_wrap=True)

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.bar.stop()
