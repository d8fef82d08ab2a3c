"""Which earlier frames the prediction of frame t reads (docs/DESIGN.md, per-frame step 4), and which
bank slot holds which frame: the fixed ring-buffer layout (torch-free).

Slots ``0 .. len(long_term)-1`` keep the long-term frames (anchor + m for m in ``long_term``);
the next ``ring_size`` slots are a ring over the last frames (frame t lives in slot
``len(long_term) + t % ring_size``). The bank's tensors live in the backend; this class only
decides slots and distances, so every backend shares it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mast.core.config import MemoryConfig


def memory_frames(t: int, cfg: MemoryConfig = MemoryConfig()) -> list[int]:
    """Sorted, deduplicated memory frame indices for predicting frame ``t`` >= 1 (frame 0 = anchor).

    Long-term frames ``m`` of ``cfg.long_term`` count once ``m <= t - 1``; short-term frames are
    ``t - s`` for ``s`` in ``cfg.short_term`` when ``t - s > 0``. With the defaults this is the
    published schedule: {0, 5 (t-1 >= 5)} U {t-1, t-3, t-5 (> 0)}.
    """
    if t < 1:
        raise ValueError(f"frame index must be >= 1 to have a memory, got {t}")
    long_term = {m for m in cfg.long_term if m <= t - 1}
    short_term = {t - s for s in cfg.short_term if t - s > 0}
    return sorted(long_term | short_term)


@dataclass
class SlotTable:
    """Frame index held by each slot (-1 = empty) and the anchor frame of the long-term slots."""

    cfg: MemoryConfig = field(default_factory=MemoryConfig)
    frames: list[int] = field(default_factory=list)  # [n_slots] frame index per slot, -1 empty
    anchor: int = 0                                    # frame index of the current anchor

    def __post_init__(self) -> None:
        self.frames = [-1] * self.cfg.n_slots

    def reset(self, anchor: int) -> None:
        """Empty every slot; ``anchor`` becomes frame 0 of the schedule."""
        self.frames = [-1] * self.cfg.n_slots
        self.anchor = anchor

    def read_slots(self, t: int) -> list[tuple[int, int]]:
        """``(slot, distance)`` pairs to read for predicting frame ``t`` (schedule of docs/DESIGN.md step 4)."""
        if t <= self.anchor:
            return []
        out = []
        for frame in (self.anchor + m for m in memory_frames(t - self.anchor, self.cfg)):
            slot = self._find(frame)
            if slot is not None:
                out.append((slot, t - frame))
        return out

    def write_slots(self, t: int) -> list[int]:
        """Slots that frame ``t`` is written to (its ring slot, plus a long-term slot if it is one),
        marking them as holding ``t``."""
        slots = [len(self.cfg.long_term) + t % self.cfg.ring_size]
        slots += [i for i, m in enumerate(self.cfg.long_term) if self.anchor + m == t]
        for s in slots:
            self.frames[s] = t
        return slots

    def _find(self, frame: int) -> int | None:
        for i, f in enumerate(self.frames):
            if f == frame:
                return i
        return None
