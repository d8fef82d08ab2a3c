"""``mast-run --save-json``, ``--box``, lost objects and ``iter_records``: the JSON lines decode (COCO
RLE, pycocotools) to exactly the PNG masks of the same run; Ctrl-C leaves complete lines; a lost
object is reported once and listed with ``"present": false``; ``--reanchor-on-loss`` re-anchors it."""
from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask
from typer.testing import CliRunner

from mast.core.masks import read_mask, write_mask
from mast.runtime.boxmask import mask_box
from mast.runtime.objects import LossConfig, ObjectMonitor
from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK
from mast.runtime.run import RunConfig, app, run
from mast.runtime.stream import iter_records
from mast.runtime.sinks import JsonLinesSink
from mast.runtime.sources import FrameFolderSource

runner = CliRunner()
LAB = ("--backend", "torch", "--keys", "lab", "--no-display")


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    return result, result.output


def read_lines(path: Path) -> list[dict]:
    text = path.read_text()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def decode(obj: dict) -> np.ndarray:
    rle = {"size": obj["rle"]["size"], "counts": obj["rle"]["counts"].encode("ascii")}
    return coco_mask.decode(rle).astype(bool)


@pytest.fixture
def small_frames(tmp_path: Path) -> Path:
    """The first 8 demo frames at 60x107 (a frame folder)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(8):
        frame = cv2.imread(str(DEMO_FRAMES / f"{i:05d}.jpg"))
        cv2.imwrite(str(folder / f"{i:05d}.png"), cv2.resize(frame, (107, 60), interpolation=cv2.INTER_AREA))
    return folder


# -- the demo clip: JSON lines == PNG masks ----------------------------------------------------------
def test_json_round_trips_to_the_saved_masks(tmp_path: Path) -> None:
    out_json, out_masks = tmp_path / "o.jsonl", tmp_path / "m"
    result, text = invoke("--demo", *LAB[:4], "--no-display", "--max-frames", 4, "--save-json", out_json,
                          "--save-masks", out_masks, "--save-video", tmp_path / "o.mp4")
    assert result.exit_code == 0, text
    lines = read_lines(out_json)
    pngs = sorted(out_masks.glob("*.png"))
    assert [rec["frame"] for rec in lines] == [int(p.stem) for p in pngs] == [0, 1, 2, 3]
    assert lines[0]["time"] == 0.0 and all(b["time"] >= a["time"] for a, b in zip(lines, lines[1:]))
    for rec, png in zip(lines, pngs):
        ids = read_mask(png)
        assert [o["id"] for o in rec["objects"]] == [1]
        for obj in rec["objects"]:
            np.testing.assert_array_equal(decode(obj), ids == obj["id"])
            assert obj["area"] == int((ids == obj["id"]).sum()) and obj["present"]
            assert obj["rle"]["size"] == list(ids.shape)
            x0, y0, x1, y1 = mask_box(ids == obj["id"])
            assert obj["bbox"] == [x0, y0, x1 - x0, y1 - y0]
    assert f"json: {out_json.resolve()} (4 line(s))" in text.replace("\n", "")


def test_iter_records_gives_the_same_records(tmp_path: Path, small_frames: Path) -> None:
    from mast.runtime import factory
    from mast.runtime.tracker import Tracker

    mask = cv2.resize(read_mask(DEMO_MASK), (107, 60), interpolation=cv2.INTER_NEAREST)
    tracker = Tracker(factory.make_backend("torch", None, "cpu", "lab", "fp32"))
    with FrameFolderSource(small_frames) as source:
        records = list(iter_records(tracker, source, mask=mask, say=lambda s: None))
    cfg = RunConfig(frames=small_frames, backend="torch", keys="lab", display=False, save_json=tmp_path / "o.jsonl")
    mask_path = tmp_path / "mask.png"
    cv2.imwrite(str(mask_path), mask * 255)
    cfg.mask = mask_path
    run(cfg, say=lambda s: None)
    strip = lambda recs: [{**r, "time": None} for r in recs]  # noqa: E731 - wall-clock differs
    assert strip(records) == strip(read_lines(tmp_path / "o.jsonl")) and len(records) == 8


def test_unwritable_json_path_fails_before_any_frame(tmp_path: Path) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    result, text = invoke("--demo", *LAB[:4], "--no-display", "--save-json", blocker / "o.jsonl",
                          "--save-masks", tmp_path / "m")
    assert result.exit_code == 2 and "cannot create JSON output folder" in text and "processed" not in text
    result, text = invoke("--demo", *LAB[:4], "--no-display", "--save-json", tmp_path, "--save-masks", tmp_path / "m")
    assert result.exit_code == 2 and "is a folder" in text


class _InterruptingFolder(FrameFolderSource):
    """Frames that deliver SIGINT twice (the second one stops at once) when frame ``at`` is read."""

    def __init__(self, path: Path, at: int) -> None:
        super().__init__(path)
        self.at = at

    def _read_frames(self) -> Iterator[tuple[int, np.ndarray]]:
        for index, frame in super()._read_frames():
            if index == self.at:
                signal.raise_signal(signal.SIGINT)
                signal.raise_signal(signal.SIGINT)
            yield index, frame


def test_ctrl_c_leaves_complete_lines(tmp_path: Path, small_frames: Path) -> None:
    mask_path = tmp_path / "mask.png"
    cv2.imwrite(str(mask_path), cv2.resize(read_mask(DEMO_MASK), (107, 60), interpolation=cv2.INTER_NEAREST) * 255)
    cfg = RunConfig(mask=mask_path, backend="torch", keys="lab", display=False, save_json=tmp_path / "o.jsonl")
    summary = run(cfg, say=lambda s: None, source=_InterruptingFolder(small_frames, 5))
    assert summary.interrupted and summary.exit_code == 130
    assert len(read_lines(tmp_path / "o.jsonl")) == summary.frames == 5


def test_partial_last_line_is_cut_at_close(tmp_path: Path) -> None:
    monitor = ObjectMonitor()
    ids = np.zeros((8, 8), np.uint8)
    ids[2:5, 2:5] = 1
    monitor.anchor(ids)
    sink = JsonLinesSink(tmp_path / "o.jsonl", monitor)
    sink.write(0, None, ids)
    sink._file.write(b'{"frame": 1, "ti')  # what a write broken by a second Ctrl-C could leave
    sink.close()
    sink.close()
    assert [r["frame"] for r in read_lines(tmp_path / "o.jsonl")] == [0]


# -- --box -------------------------------------------------------------------------------------------
def test_box_instead_of_mask(tmp_path: Path) -> None:
    """Two boxes on the demo camel (its front and back half): ids 1 and 2 in box order, tracked."""
    x0, y0, x1, y1 = mask_box(read_mask(DEMO_MASK))
    mid = (x0 + x1) // 2
    result, text = invoke("--demo", *LAB[:4], "--no-display", "--max-frames", 2, "--box", f"{x0},{y0},{mid},{y1}",
                          "--box", f"{mid},{y0},{x1},{y1}", "--save-masks", tmp_path / "m", "--save-video", tmp_path / "o.mp4")
    assert result.exit_code == 0, text
    first = read_mask(tmp_path / "m" / "00000.png")
    assert set(np.unique(first).tolist()) == {0, 1, 2}
    assert np.nonzero(first == 1)[1].mean() < np.nonzero(first == 2)[1].mean()


@pytest.mark.parametrize(("args", "message"), [
    (("--box", "900,900,950,950"), "outside the 427x240 image"),
    (("--box", "1,2,3"), "is not a box"),
])
def test_bad_box(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result, text = invoke("--demo", *LAB[:4], "--no-display", *args, "--save-masks", tmp_path / "m")
    assert result.exit_code == 2 and message in text and "Traceback" not in text


def test_mask_and_box_together(tmp_path: Path) -> None:
    result, text = invoke("--frames", DEMO_FRAMES, "--mask", DEMO_MASK, "--box", "1,1,40,40", *LAB)
    assert result.exit_code == 2 and "not several" in text


# -- lost objects --------------------------------------------------------------------------------------
class _ScriptedTracker:
    """Returns the given masks one per step (a collapsing object); records anchor() calls."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        self.masks = iter(masks)
        self.anchors: list[tuple[np.ndarray, bool]] = []

    def start(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return mask

    def step(self, frame: np.ndarray) -> np.ndarray:
        return next(self.masks)

    def anchor(self, frame: np.ndarray, mask: np.ndarray, merge: bool = False) -> np.ndarray:
        self.anchors.append((mask, merge))
        return np.where(mask > 0, mask, next(self.masks))


def _two_objects(side1: int) -> np.ndarray:
    ids = np.zeros((60, 107), np.uint8)
    ids[10:10 + side1, 10:10 + side1] = 1
    ids[30:50, 60:90] = 2
    return ids


@pytest.mark.parametrize("reanchor", [False, True])
def test_lost_object_reported_once_and_absent_in_json(tmp_path: Path, small_frames: Path, reanchor: bool) -> None:
    sides = [20, 20, 3, 3, 0, 0, 0, 0]          # object 1 collapses at frame 2 (9 px < 5 % of 400)
    tracker = _ScriptedTracker([_two_objects(s) for s in sides[1:]] + [_two_objects(0)])
    mask_path = tmp_path / "mask.png"
    write_mask(mask_path, _two_objects(20))
    cfg = RunConfig(mask=mask_path, frames=small_frames, display=False, save_json=tmp_path / "o.jsonl",
                    loss=LossConfig(fraction=0.05, frames=3, reanchor=reanchor))
    warned: list[str] = []
    summary = run(cfg, say=lambda s: None, tracker=tracker, warn=warned.append)
    assert warned[0].startswith("object 1 lost at frame 4:") and summary.lost >= 1
    lines = read_lines(tmp_path / "o.jsonl")
    obj1 = [next(o for o in rec["objects"] if o["id"] == 1) for rec in lines]
    assert [o["present"] for o in obj1[:5]] == [True, True, True, True, False]
    assert all(next(o for o in rec["objects"] if o["id"] == 2)["present"] for rec in lines)
    if not reanchor:
        assert len(warned) == 1 and not tracker.anchors
        assert obj1[6]["area"] == 0 and obj1[6]["bbox"] == [0, 0, 0, 0] and not obj1[6]["present"]
    else:  # frame 5 is re-anchored: object 1 segmented in its last good box (10..30) and merged
        mask, merge = tracker.anchors[0]
        assert merge and set(np.unique(mask).tolist()) <= {0, 1} and mask[:, :10].max() == 0
        assert obj1[5]["area"] > 0 and obj1[5]["present"]
