"""``mast-bench``: per-stage table and JSON, the timing hook, the looped clip, bad input."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mast.core.masks import read_mask
from mast.core.model import key_encoder
from mast.runtime.bench import STAGES, StageClock, app, clip_frames, split_torch_colour
from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK
from mast.runtime.torch_backend import TorchBackend
from mast.runtime.tracker import Tracker

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_bench_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "bench.json"
    result = runner.invoke(app, ["--backend", "torch", "--keys", "lab", "--size", "52x92", "--frames", "4",
                                 "--warmup", "2", "--threads", "1", "--json", str(out)])
    assert result.exit_code == 0, result.output
    for word in (*STAGES, "host (all but encoder, attention)", "total", "median ms", "p95 ms", "CPU ms", "fps",
                 "peak RSS", "core(s)"):
        assert word in result.output
    data = json.loads(out.read_text())
    assert set(data["stages"]) == set(STAGES)
    stages = data["stages"]
    for name in ("resize", "colour", "overlay", "window"):   # the clip is 240x427: resized to 52x92, drawn
        assert stages[name]["median_ms"] > 0, name
    host = sum(stages[s]["cpu_median_ms"] for s in STAGES if s not in ("encoder", "attention"))
    assert 0 < data["host"]["cpu_median_ms"] and data["host"]["median_ms"] <= data["total"]["median_ms"]
    assert host > 0
    assert all(s["p95_ms"] >= s["median_ms"] >= 0 and s["cpu_median_ms"] >= 0 for s in data["stages"].values())
    assert 0 < data["total"]["cpu_median_ms"]
    assert data["stages"]["attention"]["median_ms"] > 0 and data["fps_median"] > 0
    assert data["frames"] == 4 and data["warmup"] == 2 and data["size"] == [52, 92]
    assert data["peak_rss_mib"] > 0 and data["gpu_peak_mib"] is None
    assert data["device"]["device"] == "cpu" and data["device"]["cores"] == len(os.sched_getaffinity(0))
    assert data["device"]["torch_threads"] == 1 and data["device"]["cpu"]
    assert data["device"]["isa"] in ("AMX+AVX-512", "AVX-512", "AVX2", "?")
    assert data["command"].startswith("mast-bench")
    from mast.core import attention_c
    assert data["device"]["read"] == ("fused C" if attention_c.available() is None else "PyTorch")
    assert f"memory read: {data['device']['read']}" in result.output
    assert data["radius"] == 12 and "attention window radius 12" in result.output   # the model's


def test_bench_radius_reaches_the_read(tmp_path: Path) -> None:
    """--radius: the backend reads with it, the tracker is configured with it, the figures say it."""
    out = tmp_path / "bench.json"
    result = runner.invoke(app, ["--backend", "torch", "--keys", "lab", "--size", "52x92", "--frames", "2",
                                 "--warmup", "1", "--threads", "1", "--radius", "5", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["radius"] == 5 and "attention window radius 5" in result.output
    result = runner.invoke(app, ["--keys", "lab", "--frames", "1", "--radius", "32"])
    assert result.exit_code != 0 and "--radius" in result.output


def test_bench_names_a_restricted_build(monkeypatch):
    """A build restricted below the CPU's instruction set (BENCHMARKS.md's AVX2 rows) is said with
    the figures."""
    from mast.runtime.bench import device_info
    from mast.runtime.torch_backend import TorchBackend
    from mast.core.encoder import LabKeys

    monkeypatch.setenv("MAST_ATTENTION_CFLAGS", "-mno-avx512f")
    monkeypatch.delenv("ATEN_CPU_CAPABILITY", raising=False)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert device_info(TorchBackend(LabKeys()))["restricted"] == {"MAST_ATTENTION_CFLAGS": "-mno-avx512f"}


def test_bench_bad_input(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = runner.invoke(app, ["--keys", "lab", "--frames", "1", "--json", str(blocker / "b.json")])
    assert result.exit_code == 2 and "cannot create" in result.output
    result = runner.invoke(app, ["--keys", "lab", "--clip", str(tmp_path)])
    assert result.exit_code == 2 and "--clip needs --mask" in result.output


def test_timer_hook_changes_no_result() -> None:
    """The same masks with and without the stage clock; every stage is timed once per frame."""
    frames = clip_frames(DEMO_FRAMES)
    seq = [next(frames) for _ in range(8)]
    mask = read_mask(DEMO_MASK)
    outputs = []
    for clock in (None, StageClock()):
        backend = TorchBackend(key_encoder("random"))
        tracker = Tracker(backend, size=(48, 84), timer=clock)
        tracker.start(seq[0], mask)
        remove = split_torch_colour(backend, clock) if clock else (lambda: None)
        masks = []
        for frame in seq[1:]:
            if clock:
                clock.start_frame()
            masks.append(tracker.step(frame))
            if clock:
                clock.end_frame()
        remove()
        outputs.append(masks)
    assert all(np.array_equal(a, b) for a, b in zip(*outputs))
    for frame in clock.frames:
        assert set(frame) == {"resize", "colour", "encoder", "attention", "postprocess", "total"}
        assert sum(v for k, v in frame.items() if k != "total") <= frame["total"]
        assert frame["encoder"] > 0 and frame["resize"] > 0 and frame["colour"] > 0


def test_stage_clock_split() -> None:
    clock = StageClock()
    clock.start_frame()
    with clock("encoder"):
        time.sleep(0.02)
        clock.charge_to("colour")
        time.sleep(0.01)
    with clock("preprocess"):           # the tracker's name for the resize row
        pass
    clock.end_frame()
    frame, cpu = clock.frames[0], clock.cpu_frames[0]
    assert set(frame) == {"colour", "encoder", "resize", "total"}
    assert frame["colour"] >= 0.02 and frame["encoder"] >= 0.01
    assert frame["total"] >= frame["colour"] + frame["encoder"]
    assert set(cpu) == set(frame)


def test_clip_plays_back_and_forth() -> None:
    """25 frames: 0..24 then 23..1 then 0.. again (continuous motion, endless)."""
    files = sorted(DEMO_FRAMES.glob("*.jpg"))
    frames = clip_frames(DEMO_FRAMES)
    got = [next(frames) for _ in range(50)]
    first, last = cv2.imread(str(files[0])), cv2.imread(str(files[-1]))
    assert np.array_equal(got[0], first) and np.array_equal(got[24], last)
    assert np.array_equal(got[25], cv2.imread(str(files[23]))) and np.array_equal(got[48], first)
