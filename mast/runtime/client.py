"""The client of ``mast-serve`` (``mast-run --server HOST:PORT --stream-id NAME``): the tracker's
``start`` / ``step`` / ``anchor`` sent to the server over gRPC with ``tritonclient``.

A server that does not hold the stream (it restarted, or freed it after its idle timeout) answers
``unknown stream``: the client then re-sends its last mask with the same frame, which starts the
stream there again, so a server restart costs one re-anchor, not the stream. While the server is
unreachable (restarting), a request is retried for up to ``retry_s`` seconds.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from mast.core.errors import DependencyError, InputError
from mast.runtime.engine import UNKNOWN_STREAM
from mast.runtime.serve import ANCHOR_PARAMETER, MODEL_NAME, STREAM_PARAMETER

UNREACHABLE = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED")
STREAM_HEADER = "mast-stream-id"   # the stream id again as a header: what a router hashes on (README)
RETRY_EVERY_S = 0.5
_CAUSE = re.compile(r"^\S*?(\w*Error): (.+)$", re.MULTILINE)   # the raised error's line in the server's traceback


class ServerError(InputError):
    """The server refused a request (its cause) or could not be reached."""


def error_cause(message: str) -> str:
    """The cause of a server error message: ``Class: text`` of the error the model raised (PyTriton
    sends its traceback), else Triton's own message (a wrong dtype or rank), whole."""
    causes = _CAUSE.findall(message)
    return f"{causes[-1][0]}: {causes[-1][1]}" if causes else message.strip()


def tritonclient_grpc() -> Any:
    """``tritonclient.grpc``, or a one-line DependencyError naming the install."""
    try:
        import tritonclient.grpc as grpcclient  # noqa: PLC0415 - optional dependency
    except ImportError as exc:
        raise DependencyError(f"mast-run --server needs tritonclient ({exc}): pip install -e \".[serve]\"") from None
    return grpcclient


class RemoteTracker:
    """A :class:`~mast.runtime.tracker.Tracker` whose frames are tracked by a ``mast-serve`` at ``url``
    (``HOST:PORT``, the gRPC port) as stream ``stream_id``. Masks are uint8 ``[H, W]`` object ids.

    timeout: seconds for one request; retry_s: how long an unreachable server is retried;
    say: where the re-anchors and retries are reported (one line each).
    """

    size = None   # the server decides the working size

    def __init__(self, url: str, stream_id: str, timeout: float = 60.0, retry_s: float = 30.0,
                 say: Callable[[str], None] = print) -> None:
        self.grpc = tritonclient_grpc()
        self.url, self.stream_id, self.timeout, self.retry_s, self.say = url, stream_id, timeout, retry_s, say
        self.client = self.grpc.InferenceServerClient(url)
        self.last_mask: np.ndarray | None = None
        self.reanchors = 0   # masks re-sent because the server did not hold the stream
        try:
            ready = self.client.is_model_ready(MODEL_NAME, client_timeout=timeout)
        except self.grpc.InferenceServerException as exc:
            raise ServerError(f"no mast-serve at {url} ({error_cause(exc.message())}): start one (mast-serve) "
                              "or check --server HOST:PORT (its gRPC port)") from None
        if not ready:
            raise ServerError(f"the server at {url} has no ready model {MODEL_NAME!r}: is it a mast-serve?")

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

    def _send(self, frame: np.ndarray, mask: np.ndarray | None, extra: dict[str, str] | None = None) -> np.ndarray:
        """One request (``extra``: more request parameters), retried while the server is unreachable;
        the returned mask becomes ``last_mask``."""
        inputs = [self._input("frame", frame)] + ([] if mask is None else [self._input("mask", mask)])
        parameters = {STREAM_PARAMETER: self.stream_id, **(extra or {})}
        deadline, told = time.monotonic() + self.retry_s, False
        while True:
            try:
                result = self.client.infer(MODEL_NAME, inputs, parameters=parameters,
                                           headers={STREAM_HEADER: self.stream_id}, client_timeout=self.timeout)
                break
            except self.grpc.InferenceServerException as exc:
                if exc.status() not in UNREACHABLE or time.monotonic() > deadline:
                    raise ServerError(f"mast-serve at {self.url}: {error_cause(exc.message() or str(exc))}") from None
                if not told:
                    self.say(f"mast-serve at {self.url} is unreachable: retrying for up to {self.retry_s:g} s")
                    told = True
                time.sleep(RETRY_EVERY_S)
        self.last_mask = result.as_numpy("mask")
        return self.last_mask

    def _input(self, name: str, array: np.ndarray) -> Any:
        tensor = self.grpc.InferInput(name, list(array.shape), "UINT8")
        tensor.set_data_from_numpy(np.ascontiguousarray(array, np.uint8))
        return tensor
