"""``mast-run``: follow the objects of a mask through a camera, a video file or a frame folder.

::

    mast-run (--camera N | --video FILE | --frames DIR) (--mask PNG | --box X0,Y0,X1,Y1 ... | --select)
             [--mask-frame K] [--backend auto|torch|onnxruntime|tensorrt] [--device cpu|cuda]
             [--model PATH] [--size HxW] [--save-masks DIR] [--save-video FILE] [--save-json FILE]
             [--lost-fraction F] [--lost-frames N] [--reanchor-on-loss] [--no-display] [--max-frames N]
             [--server HOST:PORT --stream-id NAME]   # a mast-serve tracks the frames (mast.runtime.client)
    mast-run --demo            # the bundled clip; overlay video + masks into ./mast-demo/

Behaviour (also in ``--help``):

- **Window or headless.** With a display: a window with the overlay, the object ids and the live fps
  (q/Esc quit; space pauses to add, correct or remove objects on the paused frame, the keys shown on
  the image: :mod:`mast.runtime.edits`). Without one (``--no-display``, or none available): headless,
  the same outputs. No cv2 GUI function is called without a display.
- **Live sources never fall behind**: a camera (or ``--video FILE --simulate-live``) is read in a
  background thread and the tracker always takes the newest frame; stale frames are dropped and
  counted in the summary.
- **Mask**: a palette PNG (ids kept) or a 0/255 PNG (id 1). ``--mask-frame K`` (file sources): the
  mask belongs to frame K (0-based position in the video / folder); frames before K are skipped.
- **Boxes instead of a mask**: ``--box`` (repeatable) segments the first frame with mast-mask's code
  (ids 1..n in box order); ``--select`` lets the user draw the boxes on the frozen first frame in a
  window and confirm the mask (the default for ``--camera`` without ``--mask``/``--box``; without a
  display: one line saying to use ``--box``).
- **JSON lines** (``--save-json``): one line per frame, COCO RLE per object
  (:func:`mast.runtime.sinks.frame_record`; :func:`iter_records` gives the same records in Python).
- **Lost objects**: an object under ``--lost-fraction`` of its anchored area for ``--lost-frames``
  frames is reported once per loss (a stderr line, ``"present": false`` in the JSON); the others are
  tracked on. ``--reanchor-on-loss``: :func:`reanchor_lost`.
- **Mask size policy**: a mask whose size differs from the frame's *with the same aspect ratio*
  (within 2 %, e.g. 853x480 for 854x480, or a 427x240 mask for 854x480 frames) is resized
  (nearest) with a printed warning; any other size is refused (exit code 2): it is most likely the
  mask of another video.
- **Errors** (missing/empty mask, unknown camera, unreadable video, unwritable output, no model) are
  one line on stderr, exit code 2, before any frame is processed. A camera that stops delivering
  frames (or an unreadable frame in a folder) ends the run with a message (exit 1); Ctrl-C stops after the current frame (a second one
  at once) with exit 130. In every case the outputs so far are flushed: masks written, video
  finalised and playable, and a summary (frames, fps, dropped, outputs) is printed.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np
import typer

from mast.core.cli import (EXIT_INTERRUPTED, EXIT_OK, EXIT_STOPPED, BackendOpt, DeviceOpt, Interrupt, KeysOpt,
                           PrecisionOpt, consoles, exit_on_error, parse_size)
from mast.core.errors import InputError, MastError
from mast.core.masks import read_mask
from mast.runtime import factory
from mast.runtime.boxmask import Box, boxes_to_mask, parse_box, segment_box
from mast.runtime.edit_window import EditWindow
from mast.runtime.edits import Editor, apply_edits
from mast.runtime.objects import LossConfig, ObjectMonitor
from mast.runtime.selection import require_display, select_mask
from mast.runtime.sinks import (
    JsonLinesSink,
    MaskPngSink,
    Sink,
    VideoSink,
    WindowSignal,
    display_available,
    frame_record,
)
from mast.runtime.sources import FrameSource, open_source

DEMO_DIR = Path(__file__).resolve().parent / "demo"   # bundled clip, DAVIS layout (see demo/NOTICE.md)
DEMO_FRAMES = DEMO_DIR / "clip" / "JPEGImages" / "240p" / "camel"
DEMO_MASK = DEMO_DIR / "clip" / "Annotations" / "240p" / "camel" / "00000.png"
DEMO_OUT = Path("mast-demo")
ASPECT_TOLERANCE = 0.02  # relative aspect-ratio difference under which a mask is resized, not refused
REPORT_EVERY_S = 5.0     # seconds between progress lines while running

# -- small helpers ---------------------------------------------------------------------------------
def conform_mask(mask: np.ndarray, frame_hw: tuple[int, int]) -> tuple[np.ndarray, str | None]:
    """``mask`` ``[h, w]`` made the frame's size ``frame_hw`` (H, W): returns (mask, warning or None).

    Same aspect ratio within :data:`ASPECT_TOLERANCE`: resized with nearest neighbour and a warning.
    Otherwise InputError (refused). The objects must survive the resize (else InputError).
    """
    (h, w), (fh, fw) = mask.shape[:2], frame_hw
    if (h, w) == (fh, fw):
        return mask, None
    if abs((h / w) / (fh / fw) - 1.0) > ASPECT_TOLERANCE:
        raise InputError(f"the mask is {w}x{h} but the frame is {fw}x{fh} (another aspect ratio: is it the "
                         "mask of another video?): give a mask of the frame's size")
    resized = cv2.resize(mask, (fw, fh), interpolation=cv2.INTER_NEAREST)
    if mask.any() and not resized.any():
        raise InputError(f"the objects of the {w}x{h} mask vanish when resized to the {fw}x{fh} frame: "
                         "give a mask of the frame's size")
    return resized, f"the mask is {w}x{h} but the frame is {fw}x{fh}: resized it (nearest) to the frame"


def to_stderr(line: str) -> None:
    """Default ``warn``: one line on stderr."""
    print(line, file=sys.stderr, flush=True)


def load_mask(path: Path) -> np.ndarray:
    """Object ids ``[H, W]`` uint8 from a palette or 0/255 PNG; InputError when it shows no object."""
    mask = read_mask(path)
    if not mask.any():
        raise InputError(f"the mask {path} has no object (all pixels are 0): draw at least one object "
                         "(palette ids 1..255, or white on a 0/255 PNG)")
    return mask


# -- configuration and result ----------------------------------------------------------------------
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
    size: tuple[int, int] | None = None      # working size (H, W) in pixels; None = the frame's size
    save_masks: Path | None = None
    save_video: Path | None = None
    save_json: Path | None = None
    loss: LossConfig = field(default_factory=LossConfig)
    display: bool = True                      # False: --no-display
    max_frames: int | None = None             # frames processed at most (the mask frame included)
    simulate_live: bool = False               # a video file played like a camera (drops stale frames)
    server: str | None = None                 # --server HOST:PORT: a mast-serve tracks the frames
    stream_id: str | None = None              # --stream-id: this stream's name on the server


@dataclass
class RunSummary:
    """What happened: frames processed, wall time (s) from the mask frame on, drops, why it ended."""

    frames: int = 0
    seconds: float = 0.0
    dropped: int = 0
    first_index: int | None = None
    last_index: int | None = None
    interrupted: bool = False      # Ctrl-C
    quit: bool = False             # the window's q/Esc
    stopped: str | None = None     # why the source failed mid-stream (stalled camera, bad frame)
    lost: int = 0                  # object losses reported (an object lost twice counts twice)
    outputs: list[tuple[str, Path, int]] = field(default_factory=list)  # (kind, path, items written)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return EXIT_INTERRUPTED
        return EXIT_STOPPED if self.stopped else EXIT_OK


# -- the streaming loop ----------------------------------------------------------------------------
FirstMask = Callable[[np.ndarray], np.ndarray]
"""Makes the first mask: the first frame ``uint8 [H, W, 3]`` -> object ids ``uint8 [h, w]``."""


def first_mask(mask: np.ndarray | None = None, boxes: Sequence[Box] = (),
               say: Callable[[str], None] = print) -> FirstMask:
    """The first mask: ``mask`` (ids) as given, or the objects of ``boxes`` segmented in the first
    frame (:func:`mast.runtime.boxmask.boxes_to_mask`, ids 1..n in box order)."""
    if mask is not None:
        return lambda frame: mask

    def from_boxes(frame: np.ndarray) -> np.ndarray:
        ids, warnings = boxes_to_mask(frame, boxes)
        for warning in warnings:
            say(f"warning: {warning}")
        return ids

    return from_boxes


def stream_masks(tracker: Any, source: FrameSource, make_mask: FirstMask, monitor: ObjectMonitor, *,
                 mask_frame: int = 0, editor: Editor | None = None, say: Callable[[str], None] = print,
                 warn: Callable[[str], None] = to_stderr) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Start ``tracker`` on frame ``mask_frame`` of ``source`` with ``make_mask(frame)``, then step it:
    yields ``(index, frame [H, W, 3], ids [H, W])`` per frame. ``monitor`` follows the objects; a loss
    is reported once through ``warn``; with ``monitor.config.reanchor`` a lost object is re-segmented
    on the next frame in its last good box (:func:`reanchor_lost`). ``editor`` (the window) is shown
    every frame first; edits made on a paused frame re-anchor the tracker on it
    (:func:`mast.runtime.edits.apply_edits`) and the edited ids are the ones yielded."""
    started, lost = False, []
    for index, frame in source:
        if index < mask_frame:
            continue
        if not started:
            ids, started = _start(tracker, frame, make_mask(frame), say), True
            monitor.anchor(ids)
        elif lost and monitor.config.reanchor:
            ids = reanchor_lost(tracker, frame, lost, monitor, say)
        else:
            ids = tracker.step(frame)
        edited = editor.review(index, frame, ids, sorted(monitor.objects), monitor.next_id) if editor else None
        if edited is not None:
            ids = apply_edits(tracker, monitor, frame, edited)
            say(f"frame {index}: {edited.describe()}")
        lost = monitor.update(ids)
        for k in lost:
            warn(monitor.describe_loss(k, index))
        yield index, frame, ids


