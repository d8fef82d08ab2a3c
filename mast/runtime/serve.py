"""``mast-serve``: many streams behind a real Triton Inference Server (started through PyTriton).

::

    mast-serve [--http-port 8000] [--grpc-port 8001] [--metrics-port 8002] [--address 0.0.0.0]
               [--checkpoint F | --model DIR --backend onnxruntime] [--device cpu|cuda] [--size HxW]
               [--max-streams 8] [--idle-timeout 60]

The contract (README, "Many cameras"; a stock ``tritonclient`` uses it, :mod:`mast.runtime.client`
is one): model ``mast``; input ``frame`` UINT8 ``[H, W, 3]`` BGR; optional input ``mask`` UINT8
``[H, W]`` object ids (a stream's first request must carry it: it starts the stream; later it
re-anchors, new ids added); request parameter ``stream_id`` (string), optional ``anchor``
(``merge``, the default: the mask's objects painted over the prediction; ``replace``: the mask is
complete, objects it lacks are dropped); output ``mask`` UINT8 ``[H, W]``. A refused request gets
an error response whose message names the cause
(``UnknownStreamError: unknown stream 'cam-1': ...``, ``FrameSizeError``, ``TableFullError``,
``StreamError``; Triton itself refuses a wrong dtype or rank); the server keeps serving.

Batching: Triton runs ``max_streams`` instances of the model at once (one request each) and the
:class:`~mast.runtime.batcher.Batcher` batches them dynamically across streams into engine steps
(at most one frame per stream per step, each stream's frames in arrival order). Triton's own
dynamic batcher is not used: PyTriton answers a whole batch with one error, so one malformed
request would fail every stream's frame batched with it.

Ctrl-C (or SIGTERM) stops it cleanly: Triton stops taking requests, waiting frames get an error,
the summary is printed, exit code 130.
"""
from __future__ import annotations

import logging
import os
import sysconfig
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from signal import SIGINT, SIGTERM
from typing import Any, Optional

import numpy as np
import typer

from mast.core.cli import (EXIT_INTERRUPTED, EXIT_STOPPED, BackendOpt, DeviceOpt, Interrupt, PrecisionOpt, consoles,
                           exit_on_error, parse_size)
from mast.core.errors import DependencyError, InputError
from mast.runtime import factory
from mast.runtime.batcher import Batcher
from mast.runtime.engine import Engine, EngineConfig, Job, StreamError
from mast.runtime.tracker import working_size

MODEL_NAME = "mast"
STREAM_PARAMETER = "stream_id"
ANCHOR_PARAMETER = "anchor"   # optional: how a mask re-anchors a stream, "merge" (default) or "replace"
ANCHOR_MODES = ("merge", "replace")
POLL_S = 0.2   # how often the main thread checks for Ctrl-C and a dead server
START_ATTEMPTS = 3


@dataclass
class ServeConfig:
    """What ``mast-serve`` runs (one field per option)."""

    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = "0.0.0.0"
    backend: factory.BackendName = "auto"
    model: Path | None = None          # checkpoint .pt or export folder; None = the shipped weights
    device: factory.DeviceName | None = None
    precision: factory.Precision = "fp32"
    engine: EngineConfig = field(default_factory=EngineConfig)
    triton_log: Path | None = None     # Triton's own log file (None: a temporary file)


def request_job(request: Any) -> Job:
    """The :class:`Job` of one PyTriton request (``request.data``: inputs, ``request.parameters``)."""
    stream_id = request.parameters.get(STREAM_PARAMETER)
    if not isinstance(stream_id, str) or not stream_id:
        raise StreamError(f"the request has no {STREAM_PARAMETER!r} parameter (a non-empty string naming the "
                          "stream): pass parameters={'stream_id': NAME} with each request")
    mode = request.parameters.get(ANCHOR_PARAMETER, "merge")
    if mode not in ANCHOR_MODES:
        raise StreamError(f"stream {stream_id!r}: request parameter {ANCHOR_PARAMETER!r} is {mode!r}, expected "
                          f"{' or '.join(ANCHOR_MODES)}")
    return Job(stream_id, request.data["frame"], request.data.get("mask"), merge=mode == "merge")


