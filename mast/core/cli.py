"""Command-line plumbing shared by every ``mast-*`` command (torch-free).

The typer option enums, ``--size`` parsing, the exit codes, the one-line error report of a
:class:`~mast.core.errors.MastError` and the Ctrl-C flag of the streaming loops: written once here
so that the commands agree (docs/DESIGN.md, "Layers and their direction": ``core`` is below every
command).
"""
from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from typing import Any, Callable

import typer
from rich.console import Console
from rich.text import Text

from mast.core.config import MAX_RADIUS, ModelConfig
from mast.core.errors import InputError, MastError

EXIT_OK, EXIT_STOPPED, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
"""0 done; 1 stopped early (a source failing mid-stream, a failed parity check); 2 bad input
(one line, nothing processed); 130 Ctrl-C."""


class BackendOpt(str, Enum):
    """``--backend``: where the per-frame step runs (:func:`mast.runtime.factory.make_backend`)."""

    auto = "auto"
    torch = "torch"
    onnxruntime = "onnxruntime"
    tensorrt = "tensorrt"


class DeviceOpt(str, Enum):
    """``--device``."""

    cpu = "cpu"
    cuda = "cuda"


class KeysOpt(str, Enum):
    """``--keys``: the trained encoder's keys, raw Lab colour, or a random encoder's (baselines)."""

    model = "model"
    lab = "lab"
    random = "random"


class PrecisionOpt(str, Enum):
    """``--precision`` of the torch backend's encoder (:data:`mast.core.config.Precision`)."""

    fp32 = "fp32"
    bf16 = "bf16"
    fp16 = "fp16"


def radius_option() -> Any:
    """``--radius`` (the commands that build a tracker, and ``mast-export``): the attention window's
    radius in key pixels, None = the model's (:func:`mast.core.config.check_radius`)."""
    return typer.Option(None, "--radius", min=1, max=MAX_RADIUS, help=(
        "Attention window radius R in key pixels ((2R+1)^2 candidates per memory frame); default: the model's "
        "(12 at key stride 4). Smaller is faster and follows less motion: at 240x427 on 2 cores, R 8 ran 1.4-1.6x "
        "and R 6 1.7-2x the fps at 1.4-1.5 points less dev J&F (docs/RESULTS.md, 'Window radius'). An export keeps the "
        "radius it was exported with (mast-export --radius)."))


def min_working_side(model: ModelConfig = ModelConfig()) -> int:
    """The smallest working height / width in pixels: ``stride * R + 1``, a key map of ``R + 1``
    keys per side, so that every key's attention window (``2R + 1`` keys a side) holds at least its
    quarter ``(R + 1)^2`` of in-frame candidates, even at a corner. Below it the zero-score,
    zero-value candidates outside the frame outweigh the frame's own and the objects fade
    (``--size 13x7``: IoU 0.17 at frame 1 against the same run at 240x427; 48x85: 0.76)."""
    return model.stride * model.attention.radius + 1


def check_working_size(size: tuple[int, int], model: ModelConfig = ModelConfig(), what: str = "--size") -> None:
    """InputError (one line: what, expected, how to fix) when ``size`` (H, W) is too small for
    ``model``'s stride and attention window (:func:`min_working_side`)."""
    side = min_working_side(model)
    if min(size) < side:
        raise InputError(f"{what} {size[0]}x{size[1]} is too small for the model: frames must be at least "
                         f"{side}x{side} pixels ({model.attention.radius + 1} keys at stride {model.stride} per side, so "
                         f"that each key's attention window of radius {model.attention.radius} lies a quarter in "
                         "the frame): give a larger --size, e.g. --size 240x427")


def parse_size(text: str | None, model: ModelConfig = ModelConfig()) -> tuple[int, int] | None:
    """``"HxW"`` (``x``, ``X`` or ``×``, spaces allowed) -> ``(H, W)`` in pixels; None stays None.
    InputError for anything else, and for a size too small for ``model`` (:func:`check_working_size`):
    the one rule of ``mast-run``, ``mast-eval``, ``mast-bench`` and ``mast-serve``."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*[xX×]\s*(\d+)\s*", text)
    if not match or int(match.group(1)) <= 0 or int(match.group(2)) <= 0:
        raise InputError(f"--size {text!r} is not a size: expected HEIGHTxWIDTH in pixels, e.g. --size 240x427")
    size = int(match.group(1)), int(match.group(2))
    check_working_size(size, model)
    return size


def consoles() -> tuple[Console, Console]:
    """(stdout, stderr) rich consoles as the commands print: no highlighting, long lines kept whole."""
    return Console(highlight=False, soft_wrap=True), Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(err: Console, message: object) -> None:
    """``error: message`` on one line (bold red) of ``err``."""
    err.print(Text(f"error: {message}", style="bold red"), soft_wrap=True)


@contextmanager
def exit_on_error(err: Console, code: int = EXIT_INPUT) -> Iterator[None]:
    """A :class:`MastError` inside becomes one ``error: ...`` line on ``err`` and exit ``code``, no traceback."""
    try:
        yield
    except MastError as exc:
        print_error(err, exc)
        raise typer.Exit(code=code) from None


class Interrupt:
    """Ctrl-C handling: the first signal asks the loop to stop after the current frame or step
    (``requested``; ``on_request`` is called once); a second one raises KeyboardInterrupt at once.
    ``signals``: SIGINT by default (mast-train adds SIGTERM). Installed only in the main thread."""

    def __init__(self, signals: tuple[int, ...] = (signal.SIGINT,),
                 on_request: Callable[[], None] | None = None) -> None:
        self.requested = False
        self.signals, self.on_request = signals, on_request
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        if self.on_request is not None:
            self.on_request()

    def __enter__(self) -> "Interrupt":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
