"""``mast-export``: write ``encoder.onnx``, ``memory_read.onnx``, ``mast_trt.onnx`` and
``metadata.json``, check parity, and with ``--engine`` build the TensorRT engine ``mast.engine``.

::

    mast-export [--checkpoint FILE] --out DIR [--onnx] [--engine] [--height H --width W]
                [--precision fp32|fp16|int8] [--calibration DIR] [--calibration-frames N]
                [--opset N] [--max-objects N] [--parity-frames N]
                [--engine-precision fp16|fp32] [--workspace MIB] [--timing-cache FILE]

The models are written to a temporary folder beside DIR, checked against the torch reference on
real frames (the bundled demo clip unless ``--parity-clip``), and moved into DIR only when the check
passes: a failed check prints its figures, exits 1 and leaves DIR as it was. ``--engine`` builds
``mast.engine`` (+ ``engine.json``) from ``mast_trt.onnx`` there too and checks it against
onnxruntime; it needs TensorRT and a CUDA GPU (``pip install 'mast-tracker[gpu]'``), else one line,
exit 2. Bad input (missing checkpoint, bad size, opset, calibration folder) is one line, exit 2.

``--precision int8`` quantises ``encoder.onnx`` statically (QDQ, :mod:`mast.export.quantize`),
calibrated on training frames (``--calibration``, default ``../shared/data/raw-videos/frames``);
its parity check allows int8's key error (:data:`mast.export.parity.INT8_TOLERANCES`). Not a
default: on the shipped weights it tracks as fp32 does but saves only ~1 ms of encoder at 240x427,
whose time is in the Lab front (docs/RESULTS.md, "int8 encoder").
"""
from __future__ import annotations

import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Callable, Iterator, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from mast.core.cli import EXIT_INPUT, EXIT_STOPPED, print_error, radius_option
from mast.core.config import ModelConfig
from mast.core.engine_metadata import ENGINE_FILE, ENGINE_METADATA_FILE
from mast.core.errors import InputError, MastError
from mast.core.metadata import ENCODER_FILE, MEMORY_READ_FILE, METADATA_FILE, TRT_ONNX_FILE, ModelMetadata, file_hash
from mast.export.quantize import CalibrationConfig, calibration_frames

EXIT_PARITY = EXIT_STOPPED  # the parity check failed: nothing written
ENGINE_PROBS_TOL = {"fp32": 1e-3, "fp16": 5e-2}   # engine vs onnxruntime, max abs of the distribution
MAX_OPSET = 20  # the TorchScript-based exporter's limit


class OnnxPrecisionOpt(str, Enum):
    """Precision of ``encoder.onnx``."""

    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


class EnginePrecisionOpt(str, Enum):
    """Precision of the TensorRT engine."""

    fp16 = "fp16"
    fp32 = "fp32"


class Keys(str, Enum):
    """Encoder weights: the checkpoint (or shipped weights), or a random encoder (tests, benchmarks)."""

    model = "model"
    random = "random"


class ParityFailed(Exception):
    """The exported model differs from the torch reference beyond tolerance."""


@dataclass(frozen=True)
class Request:
    """A validated ``mast-export`` command line."""

    out: Path
    checkpoint: Optional[Path]
    keys: Keys
    height: int
    width: int
    precision: OnnxPrecisionOpt
    opset: int
    max_objects: int
    parity_frames: int
    parity_clip: Optional[Path]
    parity_mask: Optional[Path]
    engine: bool = False
    engine_precision: EnginePrecisionOpt = EnginePrecisionOpt.fp16
    workspace_mb: int = 4096
    timing_cache: Optional[Path] = None
    calibration: Optional[Path] = None
    calibration_frames: int = CalibrationConfig.frames
    radius: Optional[int] = None        # attention window radius; None = the one of the key stride


app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False,
                  help="Export the MAST tracker to ONNX (encoder.onnx, memory_read.onnx, metadata.json) "
                       "and check it against the torch reference.")


