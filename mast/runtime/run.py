"""``mast-run``: follow the objects of a mask through a camera, a video file or a frame folder.

::

    mast-run (--camera N | --video FILE | --frames DIR) (--mask PNG | --box X0,Y0,X1,Y1 ... | --select)
             [--mask-frame K] [--backend auto|torch|onnxruntime|tensorrt] [--device cpu|cuda]
             [--model PATH] [--size HxW|full] [--save-masks DIR] [--save-video FILE] [--save-json FILE]
             [--lost-fraction F] [--lost-frames N] [--reanchor-on-loss] [--no-display] [--max-frames N]
             [--server HOST:PORT --stream-id NAME [--token T]]   # a mast-serve tracks the frames (docs/SERVING.md)
    mast-run --demo            # the bundled clip; overlay video + masks into ./mast-demo/

Behaviour (also in ``--help``):

- **Window or headless.** With a display: a window with the overlay, the object ids and the live fps
  (q/Esc quit; space pauses to add, correct or remove objects on the paused frame, the keys shown on
  the image: :mod:`mast.runtime.edits`). Without one (``--no-display``, or none available): headless,
  the same outputs. No cv2 GUI function is called without a display.
- **Live sources never fall behind**: a camera (or ``--video FILE --simulate-live``) is read in a
  background thread and the tracker always takes the newest frame; stale frames are dropped and
  counted in the summary.
- **Working size**: ``--size HxW`` tracks at that size (masks come back at the frame's size); an
  exported model's size is its own. Without ``--size`` a file is tracked at its frames' size, and a
  live source on a CPU at 240 rows, its aspect kept (:func:`live_size`; a 640x480 camera at 240x320:
  24 fps instead of 8 with the torch backend on 2 AMD EPYC Zen 4 cores, ``mast-bench --size 240x320``
  and ``480x640``), since a camera is there to be followed at its rate; ``--size full`` tracks live
  frames at their own size.
- **Mask**: a palette PNG (ids kept) or a 0/255 PNG (id 1). ``--mask-frame K`` (file sources): the
  mask belongs to frame K (0-based position in the video / folder); frames before K are skipped.
- **Boxes instead of a mask**: ``--box`` (repeatable) segments the first frame with mast-mask's code
  (ids 1..n in box order); ``--select`` lets the user draw the boxes on the frozen first frame in a
  window and confirm the mask (the default for ``--camera`` without ``--mask``/``--box``; without a
  display: one line saying to use ``--box``).
- **JSON lines** (``--save-json``): one line per frame, COCO RLE per object
  (:func:`mast.runtime.sinks.frame_record`; :func:`mast.runtime.stream.iter_records` gives the same records in Python).
- **Lost objects**: an object under ``--lost-fraction`` of its anchored area for ``--lost-frames``
  frames is reported once per loss (a stderr line, ``"present": false`` in the JSON); the others are
  tracked on. ``--reanchor-on-loss``: :func:`mast.runtime.stream.reanchor_lost`.
- **Mask size policy**: a mask whose size differs from the frame's *with the same aspect ratio*
  (within 2 %, e.g. 853x480 for 854x480, or a 427x240 mask for 854x480 frames) is resized
  (nearest) with a printed warning; any other size is refused (exit code 2): it is most likely the
  mask of another video.
- **Errors** (missing/empty mask, unknown camera, unreadable video, unwritable output, no model) are
  one line on stderr, exit code 2, before any frame is processed. A camera that stops delivering
  frames (or an unreadable frame in a folder) ends the run with a message (exit 1); Ctrl-C stops after the current frame (a second one
  at once) with exit 130. In every case the outputs so far are flushed: masks written, video
  finalised and playable, and a summary (frames, fps, dropped, outputs) is printed.
- **Where the time goes**: the summary's fps is the rate of the frames after the first (the first
  makes the mask; window pauses left out), and a second line splits each of those frames into the
  tracker, waiting for the source, and the window and outputs (:class:`mast.runtime.stream.LoopTimes`).
"""
from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

import typer

from mast.core.cli import (EXIT_INTERRUPTED, BackendOpt, DeviceOpt, Interrupt, KeysOpt, PrecisionOpt, consoles,
                           exit_on_error, parse_size, radius_option)
from mast.core.errors import InputError
from mast.core.openmp import openmp_defaults
from mast.runtime import factory
from mast.runtime.api import connect_tracker, open_tracker
from mast.runtime.boxmask import Box, parse_box
from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK
from mast.runtime.edit_window import EditWindow
from mast.runtime.objects import LossConfig, ObjectMonitor
from mast.runtime.selection import require_display, select_mask
from mast.runtime.sinks import JsonLinesSink, MaskPngSink, Sink, VideoSink, display_available
from mast.runtime.sources import FrameSource, open_source
from mast.runtime.stream import FirstMask, RunSummary, first_mask, load_mask, to_stderr, track_stream
from mast.runtime.tracker import ObjectTracker, Tracker