def reanchor_lost(tracker: Any, frame: np.ndarray, lost: Sequence[int], monitor: ObjectMonitor,
                  say: Callable[[str], None] = print) -> np.ndarray:
    """``--reanchor-on-loss``: segment each ``lost`` object in ``frame`` inside its last good box
    (the box of its mask on the last frame where it was at or above the loss threshold), paint those
    masks over the tracker's prediction of ``frame`` (``Tracker.anchor(merge=True)``: the frame becomes
    the long-term anchor of every object) and take their new areas as anchored. Returns the ids ``[H, W]``."""
    fresh = np.zeros(frame.shape[:2], np.uint8)
    for k in lost:
        box = monitor.objects[k].good_box
        result = segment_box(frame, box)
        fresh[result.mask] = k
        say(f"re-anchored object {k} in its last good box {','.join(map(str, box))}"
            + (f" ({result.warning})" if result.warning else ""))
    monitor.anchor(fresh)
    return tracker.anchor(frame, fresh, merge=True)


def iter_records(tracker: Any, source: FrameSource, *, mask: np.ndarray | None = None,
                 boxes: Sequence[Box] = (), mask_frame: int = 0, loss: LossConfig = LossConfig(),
                 say: Callable[[str], None] = print,
                 warn: Callable[[str], None] = to_stderr) -> Iterator[dict[str, Any]]:
    """Python API: the records of ``--save-json`` (:func:`mast.runtime.sinks.frame_record`), one per
    frame of ``source`` from ``mask_frame`` on, for the objects of ``mask`` (ids ``[H, W]``) or of
    ``boxes`` in the first frame. ``time`` is wall-clock seconds since the first record."""
    if (mask is None) == (not boxes):
        raise InputError("give the objects as a mask or as boxes (exactly one of them)")
    monitor, t0 = ObjectMonitor(loss), None
    for index, _, ids in stream_masks(tracker, source, first_mask(mask, boxes, say), monitor,
                                      mask_frame=mask_frame, say=say, warn=warn):
        now = time.perf_counter()
        t0 = now if t0 is None else t0
        yield frame_record(index, now - t0, ids, monitor)


