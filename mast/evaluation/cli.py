"""``mast-eval``: track DAVIS sequences and/or score them with the official DAVIS measures.

Two modes:

- ``mast-eval --davis ROOT --results DIR``: score existing predictions ``DIR/<seq>/<frame>.png``
  (no torch needed).
- ``mast-eval --davis ROOT --out DIR [--checkpoint FILE] [--keys model|lab|random] [--device cpu|cuda]
  [--size HxW] [--precision fp32|bf16|fp16] [--label-offset 0..3]``: track every selected sequence from its first mask into ``DIR``, then score ``DIR``.

``--sequences`` selects sequences; all of these work::

    --sequences blackswan dog camel
    --sequences blackswan,dog,camel
    --sequences blackswan --sequences dog

The CSVs (``global_results.csv``, ``per-sequence_results.csv``; fractions, ``%.3f`` as the official
code) go to ``--csv-dir``, by default the scored results folder. The summary table prints percentages.
"""
from __future__ import annotations

import inspect
import re
import time
from pathlib import Path
from typing import Any, List, Optional

import typer
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from mast.core.cli import DeviceOpt, KeysOpt, PrecisionOpt, exit_on_error, parse_size, radius_option
from mast.core.errors import InputError, MastError
from mast.core.openmp import openmp_defaults
from mast.evaluation.davis import GLOBAL_COLUMNS, DavisDataset, EvaluationResult, evaluate_semisupervised, write_csvs

__all__ = ["app", "main", "parse_size", "split_sequences"]


app = typer.Typer(
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Score DAVIS results with the official J and F measures, or track DAVIS sequences and score them.",
)


def split_sequences(values: Optional[List[str]]) -> list[str]:
    """Flatten ``--sequences`` values: each may hold several names separated by commas or spaces."""
    names: list[str] = []
    for value in values or []:
        names.extend(n for n in re.split(r"[,\s]+", value) if n)
    return list(dict.fromkeys(names))


def _pct(value: float) -> str:
    return f"{100.0 * value:.1f}"


def _summary_table(result: EvaluationResult, seconds_per_frame: dict[str, float] | None) -> Table:
    """Global row + one row per object, figures as percentages with one decimal."""
    timed = bool(seconds_per_frame)
    table = Table(
        title="DAVIS semi-supervised (official J & F), %",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    longest = max([len("Sequence"), *(len(o.name) for o in result.objects)])
    table.add_column("Sequence", style="bold", no_wrap=True, min_width=longest)
    for column in GLOBAL_COLUMNS:
        # two-line headers ("J" over "Mean") keep the table within an 80-column terminal
        table.add_column(column.replace("-", "\n"), justify="right", no_wrap=True)
    if timed:
        table.add_column("s/frame", justify="right")
    figures = result.global_figures()
    row = ["Global", *[_pct(figures[c]) for c in GLOBAL_COLUMNS]]
    if timed:
        mean_spf = sum(seconds_per_frame.values()) / len(seconds_per_frame)
        row.append(f"{mean_spf:.3f}")
    table.add_row(*row, style="bold green", end_section=True)
    for obj in result.objects:
        (jm, jr, jd), (fm, fr, fd) = obj.j_stats, obj.f_stats
        row = [obj.name, _pct(obj.jf_mean), _pct(jm), _pct(jr), _pct(jd), _pct(fm), _pct(fr), _pct(fd)]
        if timed:
            spf = seconds_per_frame.get(obj.sequence)
            row.append("" if spf is None else f"{spf:.3f}")
        table.add_row(*row)
    return table


class _TrackProgress:
    """Progress handle given to the tracker.

    Call it as ``progress(sequence, done_frames, total_frames)``; any other attribute is the rich
    :class:`~rich.progress.Progress` it wraps (``add_task``, ``update``, ``advance``, ...).
    """

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._tasks: dict[str, Any] = {}

    def __call__(self, sequence: str, done: int, total: int | None = None) -> None:
        task = self._tasks.get(sequence)
        if task is None:
            task = self._tasks[sequence] = self._progress.add_task(f"tracking {sequence}", total=total)
        self._progress.update(task, completed=done, total=total)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._progress, name)


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _track(
    console: Console,
    root: Path,
    sequences: list[str],
    out_dir: Path,
    checkpoint: Optional[Path],
    keys: str,
    device: str,
    size: Optional[tuple[int, int]],
    precision: Optional[str] = None,
    label_offset: Optional[int] = None,
    radius: Optional[int] = None,
) -> dict[str, float]:
    """Run the tracker over ``sequences`` into ``out_dir`` (torch is imported only here).
    ``precision``: the torch encoder's (None: fp32); ``label_offset``: the tracker's (None: the
    model's, as its key stride and window); ``radius``: the attention window's (None: the model's)."""
    try:
        from mast.evaluation.track import track_davis  # lazy: scoring alone must not import torch
    except ImportError as exc:
        raise MastError(
            f"tracking is unavailable: {exc} (install the training extra: pip install 'mast-tracker[train]'; "
            f"or score existing masks with --results)"
        ) from exc
    if checkpoint is not None and not checkpoint.is_file():
        raise InputError(f"checkpoint not found: {checkpoint} (give a MAST checkpoint file to --checkpoint)")
    kwargs: dict[str, Any] = {}
    if size is not None:
        if "size" not in inspect.signature(track_davis).parameters:
            raise InputError("--size is not supported by this tracker version (leave it out to track at full size)")
        kwargs["size"] = size
    if precision is not None:
        kwargs["precision"] = precision
    if label_offset is not None:
        kwargs["label_offset"] = label_offset
    if radius is not None:
        kwargs["radius"] = radius
    out_dir.mkdir(parents=True, exist_ok=True)
    with _progress(console) as progress:
        return track_davis(root, sequences, out_dir, checkpoint, keys, device, _TrackProgress(progress), **kwargs)