DEMO_OUT = Path("mast-demo")


# -- configuration --------------------------------------------------------------------------------
@dataclass
class RunConfig:
    """What ``mast-run`` does (one field per option; see the module docstring). Exactly one of
    ``mask`` and ``boxes`` gives the objects."""

    mask: Path | None = None
    boxes: list[Box] = field(default_factory=list)   # --box: the first mask made by mast-mask's code
    select: bool = False                              # --select: boxes drawn on the frozen first frame
    camera: int | None = None
    video: Path | None = None
    frames: Path | None = None
    mask_frame: int = 0
    backend: factory.BackendName = "auto"
    device: factory.DeviceName | None = None
    model: Path | None = None
    keys: factory.KeySource = "model"
    precision: factory.Precision = "fp32"
    radius: int | None = None                # --radius: attention window radius; None = the model's
    # working size (H, W) in pixels; "full": each frame's own; None: the frame's own, or live_rows rows
    # for a live source on a CPU (live_size)
    size: tuple[int, int] | Literal["full"] | None = None
    live_rows: int = 240                      # a live source's working height on a CPU when size is None
    save_masks: Path | None = None
    save_video: Path | None = None
    save_json: Path | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    display: bool = True                      # False: --no-display
    max_frames: int | None = None             # frames processed at most (the mask frame included)
    simulate_live: bool = False               # a video file played like a camera (drops stale frames)
    server: str | None = None                 # --server HOST:PORT: a mast-serve tracks the frames
    stream_id: str | None = None              # --stream-id: this stream's name on the server
    token: str | None = None                  # --token / $MAST_TOKEN: the server's shared secret


# -- wiring ------------------------------------------------------------------------------------------
def open_input(cfg: RunConfig) -> FrameSource:
    """The source of ``cfg`` (InputError when it cannot be opened or the options do not fit it)."""
    options: dict[str, Any] = {"simulate_live": True} if cfg.simulate_live else {}
    if cfg.camera is None:
        options["prefetch"] = True   # files: the next frames decode while the tracker works (all kept)
    if cfg.simulate_live and cfg.video is None:
        raise InputError("--simulate-live applies to --video only (a camera is live already)")
    source = open_source(camera=cfg.camera, video=cfg.video, frames=cfg.frames, **options)
    if source.is_live and cfg.mask_frame:
        source.close()
        raise InputError("--mask-frame applies to video files and frame folders, not to live sources: "
                         "the mask is taken for the first frame captured")
    return source


def open_sinks(cfg: RunConfig, source: FrameSource, stack: ExitStack, say: Callable[[str], None],
               monitor: ObjectMonitor) -> list[Sink]:
    """The outputs of ``cfg`` (opened now so an unwritable path fails before any frame), closed by
    ``stack``; ``monitor`` gives the JSON lines their objects."""
    sinks: list[Sink] = []
    if cfg.save_json is not None:
        sinks.append(stack.enter_context(JsonLinesSink(cfg.save_json, monitor)))
    if cfg.save_masks is not None:
        sinks.append(stack.enter_context(MaskPngSink(cfg.save_masks, name_of=source.frame_name)))
    if cfg.save_video is not None:
        sinks.append(stack.enter_context(VideoSink(cfg.save_video, fps=source.fps)))
    if cfg.display and display_available():
        sinks.append(stack.enter_context(EditWindow(f"mast-run: {source.name}")))
    elif cfg.display:
        say("no display available: running headless")
    if not sinks:
        say("note: no window and no --save-masks/--save-video/--save-json: nothing is saved, only the summary is printed")
    return sinks


def live_size(frame_size: tuple[int, int] | None, rows: int) -> tuple[int, int] | None:
    """Working size (H, W) of live frames of ``frame_size`` (width, height in pixels) scaled to ``rows``
    rows, the aspect kept (width rounded): (240, 320) for 640x480 at 240 rows, (240, 427) for 1280x720.
    None when the frames are no taller than ``rows`` or their size is unknown."""
    if frame_size is None or frame_size[1] <= rows:
        return None
    width, height = frame_size
    return rows, max(1, round(rows * width / height))


