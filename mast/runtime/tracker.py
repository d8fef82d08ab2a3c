"""The streaming tracker: ``start(frame, mask)``, ``step(frame) -> mask``, ``anchor(frame, mask)``.

Written once for every backend (torch-free): the backend encodes and reads; :class:`Tracker` keeps
the label set, the slot table and the per-frame step of docs/DESIGN.md (hard propagation).
:class:`ObjectTracker` is the interface it shares with the client of ``mast-serve``
(:class:`mast.runtime.client.RemoteTracker`); :func:`track` runs either over a sequence of frames;
:func:`working_size` is the one rule for a requested working size against an exported model's
fixed size (``mast-run``, ``mast-serve``, ``mast-eval``, ``mast-bench`` and :func:`mast.open_tracker`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from mast.core.config import AttentionConfig, ModelConfig
from mast.core.errors import InputError
from mast.core.labels import feature_labels
from mast.core.metadata import SEMANTIC_ATTENTION
from mast.runtime.backend import Backend
from mast.runtime.memory import SlotTable

StageTimer = Callable[[str], AbstractContextManager[Any]]
"""Timing hook: called with a stage name ("preprocess", "encoder", "attention", "postprocess"),
returns a context manager wrapped around that stage of ``step`` (e.g. ``mast.runtime.bench``)."""


@runtime_checkable
class ObjectTracker(Protocol):
    """What follows objects through a stream, locally (:class:`Tracker`) or on a ``mast-serve``
    (:class:`mast.runtime.client.RemoteTracker`). Frames are BGR ``uint8 [H, W, 3]``; masks are
    ``uint8 [H, W]`` object ids (0 = background, 1..255 objects) at the frame's size."""

    def start(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Begin a stream at ``frame`` with its ``mask``; returns the mask stored."""
        ...

    def step(self, frame: np.ndarray) -> np.ndarray:
        """The mask of the next frame of the stream."""
        ...

    def anchor(self, frame: np.ndarray, mask: np.ndarray, merge: bool = False) -> np.ndarray:
        """Take the next ``frame`` with a given or corrected ``mask`` (complete, or with ``merge``
        painted over the prediction); it becomes the long-term anchor. Returns the mask stored."""
        ...

    def close(self) -> None:
        """Release what the tracker holds (backend, connection)."""
        ...


def working_size(requested: tuple[int, int] | None, fixed: tuple[int, int] | None,
                 model: object = None) -> tuple[int, int] | None:
    """The working size (H, W) in pixels for a ``requested`` size (``--size``; None = not given) and
    a backend's ``fixed`` input size (an exported model's; None = any size).

    The one rule of every command: a fixed size is used as it is; a requested size that differs from
    it is refused (InputError naming ``model``), since the exported graph runs at that size only.
    None for both: each frame is tracked at its own size.
    """
    if fixed is None:
        return None if requested is None else (int(requested[0]), int(requested[1]))
    if requested is not None and tuple(requested) != tuple(fixed):
        what = f"the model {model}" if model is not None else "the exported model"
        raise InputError(f"--size {requested[0]}x{requested[1]} but {what} was exported for "
                         f"{fixed[0]}x{fixed[1]} (it runs at that size only): drop --size, or re-export "
                         f"with mast-export --height {requested[0]} --width {requested[1]}")
    return int(fixed[0]), int(fixed[1])


def track(tracker: ObjectTracker, frames: Iterable[np.ndarray], first_mask: np.ndarray) -> Iterator[np.ndarray]:
    """Start ``tracker`` on the first of ``frames`` (BGR ``uint8 [H, W, 3]``) with ``first_mask``
    (ids ``uint8 [H, W]``, the first frame's size), then step it: yields one mask ``uint8 [H, W]`` per
    frame, the first frame's (as stored) included. Lazy: a frame is tracked when its mask is taken."""
    started = False
    for frame in frames:
        if not started:
            started = True
            yield tracker.start(frame, first_mask)
        else:
            yield tracker.step(frame)
    if not started:
        raise InputError("no frame to track (the frames are empty): give at least the first frame")


def _check_attention(config: ModelConfig, backend: Backend) -> None:
    """InputError (one line) when ``config``'s attention is not the one ``backend`` reads its memory
    with (its ``attention``; the bank, not the tracker, applies it): a tracker configured for another
    radius would otherwise read with the backend's without a word."""
    read_with = getattr(backend, "attention", None)
    if not isinstance(read_with, AttentionConfig):
        return
    differ = [f"{k} {getattr(config.attention, k)} (backend {getattr(read_with, k)})"
              for k in SEMANTIC_ATTENTION if getattr(config.attention, k) != getattr(read_with, k)]
    if differ:
        raise InputError(f"the tracker's attention differs from its backend's: {', '.join(differ)}: build the "
                         "backend with it (make_backend(radius=...)) or use factory.model_config(backend)")


class Tracker:
    """Follows every object of a mask through a frame stream with a fixed-size memory bank.

    Masks are uint8 ``[H, W]`` object ids (0 = background). Each frame is encoded exactly once.
    ``size`` (H, W) in pixels, or the backend's ``input_size`` when it has a fixed one (a different
    ``size`` is then refused: :func:`working_size`): frames are resized to it (area interpolation),
    given masks too (nearest), and predicted masks back to the frame's own size (nearest). None:
    work at each frame's own size.
    ``config``: the key stride, label offset and memory schedule the tracker applies; its attention
    must be the one ``backend`` reads with (the bank applies it; a different one is refused):
    :func:`mast.runtime.factory.model_config` gives the configuration of a built backend.
    ``timer`` (optional :data:`StageTimer`) times the stages of ``step``; it changes no result.
    """

    def __init__(self, backend: Backend, config: ModelConfig = ModelConfig(),
                 size: tuple[int, int] | None = None, timer: StageTimer | None = None) -> None:
        self.backend = backend
        self.timer = timer
        self.config = config
        _check_attention(config, backend)
        self.size = working_size(size, backend.input_size)
        self.slots = SlotTable(config.memory)
        self.ids = np.zeros(1, np.uint8)   # [L] object id of each label channel (channel 0 = background)
        self.t = -1                        # index of the last frame seen
        self.last_distribution: Any = None  # backend handle [L, h, w]: what predicted the last frame

    # -- public API ---------------------------------------------------------------------------
    def start(self, frame: np.ndarray, mask: np.ndarray, key: Any = None) -> np.ndarray:
        """Begin a stream at ``frame`` with its ``mask`` (ids). Returns the mask. ``key``: as in :meth:`anchor`."""
        self.t = -1
        self.ids = np.zeros(1, np.uint8)
        return self.anchor(frame, mask, key=key)

    def anchor(self, frame: np.ndarray, mask: np.ndarray, merge: bool = False, key: Any = None) -> np.ndarray:
        """Take ``frame`` (the next frame of the stream) with a given or corrected ``mask``: it
        becomes the long-term anchor; new ids are added as objects. Returns the mask stored.

        ``merge=False``: ``mask`` is complete (objects it lacks are dropped). ``merge=True``: it holds
        only new or corrected objects (e.g. a YouTube-VOS mask introducing an object mid-video): the
        frame is predicted as by ``step`` and ``mask``'s non-zero pixels are painted over the
        prediction; the merged mask ``[H, W]`` is returned. Either way the frame is encoded once.
        ``key``: the frame's key already encoded by the caller (``backend.encode`` of
        :meth:`work_frame`'s result; the batched engine encodes many streams' frames at once).
        """
        self._check_mask(frame, mask)
        if merge and self.t < 0:
            raise InputError("anchor(merge=True) before start(): give the first frame and its mask with start()")
        given, full = mask, frame.shape[:2]
        mask = self._to_work_size(mask, nearest=True)
        self.t += 1
        key = self._encode(frame) if key is None else key
        if not merge:
            self.backend.read(key, [], [])   # an anchor frame reads nothing (see Backend: one read per frame)
        else:
            predicted = self.ids[self.backend.decode(self._read(key), mask.shape)]
            mask = np.where(mask > 0, mask, predicted)
            given = np.where(given > 0, given, self._to_size(predicted, full))
        new = np.setdiff1d(np.unique(mask), self.ids)
        if new.size or self.t == 0:
            self.ids = np.concatenate([self.ids, new]).astype(np.uint8)
            # a new label set changes the bank's shape: start it afresh from this anchor
            self.backend.allocate(self.config.memory.n_slots, key, len(self.ids))
            self.slots.reset(self.t)
        else:
            self.slots.anchor = self.t
        self._store(key, mask)
        return given

    def step(self, frame: np.ndarray, memory_mask: np.ndarray | None = None, key: Any = None) -> np.ndarray:
        """Predict the mask ``[H, W]`` (ids) of the next frame of the stream.

        ``memory_mask`` (ids, optional) is stored in memory for this frame instead of the
        prediction (teacher forcing, e.g. to replay a reference run); the prediction is returned.
        ``key``: the frame's key already encoded by the caller (as in :meth:`anchor`).
        """
        if self.t < 0:
            raise InputError("step() before start(): give the first frame and its mask with start()")
        if memory_mask is not None:
            self._check_mask(frame, memory_mask)
            memory_mask = self._to_work_size(memory_mask, nearest=True)
        full = frame.shape[:2]
        self.t += 1
        key = self._encode(frame) if key is None else key
        with self._stage("attention"):
            probs = self._read(key)
        with self._stage("postprocess"):
            mask = self.ids[self.backend.decode(probs, self._work_shape(full))]
            self._store(key, mask if memory_mask is None else memory_mask)
            mask = self._to_size(mask, full)
        return mask

    def track(self, frames: Iterable[np.ndarray], first_mask: np.ndarray) -> Iterator[np.ndarray]:
        """Masks ``uint8 [H, W]`` of ``frames`` (BGR ``uint8 [H, W, 3]``), the first one's being
        ``first_mask`` (ids): :func:`track` on this tracker (it starts a new stream)."""
        return track(self, frames, first_mask)

    def close(self) -> None:
        """Release the backend (its bank, sessions or device buffers)."""
        self.backend.close()

    def __enter__(self) -> "Tracker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def work_frame(self, frame: np.ndarray) -> np.ndarray:
        """``frame`` ``[H, W, 3]`` at the working size (area interpolation): what the encoder takes."""
        return self._to_work_size(frame)

    def _work_shape(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """(H, W) a frame of ``shape`` (H, W, ...) is tracked at: the working size, or its own."""
        return tuple(self.size) if self.size is not None else tuple(shape[:2])

    # -- internals ----------------------------------------------------------------------------
    def _stage(self, name: str) -> AbstractContextManager[Any]:
        """The timer's context for stage ``name`` (a no-op without a timer)."""
        return self.timer(name) if self.timer is not None else nullcontext()

    def _encode(self, frame: np.ndarray) -> Any:
        """The key of ``frame`` ``[H, W, 3]`` (resized to the working size, then encoded); a caller
        that encoded it already (the batched engine) passes its key and skips both."""
        with self._stage("preprocess"):
            work = self.work_frame(frame)
        with self._stage("encoder"):
            return self.backend.encode(work)

    def _read(self, key: Any) -> Any:
        """Label distribution ``[L, h, w]`` of frame ``self.t`` read from the memory (kept in ``last_distribution``)."""
        pairs = self.slots.read_slots(self.t)
        self.last_distribution = self.backend.read(key, [s for s, _ in pairs], [d for _, d in pairs])
        return self.last_distribution

    @staticmethod
    def _to_size(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """``mask`` resized (nearest) to ``size`` (H, W) when it differs."""
        if mask.shape[:2] == tuple(size):
            return mask
        return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)

    def _store(self, key: Any, mask: np.ndarray) -> None:
        """Write frame ``self.t``'s key and label channels (one sample per stride cell,
        ``mast.core.labels``) to its slots."""
        stride = self.config.stride
        channel = np.zeros(256, np.int64)
        channel[self.ids] = np.arange(len(self.ids))
        shape = (-(-mask.shape[0] // stride), -(-mask.shape[1] // stride))
        labels = channel[feature_labels(mask, stride, self.config.label_offset, shape)]
        for slot in self.slots.write_slots(self.t):
            self.backend.write(slot, key, labels)

    def _to_work_size(self, image: np.ndarray, nearest: bool = False) -> np.ndarray:
        """``image`` resized to the working size (area for frames, nearest for masks)."""
        if self.size is None or image.shape[:2] == tuple(self.size):
            return image
        h, w = self.size
        return cv2.resize(image, (w, h), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)

    def _check_mask(self, frame: np.ndarray, mask: np.ndarray) -> None:
        if mask.shape != frame.shape[:2]:
            raise InputError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the frame is "
                             f"{frame.shape[1]}x{frame.shape[0]}: give a mask of the frame's size")
        if not mask.any():
            raise InputError("the mask has no object (all pixels are 0): draw at least one object id 1..255")