def validate(req: Request, onnx_flag: bool) -> None:
    """InputError (one line) for a command line that cannot be exported; DependencyError (one line)
    for ``--engine`` without TensorRT or a GPU."""
    if not onnx_flag and not req.engine:
        raise InputError("nothing to export: --no-onnx and no --engine")
    if min(req.height, req.width) < 16:
        raise InputError(f"--height {req.height} --width {req.width}: frames must be at least 16x16 pixels")
    if not 17 <= req.opset <= MAX_OPSET:
        raise InputError(f"--opset {req.opset}: supported opsets are 17..{MAX_OPSET}")
    if not 1 <= req.max_objects <= 255:
        raise InputError(f"--max-objects {req.max_objects}: expected 1..255")
    if req.checkpoint is not None and not req.checkpoint.is_file():
        raise InputError(f"checkpoint not found: {req.checkpoint} (give a .pt file written by mast-train)")
    if req.precision == OnnxPrecisionOpt.int8:
        calibration_frames(calibration_config(req))   # a missing or empty folder: one line, before tracing
    if req.out.exists() and not req.out.is_dir():
        raise InputError(f"--out {req.out} is a file: give a folder")
    blocker = next((p for p in req.out.absolute().parents if p.exists()), None)
    if blocker is not None and not blocker.is_dir():
        raise InputError(f"--out {req.out}: {blocker} is a file, not a folder: give a folder path")
    if req.engine:
        if req.workspace_mb < 1:
            raise InputError(f"--workspace {req.workspace_mb}: give the TensorRT workspace in MiB (>= 1)")
        from mast.plugins.gpu_env import require_tensorrt_gpu  # noqa: PLC0415 - only for --engine

        require_tensorrt_gpu()


def calibration_config(req: Request):
    """The int8 calibration of ``req`` (:class:`mast.export.quantize.CalibrationConfig`)."""
    return CalibrationConfig(root=req.calibration, frames=req.calibration_frames)


def load_encoder(req: Request):
    """The encoder to export and a (name, hash) pair identifying its weights."""
    from mast.core.model import default_checkpoint, key_encoder  # noqa: PLC0415

    if req.keys == Keys.random:
        return key_encoder("random"), ("random", "random-seed-0")
    path = req.checkpoint or default_checkpoint()
    if path is None:
        raise InputError("no --checkpoint given and no shipped weights in this package (mast/core/weights/mast.pt): "
                         "pass --checkpoint FILE from mast-train (or --keys random for a test export)")
    return key_encoder("model", path), (Path(path).name, file_hash(path))