def build_tracker(cfg: RunConfig, say: Callable[[str], None], source: FrameSource | None = None) -> ObjectTracker:
    """The tracker of ``cfg`` (:func:`mast.runtime.api.open_tracker`: torch only for the torch
    backend; ``--size`` against an exported model's size by :func:`mast.runtime.tracker.working_size`;
    a live ``source`` on a CPU without ``--size`` at ``cfg.live_rows`` rows, :func:`live_size`);
    with ``--server``, a client of that mast-serve instead."""
    if cfg.server is not None:
        if cfg.model is not None or cfg.size is not None or cfg.radius is not None:
            raise InputError("--model, --size and --radius are the server's with --server: give them to mast-serve")
        tracker = connect_tracker(cfg.server, cfg.stream_id or "", token=cfg.token)   # waits, re-anchors: stderr
        say(f"tracking on mast-serve at {cfg.server} as stream {cfg.stream_id!r}")
        return tracker
    requested = cfg.size if isinstance(cfg.size, tuple) else None
    tracker = open_tracker(cfg.model, cfg.backend, cfg.device, requested, precision=cfg.precision, keys=cfg.keys,
                           radius=cfg.radius)
    fixed, why = tracker.size, ""
    if cfg.size == "full" and fixed is not None:
        tracker.close()
        what = "the model" if cfg.model is None else f"the model {cfg.model}"
        raise InputError(f"--size full but {what} was exported for {fixed[0]}x{fixed[1]} (it runs at that size "
                         "only): drop --size, or re-export at the frames' size with mast-export")
    live = source is not None and source.is_live and str(tracker.backend.device) == "cpu"
    if cfg.size is None and fixed is None and live and (size := live_size(source.frame_size, cfg.live_rows)):
        tracker = Tracker(tracker.backend, tracker.config, size=size)
        why = (f" (a live source on a CPU: {cfg.live_rows} rows keep up with it; --size full tracks the "
               f"{source.frame_size[0]}x{source.frame_size[1]} frames as they are)")
    work = tracker.size
    say(f"backend: {factory.describe(tracker.backend)}"
        + (f", working size {work[0]}x{work[1]}{why}" if work else ", working size = frame size")
        + f", attention radius {tracker.config.attention.radius}")
    return tracker


def run(cfg: RunConfig, say: Callable[[str], None] = print, source: FrameSource | None = None,
        tracker: ObjectTracker | None = None, warn: Callable[[str], None] = to_stderr) -> RunSummary:
    """Run ``cfg`` end to end (``source``/``tracker`` may be given ready, e.g. by tests); ``warn``
    takes the object-loss lines (stderr by default).

    Raises MastError for bad input before any frame is processed; returns the summary otherwise.
    """
    if sum((cfg.mask is not None, bool(cfg.boxes), cfg.select)) != 1:
        raise InputError("give the objects with one of --mask PNG, --box X0,Y0,X1,Y1 (repeatable) or --select, "
                         "not several")
    if cfg.select:
        require_display(window_allowed=cfg.display)
        make_mask: FirstMask = select_mask
    else:
        make_mask = first_mask(load_mask(cfg.mask) if cfg.mask is not None else None, cfg.boxes, warn)
    monitor = ObjectMonitor(cfg.loss)
    with ExitStack() as stack:
        source = stack.enter_context(source or open_input(cfg))
        if tracker is None:
            tracker = build_tracker(cfg, say, source)
            stack.callback(tracker.close)   # runs after the sinks are flushed (last in, first out)
        sinks = open_sinks(cfg, source, stack, say, monitor)
        editor = next((s for s in sinks if isinstance(s, EditWindow)), None)   # shown first, by stream_masks
        say(f"tracking {source.name} from frame {cfg.mask_frame}"
            + (" (live: stale frames are dropped)" if source.is_live else ""))
        with Interrupt() as interrupt:
            summary = track_stream(tracker, source, make_mask, [s for s in sinks if s is not editor], monitor=monitor,
                                   mask_frame=cfg.mask_frame, max_frames=cfg.max_frames, interrupt=interrupt,
                                   editor=editor, say=say, warn=warn)
            stack.close()  # flush the outputs while Ctrl-C is still handled gracefully
    if summary.frames == 0 and not (summary.interrupted or summary.stopped):
        raise InputError(f"{source.name} has no frame {cfg.mask_frame} (--mask-frame is past its end): "
                         "give the index of the frame the mask belongs to")
    summary.outputs = _outputs(sinks)
    return summary


def _outputs(sinks: list[Sink]) -> list[tuple[str, Path, int]]:
    out = []
    for sink in sinks:
        if isinstance(sink, MaskPngSink):
            out.append(("masks", sink.directory.resolve(), sink.written))
        elif isinstance(sink, VideoSink):
            out.append(("video", sink.path.resolve(), sink.written))
        elif isinstance(sink, JsonLinesSink):
            out.append(("json", sink.path.resolve(), sink.written))
    return out


