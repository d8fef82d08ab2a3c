from __future__ import annotations

import pytest

from mast.core.config import AttentionConfig, MemoryConfig
from mast.runtime.memory import SlotTable, memory_frames


@pytest.mark.parametrize("t, frames", [(1, [0]), (2, [0, 1]), (4, [0, 1, 3]), (5, [0, 2, 4]),
                                       (6, [0, 1, 3, 5]), (7, [0, 2, 4, 5, 6]), (30, [0, 5, 25, 27, 29])])
def test_published_schedule(t, frames):
    assert memory_frames(t) == frames


def test_ring_buffer_reads_the_schedule_and_never_grows():
    table = SlotTable(MemoryConfig())
    table.reset(0)
    for t in range(200):
        if t:
            pairs = table.read_slots(t)
            assert sorted(t - d for _, d in pairs) == memory_frames(t)
            assert len({s for s, _ in pairs}) == len(pairs)
        table.write_slots(t)
        assert len(table.frames) == 7


def test_reanchoring_drops_frames_before_the_anchor():
    table = SlotTable(MemoryConfig())
    table.reset(0)
    for t in range(12):
        table.write_slots(t)
    table.anchor = 12
    table.write_slots(12)
    assert table.read_slots(13) == [(0, 1)]  # the new anchor only


def test_dilation_rule():
    cfg = AttentionConfig()
    assert [cfg.uses_roi(d) for d in (15, 16)] == [False, True]
    assert [cfg.dilation(d) for d in (16, 29, 30, 44, 45, 400)] == [2, 2, 3, 3, 4, 4]