def export(req: Request, console: Console) -> Path:
    """Export into a temporary folder, check parity, move the files into ``req.out``."""
    from mast.export.onnx_export import ExportConfig, write_metadata, write_models  # noqa: PLC0415
    from mast.export.parity import ParityConfig, check_parity  # noqa: PLC0415

    encoder, (name, digest) = load_encoder(req)
    # the checkpoint's architecture: key channels, key stride (and the attention radius that goes with
    # it, unless --radius): recorded in the metadata, checked at load
    model = ModelConfig.for_stride(getattr(encoder, "stride", ModelConfig.stride), radius=req.radius,
                                   key_dim=getattr(encoder, "key_dim", ModelConfig.key_dim))
    cfg = ExportConfig(req.height, req.width, req.max_objects, req.opset, req.precision.value, model,
                       calibration_config(req))
    tmp = req.out.parent / f".{req.out.name}.export-{os.getpid()}"
    try:
        start = time.perf_counter()
        console.print(f"exporting {req.height}x{req.width} ({cfg.precision}, opset {req.opset}, "
                      f"up to {req.max_objects} objects) from {name} ...")
        with calibration_progress(console, cfg) as progress:
            meta = write_models(tmp, encoder, cfg, name, digest, progress)
        console.print(f"  traced and written in {time.perf_counter() - start:.1f} s")
        if req.parity_frames > 0:
            pcfg = ParityConfig(frames=req.parity_frames, clip=req.parity_clip, mask=req.parity_mask)
            console.print(f"checking parity with the torch reference ({req.parity_frames} frames) ...")
            report = check_parity(tmp, encoder, pcfg, model)
            console.print(parity_table(report))
            failures = report.failures(pcfg, cfg.precision)
            if failures:
                raise ParityFailed("; ".join(failures))
            meta = replace(meta, parity=report.to_dict())
            write_metadata(tmp, meta)
        else:
            console.print(Text("parity not checked (--parity-frames 0)", style="yellow"))
        if req.engine:
            build_and_check_engine(tmp, meta, req, console)
        move_into(tmp, req.out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return req.out


@contextmanager
def calibration_progress(console: Console, cfg) -> Iterator[Optional[Callable[[int], None]]]:
    """A progress bar over the int8 calibration frames (None for float exports)."""
    if cfg.precision != "int8":
        yield None
        return
    # the bar writes to the stream stdout is now: calibration silences onnxruntime's prints on stdout
    bar_console = Console(file=console.file, highlight=False)
    with Progress(TextColumn("  calibrating int8 ranges"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=bar_console, transient=True) as bar:
        task = bar.add_task("calibrate", total=cfg.calibration.frames)
        yield lambda done: bar.update(task, completed=done)
    console.print(f"  int8 ranges calibrated on {cfg.calibration.frames} frames of {cfg.calibration.folder}")


def build_and_check_engine(tmp: Path, meta: ModelMetadata, req: Request, console: Console) -> None:
    """Build ``mast.engine`` in ``tmp``, compare it with onnxruntime, record the figures."""
    from mast.export.trt_engine import TrtBuildConfig, build_engine, engine_parity  # noqa: PLC0415 - TensorRT
    from mast.core.engine_metadata import read_engine_metadata, write_engine_metadata  # noqa: PLC0415

    precision = req.engine_precision.value
    build_engine(tmp, meta, TrtBuildConfig(precision, req.workspace_mb, req.timing_cache), console.print)
    console.print("checking the engine against onnxruntime (same frame and bank) ...")
    parity = engine_parity(tmp)
    console.print(f"  key max abs error {parity.key_max_abs:.2e}, distribution max abs error {parity.probs_max_abs:.2e}")
    if parity.probs_max_abs > ENGINE_PROBS_TOL[precision]:
        raise ParityFailed(f"engine distribution max abs error {parity.probs_max_abs:.2e} > "
                           f"{ENGINE_PROBS_TOL[precision]:.0e} ({precision})")
    write_engine_metadata(tmp, replace(read_engine_metadata(tmp), parity=parity.to_dict()))


def move_into(tmp: Path, out: Path) -> None:
    """Move the model files from ``tmp`` into ``out`` (the engine when built; metadata last)."""
    out.mkdir(parents=True, exist_ok=True)
    engine = [ENGINE_FILE, ENGINE_METADATA_FILE] if (tmp / ENGINE_FILE).is_file() else []
    for name in (ENCODER_FILE, MEMORY_READ_FILE, TRT_ONNX_FILE, *engine, METADATA_FILE):
        os.replace(tmp / name, out / name)


def parity_table(report) -> Table:
    """The parity figures as a small table."""
    table = Table(title="parity: onnxruntime vs torch", caption=f"frames: {report.clip}",
                  title_justify="left", caption_justify="left")
    table.add_column("check")
    table.add_column("figure", justify="right")
    table.add_row("key max abs error", f"{report.key_max_abs:.2e} (keys up to {report.key_scale:.1f})")
    table.add_row(f"memory read, d={list(report.read_distances)}",
                  f"max {report.read_max_abs:.2e}, 99.9% {report.read_p999:.2e}")
    table.add_row(f"mask IoU over {report.frames} frames", f"mean {report.mask_iou_mean:.4f}, min {report.mask_iou_min:.4f}")
    return table


def summary(out: Path) -> str:
    names = [n for n in (ENCODER_FILE, MEMORY_READ_FILE, TRT_ONNX_FILE, ENGINE_FILE) if (out / n).is_file()]
    sizes = ", ".join(f"{n} ({(out / n).stat().st_size / 1e6:.1f} MB)" for n in names)
    return f"wrote {out}: {sizes}, {METADATA_FILE}"


@app.command()
def main_command(
    out: Path = typer.Option(..., "--out", help="Folder to write encoder.onnx, memory_read.onnx, metadata.json into."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Weights to export (default: the shipped weights)."),
    onnx_flag: bool = typer.Option(True, "--onnx/--no-onnx", help="Write the ONNX models (default; --engine writes them too: it is built from mast_trt.onnx)."),
    engine: bool = typer.Option(False, "--engine", help="Also build the TensorRT engine mast.engine (needs TensorRT and a CUDA GPU)."),
    height: int = typer.Option(480, "--height", help="Frame height the model takes (pixels)."),
    width: int = typer.Option(854, "--width", help="Frame width the model takes (pixels)."),
    precision: OnnxPrecisionOpt = typer.Option(OnnxPrecisionOpt.fp32, "--precision", help="encoder.onnx: fp32; fp16 convolutions; int8 (onnxruntime, static QDQ quantisation of the MobileNetV2 blocks calibrated on --calibration frames; not a default: J&F as fp32 but only ~1 ms faster at 240x427, docs/RESULTS.md). The memory read stays fp32."),
    fp16: bool = typer.Option(False, "--fp16", help="The same as --precision fp16."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="int8: training frames <seq>/*.jpg to calibrate on (default ../shared/data/raw-videos/frames; never an evaluation split)."),
    calibration_frames: int = typer.Option(CalibrationConfig.frames, "--calibration-frames", help="int8: frames to calibrate on, spread over the sequences (fixed seed)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (17..20)."),
    max_objects: int = typer.Option(15, "--max-objects", help="Most objects a mask may hold (label channels = N + 1)."),
    radius: Optional[int] = radius_option(),
    keys: Keys = typer.Option(Keys.model, "--keys", help="model: the checkpoint's encoder; random: an untrained one (tests)."),
    parity_frames: int = typer.Option(8, "--parity-frames", help="Frames propagated in the parity check (0: skip it)."),
    parity_clip: Optional[Path] = typer.Option(None, "--parity-clip", help="Frame folder for the parity check (default: bundled clip)."),
    parity_mask: Optional[Path] = typer.Option(None, "--parity-mask", help="First-frame mask of --parity-clip."),
    engine_precision: EnginePrecisionOpt = typer.Option(EnginePrecisionOpt.fp16, "--engine-precision", help="TensorRT engine precision."),
    workspace: int = typer.Option(4096, "--workspace", help="TensorRT builder workspace limit (MiB)."),
    timing_cache: Optional[Path] = typer.Option(None, "--timing-cache", help="TensorRT timing cache file (read if present, written after the build)."),
) -> None:
    """Export the tracker to ONNX and check it against the torch reference."""
    console, err = Console(highlight=False), Console(stderr=True, highlight=False)
    try:
        if fp16 and precision not in (OnnxPrecisionOpt.fp32, OnnxPrecisionOpt.fp16):
            raise InputError(f"--fp16 and --precision {precision.value}: give one precision")
        req = Request(out, checkpoint, keys, height, width, OnnxPrecisionOpt.fp16 if fp16 else precision, opset, max_objects,
                      parity_frames, parity_clip, parity_mask, engine, engine_precision, workspace, timing_cache,
                      calibration, calibration_frames, radius)
        validate(req, onnx_flag)
        export(req, console)
    except MastError as exc:
        print_error(err, exc)
        raise typer.Exit(code=EXIT_INPUT) from None
    except ParityFailed as exc:
        print_error(err, f"parity check failed, nothing written to {out}: {exc}")
        raise typer.Exit(code=EXIT_PARITY) from None
    console.print(summary(out))


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``mast-export``)."""
    app(args=argv, prog_name="mast-export")


if __name__ == "__main__":  # pragma: no cover
    main()