def track_stream(tracker: Any, source: FrameSource, make_mask: FirstMask, sinks: list[Sink], *,
                 monitor: ObjectMonitor | None = None, mask_frame: int = 0, max_frames: int | None = None,
                 interrupt: Interrupt | None = None, editor: Editor | None = None,
                 say: Callable[[str], None] = print, warn: Callable[[str], None] = to_stderr) -> RunSummary:
    """Start ``tracker`` on frame ``mask_frame`` of ``source`` with ``make_mask(frame)`` (ids), step
    it through the following frames (:func:`stream_masks`, with ``editor`` the window), and hand every
    frame and its ids to every sink. Returns the summary; Ctrl-C, a window quit and a source failing
    after the first frame (a stalled camera, an unreadable frame) end the loop without raising. A
    failure before any frame raises."""
    summary, t0, last_report = RunSummary(), 0.0, time.perf_counter()
    monitor = monitor or ObjectMonitor()
    try:
        t0 = time.perf_counter()  # from the first frame read (mask_frame 0) on
        for index, frame, ids in stream_masks(tracker, source, make_mask, monitor, mask_frame=mask_frame,
                                              editor=editor, say=say, warn=warn):
            if summary.frames == 0:
                summary.first_index = index
            summary.frames, summary.last_index = summary.frames + 1, index
            summary.quit = _emit(sinks, index, frame, ids) or bool(editor and editor.quit_requested)
            if summary.quit or (interrupt is not None and interrupt.requested):
                break
            if max_frames is not None and summary.frames >= max_frames:
                break
            if time.perf_counter() - last_report > REPORT_EVERY_S:
                last_report = time.perf_counter()
                say(f"frame {index}: {summary.frames} processed, "
                    f"{summary.frames / (last_report - t0):.2f} fps, {source.dropped} dropped")
    except KeyboardInterrupt:
        summary.interrupted = True
    except MastError as exc:  # a camera that stalls, an unreadable frame mid-folder, ...
        if summary.frames == 0:
            raise             # nothing processed: bad input (exit 2)
        summary.stopped = str(exc)
    summary.interrupted |= bool(interrupt is not None and interrupt.requested)
    summary.seconds = time.perf_counter() - t0 if summary.frames else 0.0
    summary.dropped = source.dropped
    summary.lost = sum(obj.losses for obj in monitor.objects.values())
    return summary