def _track_exported(console: Console, root: Path, sequences: list[str], out_dir: Path, model: Path,
                    backend: str, device: str, size: Optional[tuple[int, int]],
                    label_offset: Optional[int] = None, precision: Optional[str] = None,
                    radius: Optional[int] = None) -> dict[str, float]:
    """Track with an exported model folder (``--model DIR --backend onnxruntime``): torch-free."""
    from mast.evaluation.track import track_davis_backend  # noqa: PLC0415 - lazy: only this mode needs the runtime backends

    if not model.is_dir():
        raise InputError(f"--model {model} is not a folder (give the folder mast-export wrote)")
    out_dir.mkdir(parents=True, exist_ok=True)
    with _progress(console) as progress:
        return track_davis_backend(root, sequences, out_dir, model, backend, device, _TrackProgress(progress), size,
                                   label_offset=label_offset, precision=precision, radius=radius)


def _score(
    console: Console, dataset: DavisDataset, results: Path, sequences: list[str]
) -> EvaluationResult:
    with _progress(console) as progress:
        task = progress.add_task("scoring", total=len(sequences))

        def advance(seq: str) -> None:
            progress.update(task, advance=1, description=f"scoring ({seq})")

        return evaluate_semisupervised(dataset, results, sequences, progress=advance)


