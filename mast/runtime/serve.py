"""``mast-serve``: many streams behind a real Triton Inference Server (started through PyTriton).

::

    mast-serve [--http-port 8000] [--grpc-port 8001] [--metrics-port 8002] [--address 127.0.0.1]
               [--token SECRET] [--checkpoint F | --model DIR --backend onnxruntime] [--device cpu|cuda]
               [--size HxW] [--max-streams 8] [--idle-timeout 60]

Private by default: it listens on this machine only (``--address 127.0.0.1``; another address is
said at start), and with a shared secret (``--token`` or ``$MAST_TOKEN``) Triton refuses every
request that does not carry it (docs/SERVING.md: running it behind a TLS reverse proxy).

The contract (docs/SERVING.md; its names in :mod:`mast.runtime.protocol`; a stock ``tritonclient``
uses it, :mod:`mast.runtime.client` is one): model ``mast``; input ``frame`` UINT8 ``[H, W, 3]``
BGR; optional input ``mask`` UINT8 ``[H, W]`` object ids (a stream's first request must carry it: it starts the stream; later it
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
the summary is printed, exit code 130. Its temporary files are removed at exit, and those of a
server that was killed at the next start (:mod:`mast.runtime.serve_scratch`).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import re
import sysconfig
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
                           exit_on_error, parse_size, radius_option)
from mast.core.errors import DependencyError, InputError
from mast.core.openmp import openmp_defaults
from mast.runtime import factory
from mast.runtime.batcher import Batcher
from mast.runtime.engine import Engine, EngineConfig, Job, StreamError
from mast.runtime.protocol import (ANCHOR_MODES, ANCHOR_PARAMETER, DEFAULT_ADDRESS, FRAME_INPUT, MASK_INPUT,
                                   MASK_OUTPUT, MODEL_NAME, STREAM_PARAMETER, TOKEN_ENV)
from mast.runtime.serve_scratch import (SCRATCH_LOG, make_scratch, record_shared_memory, record_triton_folders,
                                       remove_scratch, remove_stale)
from mast.runtime.tracker import working_size

# The endpoints refused without the token (Triton's protocol groups): all but "health" (server and
# model live / ready: no data, what a router probes, and what PyTriton polls without a token)
RESTRICTED_ENDPOINTS = ("metadata", "inference", "shared-memory", "model-config", "model-repository", "statistics",
                        "trace", "logging")
_CAUSE = re.compile(r"^\S*?(\w*(?:Error|Exception)): (.+)$", re.MULTILINE)   # a line "XError: text" of a traceback
POLL_S = 0.2   # how often the main thread checks for Ctrl-C and a dead server
RECORD_S = 2.0   # how often the shared memory the server maps is listed (removed after a SIGKILL)
START_ATTEMPTS = 3


@dataclass
class ServeConfig:
    """What ``mast-serve`` runs (one field per option)."""

    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    address: str = DEFAULT_ADDRESS
    token: str | None = None           # shared secret every request must carry (None: none asked)
    backend: factory.BackendName = "auto"
    model: Path | None = None          # checkpoint .pt or export folder; None = the shipped weights
    device: factory.DeviceName | None = None
    precision: factory.Precision = "fp32"
    radius: int | None = None          # attention window radius; None = the model's
    engine: EngineConfig = field(default_factory=EngineConfig)
    triton_log: Path | None = None     # Triton's own log file (None: in the server's temporary folder)


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
    return Job(stream_id, request.data[FRAME_INPUT], request.data.get(MASK_INPUT), merge=mode == "merge")


def infer_function(batcher: Batcher, say: Callable[[str], None]) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    """PyTriton's inference callable: each request's frame through ``batcher``; a refused request
    raises its StreamError (Triton answers it with the message), reported on one line."""

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        out = []
        for request in requests:   # one per call: Triton's batching is off (module docstring)
            try:
                out.append({MASK_OUTPUT: batcher.submit(request_job(request))})
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


def _pytriton() -> tuple[Any, Any, Any, Any, Any]:
    """(Triton, TritonConfig, TritonSecurityConfig, ModelConfig, Tensor) of PyTriton, or a one-line
    DependencyError."""
    try:
        from pytriton.model_config import ModelConfig, Tensor  # noqa: PLC0415 - optional dependency
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig  # noqa: PLC0415
    except ImportError as exc:
        raise DependencyError(f"mast-serve needs PyTriton ({exc}): make the serve environment "
                              "(docs/SERVING.md: scripts/serve_venv DIR) and run DIR/bin/mast-serve") from None
    return Triton, TritonConfig, TritonSecurityConfig, ModelConfig, Tensor


def failure_cause(exc: BaseException) -> str:
    """One line for a failed start: the last ``XError: text`` line of the message (PyTriton quotes
    its helper's traceback), else its first line."""
    text = str(exc).strip()
    causes = _CAUSE.findall(text)
    return f"{causes[-1][0]}: {causes[-1][1]}" if causes else (text.splitlines() or [type(exc).__name__])[0]


def is_loopback(address: str) -> bool:
    """Whether ``address`` is reachable from this machine only."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:   # a host name: assumed reachable from elsewhere
        return False


def quiet(triton: Any) -> None:
    """Stop PyTriton echoing the Triton process's console on our stdout (``Signal (2) received.``,
    its helpers' ``Non-graceful termination detected.`` at each stop); Triton's log (``--triton-log``)
    is unchanged. PyTriton has no option for it: its server object's ``_verbose`` flag, when present."""
    server = getattr(triton, "_triton_server", None)
    if server is not None and hasattr(server, "_verbose"):
        server._verbose = False


def start_triton(cfg: ServeConfig, scratch: Path, log: Path, gpu: bool, infer: Callable[..., Any], stack: ExitStack,
                 say: Callable[[str], None]) -> Any:
    """Triton running (closed by ``stack``; PyTriton's workspace in ``scratch``) with model ``mast``
    bound to ``cfg.engine.max_streams`` instances of ``infer``; with ``cfg.token`` every endpoint
    refuses requests without it. ``gpu``: collect GPU metrics (off on CPU: NVML is absent there).
    PyTriton's instances sometimes fail their start-up handshake (its helper processes race for one
    socket; more likely on a busy CPU): Triton is then stopped and started afresh, up to
    :data:`START_ATTEMPTS` times."""
    Triton, TritonConfig, TritonSecurityConfig, ModelConfig, Tensor = _pytriton()
    config = TritonConfig(http_address=cfg.address, http_port=cfg.http_port, grpc_address=cfg.address,
                          grpc_port=cfg.grpc_port, metrics_address=cfg.address, metrics_port=cfg.metrics_port,
                          allow_gpu_metrics=gpu, log_file=log, exit_timeout_secs=5)
    # without a token PyTriton still guards Triton's admin endpoints with a random one of its own
    security = (TritonSecurityConfig(access_token=cfg.token, restricted_endpoints=list(RESTRICTED_ENDPOINTS))
                if cfg.token else None)
    attempt = 1
    while True:
        attempt_stack = ExitStack()
        triton = attempt_stack.enter_context(Triton(config=config, workspace=scratch / f"pytriton-{attempt}",
                                                    security_config=security))
        quiet(triton)
        try:
            triton.bind(model_name=MODEL_NAME, infer_func=[infer] * cfg.engine.max_streams,
                        inputs=[Tensor(name=FRAME_INPUT, dtype=np.uint8, shape=(-1, -1, 3)),
                                Tensor(name=MASK_INPUT, dtype=np.uint8, shape=(-1, -1), optional=True)],
                        outputs=[Tensor(name=MASK_OUTPUT, dtype=np.uint8, shape=(-1, -1))],
                        config=ModelConfig(batching=False), strict=True)
            triton.run()
        except Exception as exc:  # noqa: BLE001 - PyTriton and tritonclient raise their own types
            attempt_stack.close()
            cause = failure_cause(exc)
            if attempt == START_ATTEMPTS:
                raise DependencyError(f"Triton could not load model {MODEL_NAME!r} ({START_ATTEMPTS} attempts): "
                                      f"{cause} (Triton's log: {log})") from None
            attempt += 1
            say(f"Triton could not load the model ({cause}): starting it again ({attempt}/{START_ATTEMPTS})")
            continue
        stack.push(attempt_stack)
        return triton


def serve(cfg: ServeConfig, say: Callable[[str], None] = print, interrupt: Interrupt | None = None,
          warn: Callable[[str], None] | None = None) -> int:
    """Build the backend and the engine, start Triton with the model bound, serve until ``interrupt``
    (or Triton stops). Returns the exit code. ``warn``: where warnings go (default ``say``)."""
    warn = warn or say
    _pytriton()   # a missing PyTriton is said before the model loads
    if not is_loopback(cfg.address):
        warn(f"listening on {cfg.address}: other machines can reach this server"
             + ("" if cfg.token else f" and, without --token (${TOKEN_ENV}), use it") + "; plain gRPC/HTTP, no TLS "
             "(docs/SERVING.md: a TLS reverse proxy in front, or --address 127.0.0.1, the default)")
    if cleaned := remove_stale():
        say(f"removed the temporary files of {cleaned} mast-serve process(es) that were killed")
    backend = factory.make_backend(cfg.backend, cfg.model, cfg.device, "model", cfg.precision, cfg.radius)
    try:
        size = working_size(cfg.engine.size, backend.input_size, cfg.model)   # the one --size rule of every command
    except InputError:
        backend.close()
        raise
    config = factory.model_config(backend)   # the model's stride and window (or --radius)
    engine = Engine(backend, cfg.engine, config)
    say(f"backend: {factory.describe(backend)}, working size "
        + (f"{size[0]}x{size[1]}" if size else "= each stream's frame size")
        + f", attention radius {config.attention.radius}"
        + f"; up to {cfg.engine.max_streams} streams, freed after {cfg.engine.idle_timeout:g} s idle")
    python_libdir_env()
    logging.getLogger("pytriton").setLevel(logging.CRITICAL)   # refusals are reported by infer_function
    scratch = make_scratch()
    log = cfg.triton_log or scratch / SCRATCH_LOG
    batcher = Batcher(engine, tick=min(1.0, cfg.engine.idle_timeout / 4))
    started = time.monotonic()
    running = False
    try:
        with ExitStack() as stack:
            triton = start_triton(cfg, scratch, log, str(backend.device).startswith("cuda"),
                                  infer_function(batcher, say), stack, say)
            running = True
            record_triton_folders(scratch)
            say(f"serving model {MODEL_NAME!r}: HTTP {cfg.address}:{cfg.http_port}, "
                f"gRPC {cfg.address}:{cfg.grpc_port}, metrics {cfg.address}:{cfg.metrics_port}"
                + (", every request must carry the token" if cfg.token else "")
                + f" (Triton's log: {log}" + ("" if cfg.triton_log else ", removed at exit") + "); Ctrl-C stops")
            recorded = 0.0
            while triton.is_alive() and not (interrupt is not None and interrupt.requested):
                if time.monotonic() - recorded > RECORD_S:
                    record_shared_memory(scratch)
                    recorded = time.monotonic()
                time.sleep(POLL_S)
            stopped_by_signal = interrupt is not None and interrupt.requested
            say("stopping ..." if stopped_by_signal else "Triton stopped: shutting down")
    finally:   # after Triton has stopped (it waits for the requests in flight)
        batcher.close()
        backend.close()
        remove_scratch(scratch, keep_log=not running)   # a failed start keeps Triton's log (its path was said)
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
    address: str = typer.Option(DEFAULT_ADDRESS, "--address", help="Address the HTTP, gRPC and metrics endpoints bind to: 127.0.0.1 (the default) this machine only; 0.0.0.0 every interface (said at start; see --token)."),
    token: Optional[str] = typer.Option(None, "--token", envvar=TOKEN_ENV, show_envvar=True, help="A shared secret every request must carry (mast-run --token, or the gRPC header triton-grpc-protocol-triton-access-token); without it none is asked."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="Checkpoint .pt for the torch backend (default: the shipped weights)."),
    model: Optional[Path] = typer.Option(None, "--model", help="Export folder from mast-export (with --backend onnxruntime)."),
    backend: BackendOpt = typer.Option(BackendOpt.auto, "--backend", help="auto, torch or onnxruntime (tensorrt runs one stream per engine: refused)."),
    device: Optional[DeviceOpt] = typer.Option(None, "--device", help="cpu or cuda (default: what auto finds)."),
    precision: PrecisionOpt = typer.Option(PrecisionOpt.fp32, "--precision", help="torch: encoder precision; onnxruntime: bf16 reads the memory in bf16 (AVX512-BF16 CPUs)."),
    size: Optional[str] = typer.Option(None, "--size", help="Working size HxW of every stream, e.g. 240x427 (one encoder call per step); default: each stream's frame size."),
    radius: Optional[int] = radius_option(),
    max_streams: int = typer.Option(EngineConfig.max_streams, "--max-streams", min=1, help="Streams held at once (one memory bank each); a new stream beyond is refused."),
    idle_timeout: float = typer.Option(EngineConfig.idle_timeout, "--idle-timeout", min=0.1, help="Seconds without a frame after which a stream is freed."),
    triton_log: Optional[Path] = typer.Option(None, "--triton-log", help="Triton's own log file (default: in a temporary folder removed at exit, printed at start)."),
) -> None:
    """Serve model 'mast' (input frame UINT8 HxWx3 BGR, optional mask UINT8 HxW, request parameter stream_id; output mask UINT8 HxW) through Triton Inference Server.

    Private by default: it listens on 127.0.0.1; with --token every request must carry the secret (docs/SERVING.md: TLS through a reverse proxy).

    Exit codes: 130 stopped by Ctrl-C/SIGTERM, 2 bad options (one line), 1 Triton stopped on its own.
    """  # noqa: E501 - typer keeps docstring line breaks: one line per paragraph
    console, err = consoles()
    with exit_on_error(err):
        if checkpoint is not None and model is not None:
            raise InputError("give --checkpoint FILE (torch) or --model DIR (an export folder), not both")
        if token is not None and not token.strip():
            raise InputError(f"--token (or ${TOKEN_ENV}) is empty: give a secret, or leave it unset for none")
        cfg = ServeConfig(http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port, address=address,
                          token=token,
                          backend=backend.value, model=checkpoint or model, device=device.value if device else None,
                          precision=precision.value, radius=radius, triton_log=triton_log,
                          engine=EngineConfig(max_streams=max_streams, idle_timeout=idle_timeout,
                                              size=parse_size(size)))
        with Interrupt(signals=(SIGINT, SIGTERM)) as interrupt:
            code = serve(cfg, console.print, interrupt, warn=lambda line: err.print(f"warning: {line}"))
    raise typer.Exit(code=code)


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point (``mast-serve``); the OpenMP defaults of :mod:`mast.core.openmp` first (torch is not loaded yet)."""
    openmp_defaults()
    app(args=argv, prog_name="mast-serve")


if __name__ == "__main__":  # pragma: no cover
    main()