def _start(tracker: Any, frame: np.ndarray, mask: np.ndarray, say: Callable[[str], None]) -> np.ndarray:
    mask, warning = conform_mask(mask, frame.shape[:2])
    if warning:
        say(f"warning: {warning}")
    return tracker.start(frame, mask)


def _emit(sinks: list[Sink], index: int, frame: np.ndarray, ids: np.ndarray) -> bool:
    """Write to every sink; True when a window asked to quit."""
    quit_asked = False
    for sink in sinks:
        quit_asked |= sink.write(index, frame, ids) is WindowSignal.QUIT
    return quit_asked


# -- wiring ------------------------------------------------------------------------------------------
def open_input(cfg: RunConfig) -> FrameSource:
    """The source of ``cfg`` (InputError when it cannot be opened or the options do not fit it)."""
    options: dict[str, Any] = {"simulate_live": True} if cfg.simulate_live else {}
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


def build_tracker(cfg: RunConfig, say: Callable[[str], None]) -> Any:
    """Backend (lazy imports: torch only for the torch backend) and the tracker around it; with
    ``--server``, a :class:`~mast.runtime.client.RemoteTracker` on that mast-serve instead."""
    from mast.runtime.tracker import Tracker  # noqa: PLC0415 - torch-free, imported when needed

    if cfg.server is not None:
        from mast.runtime.client import RemoteTracker  # noqa: PLC0415 - needs tritonclient

        if not cfg.stream_id:
            raise InputError("--server needs --stream-id NAME (this stream's name on the server)")
        if cfg.model is not None or cfg.size is not None:
            raise InputError("--model and --size are the server's with --server: give them to mast-serve")
        say(f"tracking on mast-serve at {cfg.server} as stream {cfg.stream_id!r}")
        return RemoteTracker(cfg.server, cfg.stream_id, say=say)

    backend = factory.make_backend(cfg.backend, cfg.model, cfg.device, cfg.keys, cfg.precision)
    fixed = backend.input_size
    size = cfg.size
    if fixed is not None and size is not None and tuple(size) != tuple(fixed):
        say(f"warning: --size {size[0]}x{size[1]} ignored: the exported model runs at {fixed[0]}x{fixed[1]}")
        size = None
    tracker = Tracker(backend, size=size)
    work = tracker.size
    say(f"backend: {factory.describe(backend)}"
        + (f", working size {work[0]}x{work[1]}" if work else ", working size = frame size"))
    return tracker


