"""``mast-bench``: per-stage latency and throughput of the streaming tracker.

::

    mast-bench [--backend auto|torch|onnxruntime|tensorrt] [--device cpu|cuda] [--model PATH]
               [--size HxW] [--frames N] [--warmup W] [--clip DIR|FILE --mask PNG] [--threads T]
               [--json OUT]

Plays a clip (default: the bundled demo clip) as an endless stream — a frame folder back and forth
(0..n-1, n-2..0, 1..), so the motion stays continuous; a video from the start again at its end —
tracks W warm-up frames, then times N frames, each drawn as ``mast-run``'s window draws it (without
showing it). Stages, per frame, in milliseconds:

- ``decode``: reading the next frame (JPEG/video decoding);
- ``resize``: the frame to the working size (0 when the clip has that size);
- ``colour``: (torch backend) BGR -> normalised Lab + upload; onnxruntime/tensorrt have the Lab
  transform inside the encoder graph, so it is counted in ``encoder`` there;
- ``encoder``: the key encoder;
- ``attention``: the ROI memory read (all memory frames);
- ``postprocess``: upsampling + argmax, object-id mapping, the bank write, resize back to the frame;
- ``overlay``: the mask's colours blended into the frame and the ids drawn
  (:func:`mast.runtime.drawing.render`, as the window and ``--save-video``);
- ``window``: the window's text on a copy of the overlay (live fps, keys), not ``imshow``.

``host`` is everything but the encoder and the memory read (the loop around the model: the stages
above and the tracker's own bookkeeping), ``total`` the wall time of a whole frame; the table gives
the median and the 95th percentile of each and the fps of the median total (and the mean fps over
the N frames). "CPU ms" is the median CPU time of this process (all its threads) in the stage: on a
machine shared with other work it stays close to the unloaded figure while wall times stretch (each
system call, the clock's included, is a point where a busy machine's scheduler may switch away; with
``--threads 1`` the CPU figure estimates the wall time on an idle core). Stages are timed through the
tracker's ``timer`` hook (no result changes); on CUDA each stage ends with a device sync. Peak memory:
the process's peak RSS, and with torch on CUDA the peak allocated GPU memory.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import typer
from rich.table import Table

from mast.core.cli import BackendOpt, DeviceOpt, KeysOpt, PrecisionOpt, consoles, exit_on_error, parse_size, radius_option
from mast.core.errors import InputError
from mast.core.images import list_images, read_image
from mast.core.openmp import openmp_defaults
from mast.runtime import factory
from mast.runtime.backend import Backend
from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK
from mast.runtime.drawing import draw_status, render
from mast.runtime.sinks import WindowSink
from mast.runtime.stream import conform_mask, load_mask

STAGES = ("decode", "resize", "colour", "encoder", "attention", "postprocess", "overlay", "window")
MODEL_STAGES = ("encoder", "attention")   # the rest of a frame is the host's: the "host" row
TRACKER_STAGES = {"preprocess": "resize"}  # the tracker's timer names -> rows


# -- timing ----------------------------------------------------------------------------------------
class StageClock:
    """Per-frame stage durations in seconds, wall-clock and CPU (this process, all threads). Use an
    instance as a tracker ``timer``: ``clock(name)`` is a context manager adding the time spent
    inside it to stage ``name`` (the tracker's ``preprocess`` is the ``resize`` row: :data:`TRACKER_STAGES`).

    ``sync`` (optional) runs before every reading of the clock (e.g. ``torch.cuda.synchronize``).
    """

    def __init__(self, sync: Callable[[], None] | None = None) -> None:
        self.sync = sync or (lambda: None)
        self.frames: list[dict[str, float]] = []      # finished frames: stage -> wall s, plus "total"
        self.cpu_frames: list[dict[str, float]] = []  # the same in CPU seconds
        self.current: dict[str, float] = defaultdict(float)
        self.current_cpu: dict[str, float] = defaultdict(float)
        self._open: tuple[str, float, float] | None = None  # (stage, wall, cpu) at its start
        self._frame_start = self._now()

    @staticmethod
    def _now() -> tuple[float, float]:
        return time.perf_counter(), time.process_time()

    def _add(self, name: str, since: tuple[float, float]) -> tuple[float, float]:
        """Add the time from ``since`` to now to stage ``name``; returns now."""
        self.sync()
        now = self._now()
        self.current[name] += now[0] - since[0]
        self.current_cpu[name] += now[1] - since[1]
        return now

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.sync()
        name = TRACKER_STAGES.get(name, name)
        outer, self._open = self._open, (name, *self._now())
        try:
            yield
        finally:
            stage, *start = self._open
            self._add(stage, tuple(start))
            self._open = outer

    def charge_to(self, name: str) -> None:
        """Move the time spent so far in the open stage to stage ``name`` and restart the open
        stage's clock (splits a stage from inside: e.g. the Lab conversion out of ``encoder``)."""
        if self._open is not None:
            stage, *start = self._open
            self._open = (stage, *self._add(name, tuple(start)))

    def start_frame(self) -> None:
        self.current, self.current_cpu = defaultdict(float), defaultdict(float)
        self._frame_start = self._now()

    def end_frame(self) -> None:
        self._add("total", self._frame_start)
        self.frames.append(dict(self.current))
        self.cpu_frames.append(dict(self.current_cpu))


def split_torch_colour(backend: Backend, clock: StageClock) -> Callable[[], None]:
    """For the torch backend, charge the time before the encoder's forward (Lab + upload) to
    ``colour`` via a forward pre-hook; returns a function removing the hook."""
    if backend.name != "torch":
        return lambda: None
    handle = backend.encoder.register_forward_pre_hook(lambda module, args: clock.charge_to("colour"))
    return handle.remove


def draw_like_window(clock: StageClock, frame: np.ndarray, ids: np.ndarray, fps: float) -> np.ndarray:
    """What ``mast-run``'s window draws for ``frame`` ``uint8 [H, W, 3]`` and ``ids`` ``uint8 [H, W]``
    (:class:`mast.runtime.sinks.WindowSink`, without showing it), timed as ``overlay`` and ``window``;
    returns the image it would show."""
    with clock("overlay"):
        overlay = render(frame, ids)
    with clock("window"):
        return draw_status(overlay.copy(), f"{fps:.1f} fps", WindowSink.legend)


# -- the looped clip ----------------------------------------------------------------------------------
def clip_frames(clip: Path) -> Iterator[np.ndarray]:
    """An endless stream of BGR frames ``[H, W, 3]`` uint8 from ``clip``, decoded on every visit:
    a frame folder played back and forth, a video from the start again at its end."""
    if clip.is_dir():
        files = list_images(clip)
        if len(files) < 2:
            raise InputError(f"{clip} holds {len(files)} frame(s): a benchmark clip needs at least 2 (.jpg/.png)")
        order = list(range(len(files))) + list(range(len(files) - 2, 0, -1))
        while True:
            for i in order:
                yield read_image(files[i], "frame")
    else:
        yield from _looped_video(clip)


def _looped_video(path: Path) -> Iterator[np.ndarray]:
    if not path.is_file():
        raise InputError(f"clip not found: {path} (expected a frame folder or a video file)")
    while True:
        cap = cv2.VideoCapture(str(path))
        ok, frame = cap.read()
        if not ok:
            cap.release()
            raise InputError(f"cannot read video {path} (expected a video OpenCV/FFmpeg can decode)")
        while ok:
            yield frame
            ok, frame = cap.read()
        cap.release()


# -- results ------------------------------------------------------------------------------------------
@dataclass
class StageStats:
    """Wall-clock median and 95th percentile, and the median CPU time (all threads), ms per frame."""

    median_ms: float
    p95_ms: float
    cpu_median_ms: float


@dataclass
class BenchResult:
    """Everything ``--json`` writes. Times in milliseconds, memory in MiB."""

    backend: str
    size: list[int] | None
    radius: int                        # the attention window's radius (key pixels)
    frames: int
    warmup: int
    stages: dict[str, StageStats]
    host: StageStats                   # total minus encoder and attention, per frame
    total: StageStats
    fps_median: float
    fps_mean: float
    peak_rss_mib: float
    gpu_peak_mib: float | None
    device: dict[str, Any]
    clip: str
    command: str = field(default_factory=lambda: " ".join(["mast-bench", *sys.argv[1:]]))


def stats(wall: list[float], cpu: list[float]) -> StageStats:
    """Stats of per-frame seconds ``wall`` and ``cpu``."""
    ms, cpu_ms = np.asarray(wall, np.float64) * 1e3, np.asarray(cpu, np.float64) * 1e3
    return StageStats(round(float(np.median(ms)), 3), round(float(np.percentile(ms, 95)), 3),
                      round(float(np.median(cpu_ms)), 3))


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what the platform reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# environment variables that restrict a build below the CPU's instruction set: PyTorch's kernels,
# oneDNN's, the fused read's compiler flags (mast.core.attention_c)
ISA_VARIABLES = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MAST_ATTENTION_CFLAGS")


def cpu_isa() -> str:
    """The widest vector / matrix extension the CPU reports (``/proc/cpuinfo`` flags): AMX+AVX-512,
    AVX-512, AVX2, or ``?`` where the flags cannot be read."""
    try:
        flags = next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return "?"
    if not flags:
        return "?"
    return "AMX+AVX-512" if "amx_bf16" in flags else "AVX-512" if "avx512f" in flags else "AVX2"


def device_info(backend: Backend) -> dict[str, Any]:
    """The machine the figures come from: CPU model and cores, threads, GPU (torch on CUDA)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    info: dict[str, Any] = {"device": str(backend.device), "cpu": cpu_name(), "isa": cpu_isa(),
                            "cores": cores, "python": platform.python_version()}
    # builds restricted below what the CPU has (the AVX2 rows of BENCHMARKS.md): said with the figures
    restricted = {k: os.environ[k] for k in ISA_VARIABLES if os.environ.get(k)}
    if restricted:
        info["restricted"] = restricted
    if (read := memory_read_kind(backend)) is not None:
        info["read"] = read
    if backend.name == "torch":
        import torch  # noqa: PLC0415 - torch backend only: already imported
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.device(backend.device).type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(backend.device)
    return info


def memory_read_kind(backend: Backend) -> str | None:
    """Which implementation read the memory (after tracking): "fused C" (float32), "fused C, bf16
    pairs", "PyTorch", "Triton" (torch) or onnxruntime's "fused C" / "graph"; None when unknown."""
    bank = getattr(backend, "bank", None)
    fused = getattr(bank if backend.name == "torch" else backend, "fused", None)   # a FusedBank
    if fused is not None:
        return "fused C, bf16 pairs" if fused.pairs else "fused C"
    if backend.name == "torch":
        return None if bank is None else "PyTorch" if hasattr(bank, "values") else "Triton"
    if backend.name == "onnxruntime":
        return {"fused": "fused C", "graph": "graph"}.get(getattr(backend, "read_mode", None))
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, MiB (Linux reports KiB, macOS bytes)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


def _cuda_tools(backend: Backend) -> tuple[Callable[[], None] | None, Callable[[], float | None]]:
    """(sync, peak GPU MiB) for torch on CUDA; (None, lambda: None) otherwise."""
    if backend.name != "torch":
        return None, lambda: None
    import torch  # noqa: PLC0415
    if torch.device(backend.device).type != "cuda":
        return None, lambda: None
    torch.cuda.reset_peak_memory_stats(backend.device)
    return (lambda: torch.cuda.synchronize(backend.device),
            lambda: torch.cuda.max_memory_allocated(backend.device) / (1 << 20))


# -- the benchmark --------------------------------------------------------------------------------------
@dataclass
class BenchConfig:
    """What ``mast-bench`` measures (one field per option)."""

    backend: factory.BackendName = "auto"
    device: factory.DeviceName | None = None
    model: Path | None = None
    keys: factory.KeySource = "model"
    precision: factory.Precision = "fp32"
    radius: int | None = None              # attention window radius; None = the model's
    size: tuple[int, int] | None = None    # working size (H, W); None = the clip's frame size
    frames: int = 100
    warmup: int = 20
    clip: Path = DEMO_FRAMES
    mask: Path = DEMO_MASK
    threads: int | None = None             # torch CPU threads (torch backend); None = torch's default


def bench(cfg: BenchConfig, backend: Backend | None = None) -> BenchResult:
    """Warm up, then time ``cfg.frames`` frames stage by stage (see the module docstring)."""
    from mast.runtime.tracker import Tracker, working_size  # noqa: PLC0415

    backend = backend or factory.make_backend(cfg.backend, cfg.model, cfg.device, cfg.keys, cfg.precision, cfg.radius)
    if cfg.threads and backend.name == "torch":
        import torch  # noqa: PLC0415 - torch backend only: already imported
        torch.set_num_threads(cfg.threads)
    sync, gpu_peak = _cuda_tools(backend)
    clock = StageClock(sync)
    tracker = Tracker(backend, factory.model_config(backend),   # the model's stride and window (or --radius)
                      size=working_size(cfg.size, backend.input_size, cfg.model), timer=clock)
    frames = clip_frames(Path(cfg.clip))
    first = next(frames)
    mask, _ = conform_mask(load_mask(cfg.mask), first.shape[:2])
    tracker.start(first, mask)
    remove_hook = split_torch_colour(backend, clock)
    fps = 0.0
    try:
        for _ in range(cfg.warmup + cfg.frames):
            clock.start_frame()
            with clock("decode"):
                frame = next(frames)
            draw_like_window(clock, frame, tracker.step(frame), fps)
            clock.end_frame()
            fps = 1.0 / clock.frames[-1]["total"]
    finally:
        remove_hook()
    wall, cpu = clock.frames[cfg.warmup:], clock.cpu_frames[cfg.warmup:]
    totals = [f["total"] for f in wall]

    def host(frames: list[dict[str, float]]) -> list[float]:
        return [f["total"] - sum(f.get(s, 0.0) for s in MODEL_STAGES) for f in frames]

    return BenchResult(
        backend=factory.describe(backend), size=list(tracker.size) if tracker.size else list(first.shape[:2]),
        radius=tracker.config.attention.radius, frames=cfg.frames, warmup=cfg.warmup,
        stages={s: stats([f.get(s, 0.0) for f in wall], [f.get(s, 0.0) for f in cpu]) for s in STAGES},
        host=stats(host(wall), host(cpu)), total=stats(totals, [f["total"] for f in cpu]),
        fps_median=round(1.0 / float(np.median(totals)), 3),
        fps_mean=round(len(totals) / float(np.sum(totals)), 3), peak_rss_mib=round(peak_rss_mib(), 1),
        gpu_peak_mib=None if gpu_peak() is None else round(gpu_peak(), 1), device=device_info(backend),
        clip=str(cfg.clip))


def result_table(result: BenchResult) -> Table:
    """The per-stage table: wall median and p95, CPU median (ms), each stage's share of the median total."""
    h, w = result.size
    table = Table(title=f"mast-bench: {result.backend}, {h}x{w}, {result.frames} frames after "
                        f"{result.warmup} warm-up", title_justify="left", min_width=60)
    for name in ("stage", "median ms", "p95 ms", "CPU ms", "share"):
        table.add_column(name, justify="left" if name == "stage" else "right")
    total = result.total.median_ms or 1.0
    for name, s in result.stages.items():
        table.add_row(name, f"{s.median_ms:.1f}", f"{s.p95_ms:.1f}", f"{s.cpu_median_ms:.1f}",
                      f"{100 * s.median_ms / total:.0f} %")
    t = result.host
    table.add_row("host (all but encoder, attention)", f"{t.median_ms:.1f}", f"{t.p95_ms:.1f}",
                  f"{t.cpu_median_ms:.1f}", f"{100 * t.median_ms / total:.0f} %", style="bold")
    t = result.total
    table.add_row("total", f"{t.median_ms:.1f}", f"{t.p95_ms:.1f}", f"{t.cpu_median_ms:.1f}", "", style="bold")
    return table


def result_lines(result: BenchResult) -> list[str]:
    d = result.device
    gpu = f", GPU peak {result.gpu_peak_mib:.0f} MiB ({d.get('gpu')})" if result.gpu_peak_mib is not None else ""
    threads = f", torch threads {d['torch_threads']}" if "torch_threads" in d else ""
    return [f"fps: {result.fps_median:.2f} (median frame), {result.fps_mean:.2f} (mean over {result.frames} frames)",
            f"attention window radius {result.radius}, peak RSS {result.peak_rss_mib:.0f} MiB{gpu}",
            f"device {d['device']}: {d['cpu']} ({d.get('isa', '?')}), {d['cores']} core(s){threads}"
            + (f", memory read: {d['read']}" if "read" in d else "")
            + "".join(f", {k}={v}" for k, v in d.get("restricted", {}).items())]


# -- command line ------------------------------------------------------------------------------------
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False,
                  help="Per-stage latency of the streaming tracker on a looped clip.")


