"""Which bank slot holds which frame: the fixed ring-buffer layout (torch-free).

Slots ``0 .. len(long_term)-1`` keep the long-term frames (anchor + m for m in ``long_term``);
the next ``ring_size`` slots are a ring over the last frames (frame t lives in slot
``len(long_term) + t % ring_size``). The bank's tensors live in the backend; this class only
decides slots and distances, so every backend shares it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from mast.core.config import MemoryConfig


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
        wanted = {self.anchor + m for m in self.cfg.long_term if self.anchor + m <= t - 1}
        wanted |= {t - s for s in self.cfg.short_term if t - s > self.anchor}
        out = []
        for frame in sorted(wanted):
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