def run(cfg: RunConfig, say: Callable[[str], None] = print, source: FrameSource | None = None,
        tracker: Any = None, warn: Callable[[str], None] = to_stderr) -> RunSummary:
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
        make_mask = first_mask(load_mask(cfg.mask) if cfg.mask is not None else None, cfg.boxes, say)
    monitor = ObjectMonitor(cfg.loss)
    with ExitStack() as stack:
        source = stack.enter_context(source or open_input(cfg))
        if tracker is None:
            tracker = build_tracker(cfg, say)
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
    lines = [f"processed {summary.frames} frame(s) in {summary.seconds:.1f} s: {summary.fps:.2f} fps, "
             f"{summary.dropped} stale frame(s) dropped"]
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
    precision: PrecisionOpt = typer.Option(PrecisionOpt.fp32, "--precision", help="torch only: encoder precision: fp32, bf16 (fast on AVX-512/AMX CPUs) or fp16 (CUDA; a half bank for the kernel)."),
    size: Optional[str] = typer.Option(None, "--size", help="Working size HxW, e.g. 240x427 (masks come back at the frame size)."),
    save_masks: Optional[Path] = typer.Option(None, "--save-masks", help="Write one palette PNG per frame here."),
    save_video: Optional[Path] = typer.Option(None, "--save-video", help="Write the overlay video (.mp4) here."),
    save_json: Optional[Path] = typer.Option(None, "--save-json", help="Write one JSON line per frame here (ids, bbox, area, COCO RLE; see README)."),
    lost_fraction: float = typer.Option(LossConfig.fraction, "--lost-fraction", min=0.0, max=1.0, help="An object is lost when its area stays under this fraction of its anchored area ..."),
    lost_frames: int = typer.Option(LossConfig.frames, "--lost-frames", min=1, help="... for this many consecutive frames (reported once per loss on stderr)."),
    reanchor_on_loss: bool = typer.Option(False, "--reanchor-on-loss", help="Re-segment a lost object on the next frame inside its last good box (GrabCut) and re-anchor the tracker with it."),
    no_display: bool = typer.Option(False, "--no-display", help="Headless even if a display exists."),
    max_frames: Optional[int] = typer.Option(None, "--max-frames", min=1, help="Stop after N processed frames (the mask frame included)."),
    simulate_live: bool = typer.Option(False, "--simulate-live", help="Play --video like a camera at its fps: the newest frame is tracked, stale ones dropped."),
    demo: bool = typer.Option(False, "--demo", help="Track the bundled clip; overlay video + masks into ./mast-demo (or --save-*)."),
    server: Optional[str] = typer.Option(None, "--server", help="HOST:PORT of a mast-serve (its gRPC port): it tracks the frames (needs --stream-id); --backend/--model/--size are the server's."),
    stream_id: Optional[str] = typer.Option(None, "--stream-id", help="This stream's name on the --server."),
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
                    keys=keys.value, precision=precision.value, save_masks=save_masks, save_video=save_video,
                    save_json=save_json, select=select, display=not no_display, max_frames=max_frames, simulate_live=simulate_live,
                    loss=LossConfig(fraction=lost_fraction, frames=lost_frames, reanchor=reanchor_on_loss),
                    server=server, stream_id=stream_id)
    try:
        with exit_on_error(err):
            cfg.size = parse_size(size)
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
        say(line)
    raise typer.Exit(code=summary.exit_code)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``mast-run``)."""
    app(args=argv, prog_name="mast-run")


if __name__ == "__main__":  # pragma: no cover
    main()