def summary_lines(summary: RunSummary) -> list[str]:
    """The printed summary: frames, fps, drops, how it ended, output paths."""
    t = summary.times
    rate = " after the first" if t.frames else ""
    lines = [f"processed {summary.frames} frame(s) in {summary.seconds:.1f} s: {summary.fps:.2f} fps{rate}, "
             f"{summary.dropped} stale frame(s) dropped"]
    if t.frames:
        ms = t.per_frame_ms()
        lines.append(f"per frame: tracker {ms['track']:.1f} ms, waiting for the source {ms['read']:.1f} ms, "
                     f"window and outputs {ms['loop']:.1f} ms")
    if summary.interrupted:
        lines.append("interrupted (Ctrl-C): outputs so far are complete")
    if summary.quit:
        lines.append("quit from the window")
    if summary.stopped:
        lines.append(f"stopped early: {summary.stopped}")
    if summary.lost:
        lines.append(f"{summary.lost} object loss(es) reported")
    for kind, path, count in summary.outputs:
        unit = "mask PNG(s)" if kind == "masks" else "frame(s)"
        unit = "line(s)" if kind == "json" else unit
        lines.append(f"{kind}: {path} ({count} {unit})")
    return lines


# -- command line ------------------------------------------------------------------------------------
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False,
                  help="Track the objects of a mask through a camera, a video or a frame folder.")


def _demo_config(cfg: RunConfig, say: Callable[[str], None]) -> RunConfig:
    """``--demo``: the bundled clip, outputs in ./mast-demo unless given, lab keys until weights ship."""
    if any(v is not None for v in (cfg.camera, cfg.video, cfg.frames, cfg.mask)):
        raise InputError("--demo tracks the bundled clip: drop --camera/--video/--frames/--mask")
    cfg.mask = None if cfg.boxes or cfg.select else DEMO_MASK
    cfg.frames = DEMO_FRAMES
    cfg.save_video = cfg.save_video or DEMO_OUT / "overlay.mp4"
    cfg.save_masks = cfg.save_masks or DEMO_OUT / "masks"
    no_model = cfg.model is None and cfg.keys == "model" and factory.shipped_weights() is None
    if no_model and cfg.backend in ("auto", "torch"):
        say("note: no shipped weights in this package yet: the demo tracks with --keys lab (raw colour keys)")
        cfg.keys = "lab"
    return cfg


