"""Per-object bookkeeping over a stream: areas, lost objects, the last good box (torch-free).

An object is *lost* when its area (pixels at the frame's size) stays below ``LossConfig.fraction``
of its anchored area (its area in the mask it was anchored with) for ``LossConfig.frames``
consecutive frames. The loss is reported once (:meth:`ObjectMonitor.update` returns it on the frame
it happens); the object counts as lost until its area is back at or above the threshold, so a
later collapse is a new loss, reported again. The other objects are tracked on regardless.

Objects removed while tracking (:mod:`mast.runtime.edits`) are forgotten (no longer listed, never
reported lost); their ids are not given to new objects (:attr:`ObjectMonitor.next_id`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mast.runtime.boxmask import Box, mask_box


@dataclass(frozen=True)
class LossConfig:
    """When an object counts as lost, and what to do then."""

    fraction: float = 0.05   # area below this fraction of the anchored area ...
    frames: int = 5          # ... for this many consecutive frames: lost
    reanchor: bool = False   # re-segment a lost object in its last good box (see mast.runtime.stream.reanchor_lost)


@dataclass
class ObjectState:
    """One object: ``anchored`` and current ``area`` in pixels, frames in a row under the threshold,
    whether it is lost now, the number of losses so far, and its box in the last frame where it was
    at or above the threshold (``good_box``, pixels, X1/Y1 exclusive)."""

    anchored: int
    area: int = 0
    low_frames: int = 0
    lost: bool = False
    losses: int = 0
    good_box: Box | None = None


@dataclass
class ObjectMonitor:
    """Follows the areas of every anchored object id through the masks of a stream."""

    config: LossConfig = field(default_factory=LossConfig)
    objects: dict[int, ObjectState] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)    # ids of objects removed while tracking

    @property
    def next_id(self) -> int:
        """The id for a new object: one above every id followed or removed so far (ids are not reused)."""
        return max(self.objects.keys() | self.removed, default=0) + 1

    def forget(self, k: int) -> None:
        """Object ``k`` was removed: no longer followed, listed or reported; its id stays used."""
        self.objects.pop(k, None)
        self.removed.add(k)

    def anchor(self, ids: np.ndarray) -> None:
        """Take the objects of ``ids`` ``uint8 [H, W]`` (an anchored mask) with their areas as the
        reference (a re-anchored object is no longer lost; its count of losses stays); objects
        absent from ``ids`` keep their state."""
        areas = _areas(ids)
        for k in (np.nonzero(areas[1:])[0] + 1).tolist():
            losses = self.objects[k].losses if k in self.objects else 0
            self.objects[k] = ObjectState(anchored=int(areas[k]), area=int(areas[k]), losses=losses,
                                               good_box=mask_box(ids == k))

    def update(self, ids: np.ndarray) -> list[int]:
        """Record the areas of a predicted mask ``ids`` ``uint8 [H, W]``; returns the ids lost on this
        frame (each loss once)."""
        areas, newly_lost = _areas(ids), []
        for k, obj in self.objects.items():
            obj.area = int(areas[k])
            if obj.area >= self.config.fraction * obj.anchored:
                obj.low_frames, obj.lost = 0, False
                obj.good_box = mask_box(ids == k)
                continue
            obj.low_frames += 1
            if obj.low_frames >= self.config.frames and not obj.lost:
                obj.lost, obj.losses = True, obj.losses + 1
                newly_lost.append(k)
        return newly_lost

    def present(self, k: int) -> bool:
        """True when object ``k`` has pixels in the last mask and is not lost."""
        obj = self.objects[k]
        return obj.area > 0 and not obj.lost

    def describe_loss(self, k: int, frame: int) -> str:
        """The one-line report of object ``k``'s loss at ``frame``."""
        obj = self.objects[k]
        return (f"object {k} lost at frame {frame}: {obj.area} px, under {self.config.fraction:.0%} of its "
                f"anchored {obj.anchored} px for {self.config.frames} frame(s); tracking the others")


def _areas(ids: np.ndarray) -> np.ndarray:
    """Pixels of every id 0..255 in ``ids`` ``[H, W]``: int64 ``[256]``."""
    return np.bincount(ids.reshape(-1), minlength=256)
