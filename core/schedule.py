"""Which earlier frames the prediction of frame t reads (docs/DESIGN.md, per-frame step 4)."""
from __future__ import annotations

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