@app.command()
def cli(
    backend: BackendOpt = typer.Option(BackendOpt.auto, "--backend", help="auto, torch, onnxruntime or tensorrt."),
    device: Optional[DeviceOpt] = typer.Option(None, "--device", help="cpu or cuda (default: what auto finds)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint .pt or export folder. Default: the shipped weights (torch: an untrained encoder of the same architecture while none ship)."),
    keys: Optional[KeysOpt] = typer.Option(None, "--keys", help="torch only: model, lab or random keys."),
    precision: PrecisionOpt = typer.Option(PrecisionOpt.fp32, "--precision", help="torch: encoder precision: fp32, bf16 or fp16 (CUDA). onnxruntime: bf16 reads the memory in bf16 (AVX512-BF16 CPUs)."),
    size: Optional[str] = typer.Option(None, "--size", help="Working size HxW, e.g. 240x427 (default: the clip's)."),
    radius: Optional[int] = radius_option(),
    frames: int = typer.Option(100, "--frames", min=1, help="Frames timed after the warm-up."),
    warmup: int = typer.Option(20, "--warmup", min=0, help="Frames tracked before timing (>= 16 reaches the steady state with ROI localisation)."),
    clip: Path = typer.Option(DEMO_FRAMES, "--clip", help="Frame folder (played back and forth) or video (looped). Default: the bundled clip."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="First-frame mask of --clip (default: the bundled clip's)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="torch only: CPU threads (default: torch's, = cores)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Also write the figures as JSON here."),
) -> None:
    """Warm up, then time N frames: median/p95 per stage, fps, peak memory, device."""
    console, err = consoles()
    with exit_on_error(err):
        if clip != DEMO_FRAMES and mask is None:
            raise InputError("--clip needs --mask PNG (the objects of its first frame)")
        cfg = BenchConfig(backend=backend.value, device=device.value if device else None, model=model,
                          keys=keys.value if keys else "model", precision=precision.value, radius=radius,
                          size=parse_size(size), frames=frames, warmup=warmup, clip=clip, mask=mask or DEMO_MASK,
                          threads=threads)
        cfg = _default_keys(cfg, explicit=keys is not None, say=console.print)
        if json_out is not None:
            _check_writable(json_out)
        result = bench(cfg)
        if json_out is not None:
            _write_json(json_out, result)
    console.print(result_table(result))
    for line in result_lines(result):
        console.print(line)
    if json_out is not None:
        console.print(f"wrote {json_out}")


def _default_keys(cfg: BenchConfig, explicit: bool, say: Callable[[str], None]) -> BenchConfig:
    """Without weights (none given, none shipped) the torch benchmark times an untrained encoder of
    the same architecture: the same operations, so the same speed."""
    if explicit or cfg.model is not None or cfg.backend not in ("auto", "torch"):
        return cfg
    if factory.shipped_weights() is None:
        say("note: no shipped weights yet: timing an untrained encoder of the same architecture (--keys random)")
        cfg.keys = "random"
    return cfg


def _check_writable(path: Path) -> None:
    """InputError now (before a long run) when ``path`` cannot be written."""
    if path.is_dir():
        raise InputError(f"--json {path} is a folder (expected a file path such as bench.json)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create {path.parent}: {exc.strerror or exc} (expected a writable folder)") from exc
    if not os.access(path.parent, os.W_OK):
        raise InputError(f"{path.parent} is not writable (expected a writable folder for --json)")


def _write_json(path: Path, result: BenchResult) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(result), indent=2) + "\n")
    except OSError as exc:
        raise InputError(f"cannot write {path}: {exc.strerror or exc} (expected a writable file path)") from exc


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``mast-bench``); the OpenMP defaults of :mod:`mast.core.openmp` first (torch is not loaded yet)."""
    openmp_defaults()
    app(args=argv, prog_name="mast-bench")


if __name__ == "__main__":  # pragma: no cover
    main()