def infer_function(batcher: Batcher, say: Callable[[str], None]) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    """PyTriton's inference callable: each request's frame through ``batcher``; a refused request
    raises its StreamError (Triton answers it with the message), reported on one line."""

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        out = []
        for request in requests:   # one per call: Triton's batching is off (module docstring)
            try:
                out.append({"mask": batcher.submit(request_job(request))})
            except StreamError as exc:
                say(f"refused: {exc}")
                raise
        return out

    return infer


def python_libdir_env() -> None:
    """Put this interpreter's own lib directory first on ``LD_LIBRARY_PATH`` (for the Triton
    Python-backend helper process, which otherwise may load another libpython)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *paths])


def _pytriton() -> tuple[Any, Any, Any, Any]:
    """(Triton, TritonConfig, ModelConfig, Tensor) of PyTriton, or a one-line DependencyError."""
    try:
        from pytriton.model_config import ModelConfig, Tensor  # noqa: PLC0415 - optional dependency
        from pytriton.triton import Triton, TritonConfig  # noqa: PLC0415
    except ImportError as exc:
        raise DependencyError(f"mast-serve needs PyTriton ({exc}): pip install -e \".[serve]\"") from None
    return Triton, TritonConfig, ModelConfig, Tensor


def start_triton(cfg: ServeConfig, log: Path, infer: Callable[..., Any], stack: ExitStack,
                 say: Callable[[str], None]) -> Any:
    """Triton running (closed by ``stack``) with model ``mast`` bound to ``cfg.engine.max_streams``
    instances of ``infer``. PyTriton's instances sometimes fail their start-up handshake (its helper
    processes race for one socket; more likely on a busy CPU): Triton is then stopped and started
    afresh, up to :data:`START_ATTEMPTS` times."""
    Triton, TritonConfig, ModelConfig, Tensor = _pytriton()
    config = TritonConfig(http_address=cfg.address, http_port=cfg.http_port, grpc_address=cfg.address,
                          grpc_port=cfg.grpc_port, metrics_port=cfg.metrics_port, log_file=log, exit_timeout_secs=5)
    attempt = 1
    while True:
        attempt_stack = ExitStack()
        triton = attempt_stack.enter_context(Triton(config=config))
        try:
            triton.bind(model_name=MODEL_NAME, infer_func=[infer] * cfg.engine.max_streams,
                        inputs=[Tensor(name="frame", dtype=np.uint8, shape=(-1, -1, 3)),
                                Tensor(name="mask", dtype=np.uint8, shape=(-1, -1), optional=True)],
                        outputs=[Tensor(name="mask", dtype=np.uint8, shape=(-1, -1))],
                        config=ModelConfig(batching=False), strict=True)
            triton.run()
        except Exception as exc:  # noqa: BLE001 - PyTriton and tritonclient raise their own types
            attempt_stack.close()
            cause = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if attempt == START_ATTEMPTS:
                raise DependencyError(f"Triton could not load model {MODEL_NAME!r} ({START_ATTEMPTS} attempts): "
                                      f"{cause} (Triton's log: {log})") from None
            attempt += 1
            say(f"Triton could not load the model ({cause}): starting it again ({attempt}/{START_ATTEMPTS})")
            continue
        stack.push(attempt_stack)
        return triton


def serve(cfg: ServeConfig, say: Callable[[str], None] = print, interrupt: Interrupt | None = None) -> int:
    """Build the backend and the engine, start Triton with the model bound, serve until ``interrupt``
    (or Triton stops). Returns the exit code."""
    _pytriton()   # a missing PyTriton is said before the model loads
    backend = factory.make_backend(cfg.backend, cfg.model, cfg.device, "model", cfg.precision)
    try:
        size = working_size(cfg.engine.size, backend.input_size, cfg.model)   # the one --size rule of every command
    except InputError:
        backend.close()
        raise
    engine = Engine(backend, cfg.engine)
    say(f"backend: {factory.describe(backend)}, working size "
        + (f"{size[0]}x{size[1]}" if size else "= each stream's frame size")
        + f"; up to {cfg.engine.max_streams} streams, freed after {cfg.engine.idle_timeout:g} s idle")
    python_libdir_env()
    logging.getLogger("pytriton").setLevel(logging.CRITICAL)   # refusals are reported by infer_function
    log = cfg.triton_log or Path(tempfile.mkdtemp(prefix="mast-serve-")) / "triton.log"
    batcher = Batcher(engine, tick=min(1.0, cfg.engine.idle_timeout / 4))
    started = time.monotonic()
    try:
        with ExitStack() as stack:
            triton = start_triton(cfg, log, infer_function(batcher, say), stack, say)
            say(f"serving model {MODEL_NAME!r}: HTTP {cfg.address}:{cfg.http_port}, "
                f"gRPC {cfg.address}:{cfg.grpc_port}, "
                f"metrics :{cfg.metrics_port} (Triton log: {log}); Ctrl-C stops")
            while triton.is_alive() and not (interrupt is not None and interrupt.requested):
                time.sleep(POLL_S)
            stopped_by_signal = interrupt is not None and interrupt.requested
            say("stopping ..." if stopped_by_signal else "Triton stopped: shutting down")
    finally:   # after Triton has stopped (it waits for the requests in flight)
        batcher.close()
        backend.close()
    stats = batcher.stats
    say(f"served {stats.frames} frame(s) in {stats.steps} step(s) (mean batch {stats.mean_batch:.2f}) over "
        f"{time.monotonic() - started:.0f} s; {len(engine.streams)} stream(s) open at exit")
    return EXIT_INTERRUPTED if stopped_by_signal else EXIT_STOPPED


# -- command line ------------------------------------------------------------------------------------
app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False,
                  help="Serve many tracking streams from one model behind Triton Inference Server.")


@app.command()
def cli(
    http_port: int = typer.Option(8000, "--http-port", min=1, max=65535, help="Triton's HTTP port."),
    grpc_port: int = typer.Option(8001, "--grpc-port", min=1, max=65535, help="Triton's gRPC port."),
    metrics_port: int = typer.Option(8002, "--metrics-port", min=1, max=65535, help="Triton's Prometheus metrics port."),
    address: str = typer.Option("0.0.0.0", "--address", help="Address the HTTP and gRPC endpoints bind to (127.0.0.1: this machine only)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint .pt for the torch backend (default: the shipped weights)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Export folder from mast-export (with --backend onnxruntime)."),
    backend: BackendOpt = typer.Option(BackendOpt.auto, "--backend", help="auto, torch or onnxruntime (tensorrt runs one stream per engine: refused)."),
    device: Optional[DeviceOpt] = typer.Option(None, "--device", help="cpu or cuda (default: what auto finds)."),
    precision: PrecisionOpt = typer.Option(PrecisionOpt.fp32, "--precision", help="torch only: encoder precision."),
    size: Optional[str] = typer.Option(None, "--size", help="Working size HxW of every stream, e.g. 240x427 (one encoder call per step); default: each stream's frame size."),
    max_streams: int = typer.Option(EngineConfig.max_streams, "--max-streams", min=1, help="Streams held at once (one memory bank each); a new stream beyond is refused."),
    idle_timeout: float = typer.Option(EngineConfig.idle_timeout, "--idle-timeout", min=0.1, help="Seconds without a frame after which a stream is freed."),
    triton_log: Optional[Path] = typer.Option(None, "--triton-log", help="Triton's own log file (default: a temporary file, printed at start)."),
) -> None:
    """Serve model 'mast' (input frame UINT8 HxWx3 BGR, optional mask UINT8 HxW, request parameter stream_id; output mask UINT8 HxW) through Triton Inference Server.

    Exit codes: 130 stopped by Ctrl-C/SIGTERM, 2 bad options (one line), 1 Triton stopped on its own.
    """  # noqa: E501 - typer keeps docstring line breaks: one line per paragraph
    console, err = consoles()
    with exit_on_error(err):
        if checkpoint is not None and model is not None:
            raise InputError("give --checkpoint FILE (torch) or --model DIR (an export folder), not both")
        cfg = ServeConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, address=address,
                          backend=backend.value, model=checkpoint or model, device=device.value if device else None,
                          precision=precision.value, triton_log=triton_log,
                          engine=EngineConfig(max_streams=max_streams, idle_timeout=idle_timeout,
                                              size=parse_size(size)))
        with Interrupt(signals=(SIGINT, SIGTERM)) as interrupt:
            code = serve(cfg, console.print, interrupt)
    raise typer.Exit(code=code)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``mast-serve``)."""
    app(args=argv, prog_name="mast-serve")


if __name__ == "__main__":  # pragma: no cover
    main()
