"""The Python front door (re-exported by :mod:`mast`): open a tracker, track frames, the demo clip.

::

    import mast
    frames, first_mask = mast.demo_clip()          # 25 BGR frames [240, 427, 3], ids [240, 427]
    tracker = mast.open_tracker()                  # the shipped weights on the fastest backend here
    for mask in tracker.track(frames, first_mask):
        ...                                        # uint8 [240, 427] object ids per frame

:func:`connect_tracker` gives the same interface on a ``mast-serve``.
Importing this module imports no torch: the torch backend loads it when it is built.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mast.core.config import Precision
from mast.core.errors import InputError
from mast.core.openmp import openmp_defaults
from mast.runtime import factory
from mast.runtime.tracker import ObjectTracker, Tracker, working_size


def open_tracker(model: str | Path | None = None, backend: factory.BackendName = "auto",
                 device: factory.DeviceName | None = None, size: tuple[int, int] | None = None, *,
                 precision: Precision = "fp32", keys: factory.KeySource = "model", radius: int | None = None) -> Tracker:
    """A ready local tracker: ``track(frames, first_mask)`` yields masks; ``start(frame, mask)``,
    ``step(frame)``, ``anchor(frame, mask)``, ``close()`` (:class:`~mast.runtime.tracker.ObjectTracker`)
    step it frame by frame; it is a context manager (``with`` closes the backend).

    ``model``: a checkpoint ``.pt`` or a folder written by ``mast-export``; None = the shipped weights.
    ``backend``: ``auto`` (the fastest usable: tensorrt > onnxruntime CUDA > torch CUDA > onnxruntime
    CPU > torch CPU, :func:`mast.runtime.factory.choose_backend`), ``torch``, ``onnxruntime`` or
    ``tensorrt``. ``device``: ``cpu``, ``cuda`` or None (what ``auto`` finds). ``size``: working size
    (H, W) in pixels (frames are resized to it and masks back); None = each frame's own size, or an
    exported model's fixed size (a different ``size`` is refused: :func:`working_size`).
    ``precision``: torch ``fp32``, ``bf16`` (fast on AVX-512/AMX CPUs; with AVX512-BF16 the memory read in
    bf16 too) or ``fp16`` (CUDA); onnxruntime ``fp32`` or ``bf16`` (its memory read in bf16: AVX512-BF16).
    ``keys`` (torch): ``model``, ``lab`` (raw colour) or ``random``. The key stride, attention radius
    and label offset are the model's (:func:`mast.runtime.factory.model_config`); ``radius``: a
    smaller attention window for speed (a checkpoint; an export keeps its own: docs/RESULTS.md,
    "Window radius").

    Raises a :class:`~mast.core.errors.MastError` with a one-line message when it cannot be built.
    Sets the OpenMP defaults of :mod:`mast.core.openmp` where torch is not loaded yet.
    """
    openmp_defaults()
    built = factory.make_backend(backend, Path(model) if model is not None else None, device, keys, precision, radius)
    try:
        return Tracker(built, factory.model_config(built), size=working_size(size, built.input_size, model))
    except BaseException:
        built.close()
        raise


def connect_tracker(server: str, stream_id: str, token: str | None = None,
                    say: Callable[[str], None] | None = None) -> ObjectTracker:
    """A tracker whose frames a ``mast-serve`` tracks: ``server`` is its ``HOST:PORT`` (the gRPC port),
    ``stream_id`` this stream's name there (the server keeps one memory per stream). The same
    :class:`~mast.runtime.tracker.ObjectTracker` interface as :func:`open_tracker`'s, so
    :func:`mast.runtime.tracker.track` and ``mast-run``'s loop take either; the model and its size are
    the server's. ``token``: the server's shared secret (None: ``$MAST_TOKEN`` if set). Needs the
    ``[serve]`` extra (:class:`mast.runtime.client.RemoteTracker`); ``say`` takes its re-anchor and
    wait lines (default: stderr)."""
    if not stream_id:
        raise InputError("--server needs --stream-id NAME (this stream's name on the server)")
    from mast.runtime.client import RemoteTracker  # noqa: PLC0415 - needs tritonclient ([serve])

    return RemoteTracker(server, stream_id, token=token, say=say)
