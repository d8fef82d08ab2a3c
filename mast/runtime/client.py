"""The client of ``mast-serve`` (``mast-run --server HOST:PORT --stream-id NAME [--token T]``): the
tracker's ``start`` / ``step`` / ``anchor`` sent to the server over gRPC with ``tritonclient``.

A server that restarts costs one re-anchor, not a frame. While the server cannot answer (down, starting,
its model not loaded yet, stopping: connection errors, "unknown model", "not ready", "shutting down"),
a request is sent again every :data:`RETRY_EVERY_S` s for up to ``retry_s`` seconds, said on one line
when the wait starts and one when it ends. A server that does not hold the stream (it restarted, or
freed it after its idle timeout) answers ``unknown stream``: the client then re-sends its last mask
with the same frame, which starts the stream there again. Only the protocol's names are imported
(:mod:`mast.runtime.protocol`), not the server.
"""
from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mast.core.errors import DependencyError, InputError
from mast.runtime.protocol import (ANCHOR_PARAMETER, FRAME_INPUT, GRPC_TOKEN_HEADER, MASK_INPUT, MASK_OUTPUT,
                                   MODEL_NAME, SHUTTING_DOWN, STREAM_HEADER, STREAM_PARAMETER, TOKEN_ENV,
                                   UNKNOWN_STREAM)

RETRY_EVERY_S = 0.5
RETRY_S = 120.0      # how long a server that cannot answer is waited for (a restart takes tens of seconds)
TLS_SCHEME = "grpcs://"   # --server grpcs://HOST:PORT: TLS to a reverse proxy in front of the server
UNREACHABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")
# what the server answers while it starts, restarts or stops, lower case: Triton's "Request for unknown
# model: 'mast' is not found" / "... has no available versions", "... not ready", and ours (SHUTTING_DOWN)
NOT_READY = ("unknown model", "not ready", SHUTTING_DOWN)
TOKEN_REFUSED = "restricted"   # Triton's refusal of a request without the shared secret ("This API is restricted ...")
_CAUSE = re.compile(r"^\S*?(\w*Error): (.+)$", re.MULTILINE)   # the raised error's line in the server's traceback


class ServerError(InputError):
    """The server refused a request (its cause) or could not be reached."""


def error_cause(message: str) -> str:
    """The cause of a server error message: ``Class: text`` of the error the model raised (PyTriton
    sends its traceback), else Triton's own message (a wrong dtype or rank), whole."""
    causes = _CAUSE.findall(message)
    return f"{causes[-1][0]}: {causes[-1][1]}" if causes else message.strip()


def first_line(message: str) -> str:
    """The cause of a server error message on one line (for the waits said)."""
    return (error_cause(message).splitlines() or ["no message"])[0]


def transient(status: str | None, message: str) -> bool:
    """Whether a failed request is worth sending again: the server cannot answer yet (``status``, the
    gRPC status name; ``message``, the server's error message)."""
    lower = message.lower()
    return status in UNREACHABLE or any(pattern in lower for pattern in NOT_READY)


def tritonclient_grpc() -> Any:
    """``tritonclient.grpc``, or a one-line DependencyError naming the install."""
    try:
        import tritonclient.grpc as grpcclient  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise DependencyError(f"mast-run --server needs tritonclient ({exc}): make the serve environment "
                              "(docs/SERVING.md: scripts/serve_venv DIR) and run DIR/bin/mast-run") from None
    return grpcclient


def auth_headers(token: str | None) -> dict[str, str]:
    """The gRPC metadata carrying the shared secret ``token`` (none without one)."""
    return {GRPC_TOKEN_HEADER: token} if token else {}


def connect(url: str) -> Any:
    """A ``tritonclient`` gRPC client for ``url``: ``HOST:PORT`` (plain gRPC) or ``grpcs://HOST:PORT``
    (TLS, e.g. to a reverse proxy; the system's root certificates, or $GRPC_DEFAULT_SSL_ROOTS_FILE_PATH)."""
    grpc = tritonclient_grpc()
    if url.startswith(TLS_SCHEME):
        return grpc.InferenceServerClient(url[len(TLS_SCHEME):], ssl=True)
    return grpc.InferenceServerClient(url.removeprefix("grpc://"))