@app.command(context_settings={"allow_extra_args": True})
def evaluate(
    ctx: typer.Context,
    davis: Path = typer.Option(..., "--davis", help="DAVIS root holding JPEGImages/480p/ and Annotations/480p/."),
    results: Optional[Path] = typer.Option(
        None, "--results", help="Score these existing predictions (<DIR>/<seq>/<frame>.png) instead of tracking."
    ),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="MAST checkpoint to track with."),
    keys: Optional[KeysOpt] = typer.Option(None, "--keys", help="Keys to match: model (default), lab or random."),
    out: Optional[Path] = typer.Option(None, "--out", help="Where tracked masks are written (tracking mode)."),
    csv_dir: Optional[Path] = typer.Option(
        None, "--csv-dir", help="Where the CSVs go (default: the scored results folder)."
    ),
    sequences: Optional[List[str]] = typer.Option(
        None,
        "--sequences",
        help="Sequences to use (default all): '--sequences a b c', '--sequences a,b,c' or repeated.",
    ),
    device: Optional[DeviceOpt] = typer.Option(None, "--device", help="Tracking device: cpu (default) or cuda."),
    size: Optional[str] = typer.Option(None, "--size", help="Track at HxW (downscaled), e.g. 240x427."),
    precision: Optional[PrecisionOpt] = typer.Option(
        None, "--precision", help="Encoder precision when tracking with a checkpoint: fp32 (default), bf16 "
        "(fast on AVX-512/AMX CPUs) or fp16 (CUDA); with --model on onnxruntime, bf16 reads the memory with bf16 "
        "dot products (AVX512-BF16 CPUs)."
    ),
    model: Optional[Path] = typer.Option(None, "--model", help="Exported model folder (mast-export) to track with."),
    backend: str = typer.Option("onnxruntime", "--backend", help="Backend for --model: onnxruntime (default) or tensorrt."),
    label_offset: Optional[int] = typer.Option(
        None, "--label-offset", min=0, max=7, help="Pixel of each stride cell whose label the memory stores: by "
        "default half a pixel before the cell centre (1 at the key stride 4, 3 at stride 8: the model's), or 0, the "
        "published MAST code (its masks drift 1.5 px per frame at stride 4; what the parity tests reproduce)."
    ),
    radius: Optional[int] = radius_option(),
) -> None:
    """Score DAVIS predictions (--results), or track the sequences into --out and score them."""
    console = Console()
    err = Console(stderr=True)
    with exit_on_error(err):
        names = split_sequences(sequences)
        if ctx.args:
            if sequences is None:
                raise InputError(
                    f"unexpected argument(s) {' '.join(ctx.args)}: sequence names go after --sequences"
                )
            names.extend(n for n in split_sequences(ctx.args) if n not in names)
        dataset = DavisDataset(davis)
        chosen = dataset.select(names)

        seconds_per_frame: dict[str, float] | None = None
        if results is not None:
            given = [
                flag
                for flag, value in (("--checkpoint", checkpoint), ("--out", out), ("--keys", keys),
                                    ("--device", device), ("--size", size), ("--precision", precision),
                                    ("--label-offset", label_offset), ("--radius", radius))
                if value is not None
            ]
            if given:
                raise InputError(
                    f"{', '.join(given)} only apply when tracking, not with --results: "
                    f"drop them, or drop --results to track"
                )
            scored_dir = results
        else:
            if out is None:
                raise InputError("tracking needs --out DIR for the masks (or give --results DIR to score existing ones)")
            start = time.perf_counter()
            if model is not None:
                if checkpoint is not None or keys is not None:
                    raise InputError("--model (an exported folder) and --checkpoint/--keys exclude each other: give one")
                if precision is not None and not (backend == "onnxruntime" and precision.value == "bf16"):
                    raise InputError("--precision applies when tracking with a checkpoint (torch), and bf16 to "
                                     "onnxruntime's memory read: an exported model keeps the precision it was "
                                     "exported with; drop --precision")
                seconds_per_frame = _track_exported(console, dataset.root, chosen, out, model, backend,
                                                    (device or DeviceOpt.cpu).value, parse_size(size), label_offset,
                                                    precision.value if precision is not None else None, radius)
            else:
                seconds_per_frame = _track(
                    console,
                    dataset.root,
                    chosen,
                    out,
                    checkpoint,
                    (keys or KeysOpt.model).value,
                    (device or DeviceOpt.cpu).value,
                    parse_size(size),
                    precision.value if precision is not None else None,
                    label_offset,
                    radius,
                )
            console.print(f"tracked {len(chosen)} sequence(s) into {out} in {time.perf_counter() - start:.1f} s")
            scored_dir = out

        start = time.perf_counter()
        result = _score(console, dataset, scored_dir, chosen)
        elapsed = time.perf_counter() - start
        global_csv, seq_csv = write_csvs(csv_dir or scored_dir, result)

    console.print(_summary_table(result, seconds_per_frame))
    console.print(f"scored {len(result.objects)} object(s) in {len(chosen)} sequence(s) in {elapsed:.1f} s")
    console.print(f"wrote {global_csv} and {seq_csv}")


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``mast-eval``); the OpenMP defaults of :mod:`mast.core.openmp` first (torch is not loaded yet)."""
    openmp_defaults()
    app(args=argv, prog_name="mast-eval")


if __name__ == "__main__":  # pragma: no cover
    main()