@app.command()
def cli(
    camera: Optional[int] = typer.Option(None, "--camera", help="Camera index (OpenCV), e.g. 0."),
    video: Optional[Path] = typer.Option(None, "--video", help="Video file."),
    frames: Optional[Path] = typer.Option(None, "--frames", help="Folder of frames (.jpg/.png, natural order)."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Mask PNG: palette (ids) or 0/255 (one object)."),
    select: bool = typer.Option(False, "--select", help="Draw boxes (and clicks) on the frozen first frame in a window, confirm the mask, then track (the default for --camera without --mask/--box); needs a display."),
    box: Optional[list[str]] = typer.Option(None, "--box", help="X0,Y0,X1,Y1 (pixels, X1/Y1 exclusive) instead of --mask: the first frame's mask is made by mast-mask's code, ids 1..n in box order; repeatable."),
    mask_frame: int = typer.Option(0, "--mask-frame", min=0, help="File sources: the mask is frame K's (0-based); earlier frames are skipped."),
    backend: BackendOpt = typer.Option(BackendOpt.auto, "--backend", help="auto: tensorrt > onnxruntime CUDA > torch CUDA > onnxruntime CPU (export folder) > torch CPU."),
    device: Optional[DeviceOpt] = typer.Option(None, "--device", help="cpu or cuda (default: what auto finds)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Checkpoint .pt (torch) or export folder (onnxruntime/tensorrt). Default: the shipped weights."),
    keys: KeysOpt = typer.Option(KeysOpt.model, "--keys", help="torch only: model weights, raw lab colour, or a random encoder."),
    precision: PrecisionOpt = typer.Option(PrecisionOpt.fp32, "--precision", help="torch: encoder precision: fp32, bf16 (fast on AVX-512/AMX CPUs; the memory read in bf16 too on AVX512-BF16) or fp16 (CUDA; a half bank for the kernel). onnxruntime: bf16 reads the memory in bf16 (AVX512-BF16 CPUs)."),
    size: Optional[str] = typer.Option(None, "--size", help="Working size HxW, e.g. 240x427 (masks come back at the frame size), or full: the frame's own size. Default: the frame's size; a live source on a CPU 240 rows, aspect kept (camera rate)."),
    radius: Optional[int] = radius_option(),
    save_masks: Optional[Path] = typer.Option(None, "--save-masks", help="Write one palette PNG per frame here."),
    save_video: Optional[Path] = typer.Option(None, "--save-video", help="Write the overlay video (.mp4) here."),
    save_json: Optional[Path] = typer.Option(None, "--save-json", help="Write one JSON line per frame here (ids, bbox, area, COCO RLE; see docs/USAGE.md)."),
    lost_fraction: float = typer.Option(LossConfig.fraction, "--lost-fraction", min=0.0, max=1.0, help="An object is lost when its area stays under this fraction of its anchored area ..."),
    lost_frames: int = typer.Option(LossConfig.frames, "--lost-frames", min=1, help="... for this many consecutive frames (reported once per loss on stderr)."),
    reanchor_on_loss: bool = typer.Option(False, "--reanchor-on-loss", help="Re-segment a lost object on the next frame inside its last good box (GrabCut) and re-anchor the tracker with it."),
    no_display: bool = typer.Option(False, "--no-display", help="Headless even if a display exists."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after N processed frames (the mask frame included)."),
    simulate_live: bool = typer.Option(False, "--simulate-live", help="Play --video like a camera at its fps: the newest frame is tracked, stale ones dropped."),
    demo: bool = typer.Option(False, "--demo", help="Track the bundled clip; overlay video + masks into ./mast-demo (or --save-*)."),
    server: Optional[str] = typer.Option(None, "--server", help="HOST:PORT of a mast-serve (its gRPC port; grpcs://HOST:PORT through a TLS proxy): it tracks the frames (needs --stream-id); --backend/--model/--size are the server's."),
    stream_id: Optional[str] = typer.Option(None, "--stream-id", help="This stream's name on the --server."),
    token: Optional[str] = typer.Option(None, "--token", envvar="MAST_TOKEN", show_envvar=True, help="The --server's shared secret (mast-serve --token)."),
) -> None:
    """Track the objects of --mask through --camera, --video or --frames (or run --demo).

    With a display: a window with the overlay, ids and fps (q/Esc quit; space pauses to add, correct or remove objects, the keys shown on the image); otherwise headless with the same outputs. Live sources track the newest frame and drop stale ones.

    A mask of another size but the same aspect ratio (within 2 %) is resized (nearest) with a warning; any other size is refused.

    Exit codes: 0 done, 1 the source failed mid-stream, 2 bad input (one line, nothing processed), 130 Ctrl-C. Outputs so far are always complete.
    """  # noqa: E501 - typer keeps docstring line breaks: one line per paragraph
    console, err = consoles()
    say = console.print
    cfg = RunConfig(mask=mask, camera=camera, video=video, frames=frames, mask_frame=mask_frame,
                    backend=backend.value, device=device.value if device else None, model=model,
                    keys=keys.value, precision=precision.value, radius=radius, save_masks=save_masks, save_video=save_video,
                    save_json=save_json, select=select, display=not no_display, max_frames=max_frames, simulate_live=simulate_live,
                    loss=LossConfig(fraction=lost_fraction, frames=lost_frames, reanchor=reanchor_on_loss),
                    server=server, stream_id=stream_id, token=token)
    try:
        with exit_on_error(err):
            cfg.size = "full" if size is not None and size.strip().lower() == "full" else parse_size(size)
            cfg.boxes = [parse_box(b) for b in box or []]
            if demo:
                cfg = _demo_config(cfg, say)
            elif camera is not None and mask is None and not cfg.boxes:
                cfg.select = True
            elif mask is None and not cfg.boxes and not select:
                raise InputError("--mask PNG, --box X0,Y0,X1,Y1 or --select is required (the objects to track, in "
                                 "the first frame or --mask-frame K)")
            summary = run(cfg, say, warn=lambda line: err.print(f"warning: {line}"))
    except KeyboardInterrupt:  # Ctrl-C while loading, before any frame
        err.print("interrupted before the first frame: nothing written")
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    for line in summary_lines(summary):
        (err.print if line.startswith("stopped early") else say)(line)   # warnings on stderr, the summary on stdout
    raise typer.Exit(code=summary.exit_code)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``mast-run``); the OpenMP defaults of :mod:`mast.core.openmp` first (torch is not loaded yet)."""
    openmp_defaults()
    app(args=argv, prog_name="mast-run")


if __name__ == "__main__":  # pragma: no cover
    main()