class RemoteTracker:
    """A :class:`~mast.runtime.tracker.Tracker` whose frames are tracked by a ``mast-serve`` at ``url``
    (``HOST:PORT``, its gRPC port, or ``grpcs://HOST:PORT`` through a TLS proxy) as stream ``stream_id``.
    Masks are uint8 ``[H, W]`` object ids.

    token: the server's shared secret (None: ``$MAST_TOKEN`` if set); timeout: seconds for one
    request; retry_s: how long a server that cannot answer is waited for; say: where the waits and
    re-anchors are reported (one line each; default stderr).
    """

    size = None   # the server decides the working size

    def __init__(self, url: str, stream_id: str, token: str | None = None, timeout: float = 60.0,
                 retry_s: float = RETRY_S, say: Callable[[str], None] | None = None) -> None:
        self.grpc = tritonclient_grpc()
        self.url, self.stream_id, self.timeout, self.retry_s = url, stream_id, timeout, retry_s
        self.say = say or (lambda line: print(line, file=sys.stderr, flush=True))
        self.headers = {STREAM_HEADER: stream_id, **auth_headers(token or os.environ.get(TOKEN_ENV))}
        self.client = connect(url)
        self.last_mask: np.ndarray | None = None
        self.reanchors = 0   # masks re-sent because the server did not hold the stream
        self.waits = 0       # times the server could not answer and was waited for
        try:
            self.client.is_server_live(headers=self.headers, client_timeout=timeout)
        except self.grpc.InferenceServerException as exc:   # nothing there: said at once, not waited for
            raise ServerError(f"no mast-serve at {url} ({first_line(exc.message() or str(exc))}): start one "
                              "(mast-serve) or check --server HOST:PORT (its gRPC port)") from None
        self._call(self._ready)   # a server that is starting is waited for

    def start(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Start the stream (or re-anchor it, if the server holds it already) at ``frame`` with ``mask``."""
        return self._send(frame, mask)

    def anchor(self, frame: np.ndarray, mask: np.ndarray, merge: bool = False) -> np.ndarray:
        """Re-anchor at ``frame`` as :meth:`Tracker.anchor`: ``mask`` is complete (objects it lacks are
        dropped), or with ``merge`` painted over the server's prediction (new ids added either way)."""
        return self._send(frame, mask, {ANCHOR_PARAMETER: "merge" if merge else "replace"})

    def step(self, frame: np.ndarray) -> np.ndarray:
        """The mask of the next frame; an unknown stream is started again with the last mask."""
        if self.last_mask is None:
            raise InputError("step() before start(): give the first frame and its mask with start()")
        try:
            return self._send(frame, None)
        except ServerError as exc:
            if UNKNOWN_STREAM not in str(exc):
                raise
        self.reanchors += 1
        self.say(f"the server at {self.url} does not hold stream {self.stream_id!r} (restarted or idle): "
                 "re-sent the last mask with this frame")
        return self._send(frame, self.last_mask)

    def close(self) -> None:
        self.client.close()

    # -- internals ---------------------------------------------------------------------------------
    def _send(self, frame: np.ndarray, mask: np.ndarray | None, extra: dict[str, str] | None = None) -> np.ndarray:
        """One request (``extra``: more request parameters), sent again while the server cannot
        answer; the returned mask becomes ``last_mask``."""
        inputs = [self._input(FRAME_INPUT, frame)] + ([] if mask is None else [self._input(MASK_INPUT, mask)])
        parameters = {STREAM_PARAMETER: self.stream_id, **(extra or {})}
        result = self._call(lambda: self.client.infer(MODEL_NAME, inputs, parameters=parameters,
                                                      headers=self.headers, client_timeout=self.timeout))
        self.last_mask = result.as_numpy(MASK_OUTPUT)
        return self.last_mask

    def _call(self, request: Callable[[], Any]) -> Any:
        """``request()``, repeated every RETRY_EVERY_S s for up to ``retry_s`` s while the server cannot
        answer (:func:`transient`); the wait is said when it starts and when it ends."""
        waited_since: float | None = None
        while True:
            try:
                result = request()
                break
            except self.grpc.InferenceServerException as exc:
                message = exc.message() or str(exc)
                self._refusal(message)
                if not transient(exc.status(), message):
                    self._waited(waited_since)
                    raise ServerError(f"mast-serve at {self.url}: {error_cause(message)}") from None
                now = time.monotonic()
                if waited_since is None:
                    waited_since, self.waits = now, self.waits + 1
                    self.say(f"mast-serve at {self.url} cannot answer ({first_line(message)}): "
                             f"waiting for it, up to {self.retry_s:g} s")
                elif now - waited_since > self.retry_s:
                    raise ServerError(f"mast-serve at {self.url} did not answer for {self.retry_s:g} s "
                                      f"({first_line(message)}): is it running? "
                                      "(mast-serve; --server HOST:PORT is its gRPC port)") from None
                time.sleep(RETRY_EVERY_S)
                self.client.close()   # a fresh channel: gRPC's own reconnection backs off up to minutes
                self.client = connect(self.url)
        self._waited(waited_since)
        return result

    def _waited(self, since: float | None) -> None:
        """Say that the server answers again (if it was waited for, since ``since``)."""
        if since is not None:
            self.say(f"mast-serve at {self.url} answers again after {time.monotonic() - since:.1f} s")

    def _ready(self) -> None:
        """Nothing once the server's model is ready and it takes our token (its metadata is asked:
        health probes take no token); else the exception :meth:`_call` waits on or raises."""
        if not self.client.is_model_ready(MODEL_NAME, headers=self.headers, client_timeout=self.timeout):
            raise self.grpc.InferenceServerException(f"model {MODEL_NAME!r} is not ready")
        self.client.get_model_metadata(MODEL_NAME, headers=self.headers, client_timeout=self.timeout)

    def _refusal(self, message: str) -> None:
        """A ServerError when the server refused the request for its shared secret."""
        if TOKEN_REFUSED in message.lower():
            given = GRPC_TOKEN_HEADER in self.headers
            raise ServerError(f"mast-serve at {self.url} refused the request: "
                              + ("the token is not the server's (--token / $MAST_TOKEN)" if given else
                                 "it requires a shared secret: give --token TOKEN or set $MAST_TOKEN")) from None

    def _input(self, name: str, array: np.ndarray) -> Any:
        tensor = self.grpc.InferInput(name, list(array.shape), "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(array, np.uint8))
        return tensor
