"""``mast.runtime.edits``: the pause/add/correct/remove state machine driven by scripted key and mouse
events on real frames (multiobject-dev quad-1: four DAVIS objects; no window), and the edits flowing
through the streaming loop into the tracker (shipped weights, small working size), the lost-object
monitor, ``--save-json`` and ``--save-masks``."""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as coco_mask

from mast.core.masks import read_mask
from mast.runtime.boxmask import Box, mask_box
from mast.runtime.edits import Edit, EditResult, EditSession, Signal, legend
from mast.runtime.objects import LossConfig, ObjectMonitor
from mast.runtime.stream import first_mask, track_stream
from mast.runtime.sinks import JsonLinesSink, MaskPngSink
from mast.runtime.sources import FrameFolderSource

H, W = 240, 427          # frames and masks at half the 480p size (GrabCut in ~0.3 s per box)
ENTER = 13


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def quad(data_dir: Path) -> Callable[[int], tuple[np.ndarray, np.ndarray]]:
    """``load(k)`` -> (frame k of quad-1 ``uint8 [H, W, 3]``, its ground truth ids 1..4 ``[H, W]``)."""
    root = data_dir / "multiobject-dev"

    def load(k: int) -> tuple[np.ndarray, np.ndarray]:
        frame = cv2.imread(str(root / "JPEGImages" / "480p" / "quad-1" / f"{k:05d}.jpg"))
        gt = read_mask(root / "Annotations" / "480p" / "quad-1" / f"{k:05d}.png")
        return (cv2.resize(frame, (W, H), interpolation=cv2.INTER_AREA),
                cv2.resize(gt, (W, H), interpolation=cv2.INTER_NEAREST))

    return load


def drag(session: EditSession, box: Box) -> None:
    """A left-button drag from the box's top-left to its bottom-right pixel (X1/Y1 exclusive)."""
    x0, y0, x1, y1 = box
    session.on_mouse(cv2.EVENT_LBUTTONDOWN, x0, y0)
    session.on_mouse(cv2.EVENT_MOUSEMOVE, (x0 + x1) // 2, (y0 + y1) // 2)
    session.on_mouse(cv2.EVENT_LBUTTONUP, x1 - 1, y1 - 1)


def click(session: EditSession, x: int, y: int, right: bool = False) -> None:
    if right:
        session.on_mouse(cv2.EVENT_RBUTTONUP, x, y)
    else:
        session.on_mouse(cv2.EVENT_LBUTTONDOWN, x, y)
        session.on_mouse(cv2.EVENT_LBUTTONUP, x, y)


def inside(mask: np.ndarray) -> tuple[int, int]:
    """A pixel (x, y) of ``mask`` far from its border (the distance transform's peak)."""
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


# -- the session alone -------------------------------------------------------------------------------
def test_add_an_object_with_a_box(quad) -> None:
    """Objects 1, 3, 4 given, the dog (ground truth 2) drawn as a box: it gets the next id, 5; its
    segment beats its box."""
    frame, gt = quad(0)
    start = np.where(gt == 2, 0, gt)
    session = EditSession(frame, start, objects=[1, 3, 4], next_id=5)
    assert session.on_key(ord("a")) is Signal.CONTINUE and session.mode == "add"
    box = mask_box(gt == 2)
    drag(session, box)
    assert session.selector.boxes == [box]
    assert session.on_key(ENTER) is Signal.CONTINUE and session.mode == "paused"
    assert session.message.startswith("added object 5")
    boxed = np.zeros_like(gt, bool)
    boxed[box[1]:box[3], box[0]:box[2]] = True
    assert iou(session.ids == 5, gt == 2) > iou(boxed, gt == 2) + 0.1
    untouched = session.ids != 5
    np.testing.assert_array_equal(session.ids[untouched], start[untouched])   # the others keep their pixels
    result = session.result()
    assert result.edits == (Edit("add", 5, box),) and result.changed == (5,) and result.removed == ()
    assert session.on_key(ord(" ")) is Signal.RESUME


def test_two_boxes_two_new_ids_and_clicks(quad) -> None:
    frame, gt = quad(0)
    session = EditSession(frame, np.where((gt == 2) | (gt == 3), 0, gt), objects=[1, 4], next_id=7)  # 2, 3, 5, 6 used
    session.on_key(ord("a"))
    drag(session, mask_box(gt == 2))
    drag(session, mask_box(gt == 3))
    fg = inside(gt == 3)
    click(session, *fg)
    click(session, 5, 5, right=True)                       # background, in no box: fine
    session.on_key(ENTER)
    assert [e.id for e in session.edits] == [7, 8]
    assert session.edits[1].clicks == ((*fg, True),) and session.edits[0].clicks == ()
    assert iou(session.ids == 7, gt == 2) > 0.5 and iou(session.ids == 8, gt == 3) > 0.5


def test_correct_one_object_keeps_the_others(quad) -> None:
    """Object 2 drifted 40 px left; picked by a click, its new box replaces its pixels."""
    frame, gt = quad(0)
    drifted = gt.copy()
    drifted[gt == 2] = 0
    drifted[:, :-40][(gt == 2)[:, 40:]] = 2
    session = EditSession(frame, drifted, objects=[1, 2, 3, 4], next_id=5)
    session.on_key(ord("c"))
    assert session.mode == "pick_correct"
    click(session, 0, H - 1)                               # background: nothing picked
    assert session.mode == "pick_correct" and "no object" in session.message
    click(session, *inside(drifted == 2))
    assert session.mode == "correct" and session.target == 2
    drag(session, (0, 0, 30, 30))                          # a first try ...
    drag(session, mask_box(gt == 2))                       # ... the last box counts
    session.on_key(ENTER)
    assert session.edits == [Edit("correct", 2, mask_box(gt == 2))]
    assert iou(drifted == 2, gt == 2) < 0.5 < iou(session.ids == 2, gt == 2)
    others = (drifted != 2) & (session.ids != 2)
    np.testing.assert_array_equal(session.ids[others], drifted[others])
    assert session.result().changed == (2,)


def test_remove_undo_and_the_last_object(quad) -> None:
    frame, gt = quad(0)
    session = EditSession(frame, gt, objects=[1, 2, 3, 4], next_id=5)
    session.on_key(ord("x"))
    click(session, *inside(gt == 3))
    assert session.mode == "paused" and not (session.ids == 3).any() and session.message == "removed object 3"
    np.testing.assert_array_equal(session.ids[gt != 3], gt[gt != 3])
    session.on_key(ord("x"))
    session.on_key(ord("1"))                               # by its id (a lost object has no pixel to click)
    assert session.result().removed == (1, 3) and sorted(session.objects) == [2, 4]
    session.on_key(ord("u"))
    assert session.result().removed == (3,) and (session.ids == 1).any() and session.message.startswith("undone")
    session.on_key(ord("u"))
    assert session.result() is None and np.array_equal(session.ids, gt)
    session.on_key(ord("u"))
    assert session.message == "nothing to undo"
    single = EditSession(frame, (gt == 2).astype(np.uint8) * 2, objects=[2], next_id=5)
    single.on_key(ord("x"))
    single.on_key(ord("2"))
    assert single.result() is None and "last one" in single.message
    lost_other = EditSession(frame, (gt == 2).astype(np.uint8) * 2, objects=[2, 3], next_id=5)   # 3: no pixel
    lost_other.on_key(ord("x"))
    lost_other.on_key(ord("2"))
    assert lost_other.result() is None and "last one with pixels" in lost_other.message
    lost_other.on_key(ord("x"))
    lost_other.on_key(ord("3"))                            # the lost one can go
    assert lost_other.result().removed == (3,)


def test_cancel_messages_and_quit(quad) -> None:
    frame, gt = quad(0)
    session = EditSession(frame, gt, objects=[1, 2, 3, 4], next_id=5)
    session.on_key(ord("a"))
    session.on_key(ENTER)
    assert session.mode == "add" and "drag a box first" in session.message
    drag(session, mask_box(gt == 1))
    click(session, W - 2, H - 2)                           # foreground click in no box: refused
    session.on_key(ENTER)
    assert session.mode == "add" and "lies in no box" in session.message
    session.on_key(ord("u"))                               # undo the click
    session.on_key(27)                                     # Esc: cancel the add
    assert session.mode == "paused" and session.message == "cancelled" and session.result() is None
    session.on_key(ord("c"))
    session.on_key(ord("9"))
    assert session.mode == "pick_correct" and "no object 9" in session.message
    session.on_key(ord("q"))                               # q cancels an action ...
    assert session.mode == "paused"
    assert session.on_key(255) is Signal.CONTINUE
    assert session.on_key(ord("q")) is Signal.QUIT         # ... and quits while paused


def test_legend_on_the_image(quad) -> None:
    frame, gt = quad(0)
    session = EditSession(frame, gt, objects=[1, 2, 3, 4], next_id=5)
    assert "a: add" in legend("paused")[0] and "space: resume" in legend("paused")[1]
    assert "press its id" in legend("pick_remove")[1]
    assert "ADD 5, ..." in legend("add", next_id=5)[0] and "Enter: apply" in legend("add")[-1]
    assert "CORRECT 2:" in legend("correct", target=2)[0]
    plain = session.draw()
    session.on_key(ord("a"))
    drag(session, mask_box(gt == 1))
    drawn = session.draw()
    assert drawn.shape == frame.shape and (drawn[-30:] != plain[-30:]).any()   # another legend
    assert not np.array_equal(drawn, plain)


def test_result_of_an_object_added_then_removed() -> None:
    ids = np.zeros((4, 4), np.uint8)
    result = EditResult(ids, (Edit("add", 5, (0, 0, 2, 2)), Edit("correct", 1, (0, 0, 2, 2)), Edit("remove", 5),
                              Edit("remove", 2)))
    assert result.changed == (1,) and result.removed == (2,)
    assert result.describe() == "added object 5, corrected object 1, removed object 5, removed object 2"


# -- edits through the streaming loop ------------------------------------------------------------------
class ScriptedEditor:
    """The window's part in the loop, without a window: at the frames of ``script`` it pauses and
    plays that script on an :class:`EditSession` (events in, edits out)."""

    def __init__(self, script: dict[int, Callable[[EditSession], None]]) -> None:
        self.script = script
        self.quit_requested = False
        self.seen: list[tuple[int, tuple[int, ...], int]] = []

    def review(self, index: int, bgr: np.ndarray, ids: np.ndarray, objects: Sequence[int],
               next_id: int) -> EditResult | None:
        self.seen.append((index, tuple(objects), next_id))
        if index not in self.script:
            return None
        session = EditSession(bgr, ids, objects, next_id)
        self.script[index](session)
        assert session.on_key(ord(" ")) is Signal.RESUME
        return session.result()


@pytest.fixture
def quad_folder(tmp_path: Path, quad) -> Path:
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(10):
        cv2.imwrite(str(folder / f"{k:05d}.png"), quad(k)[0])
    return folder


@pytest.mark.usefixtures("one_thread")
def test_edits_flow_into_tracker_monitor_json_and_masks(tmp_path: Path, quad, quad_folder: Path) -> None:
    from mast.runtime import factory
    from mast.runtime.tracker import Tracker

    _, gt0 = quad(0)
    _, gt2 = quad(2)
    _, gt6 = quad(6)

    def add_4(s: EditSession) -> None:                    # frame 2: the dog (ground truth 2) added as 4
        s.on_key(ord("a"))
        drag(s, mask_box(gt2 == 2))
        s.on_key(ENTER)

    def remove_1(s: EditSession) -> None:                 # frame 4: object 1 removed
        s.on_key(ord("x"))
        s.on_key(ord("1"))

    def correct_3_add_5(s: EditSession) -> None:          # frame 6: object 3 redrawn, the swan back as 5
        s.on_key(ord("c"))
        s.on_key(ord("3"))
        drag(s, mask_box(gt6 == 3))
        s.on_key(ENTER)
        s.on_key(ord("a"))
        drag(s, mask_box(gt6 == 1))
        s.on_key(ENTER)

    editor = ScriptedEditor({2: add_4, 4: remove_1, 6: correct_3_add_5})
    tracker = Tracker(factory.make_backend("torch", None, "cpu", "model", "fp32"), size=(120, 216))
    monitor = ObjectMonitor(LossConfig(fraction=0.05, frames=2))
    warned: list[str] = []
    said: list[str] = []
    with FrameFolderSource(quad_folder) as source, \
            JsonLinesSink(tmp_path / "o.jsonl", monitor) as jsonl, MaskPngSink(tmp_path / "m") as pngs:
        summary = track_stream(tracker, source, first_mask(np.where(gt0 % 2 == 0, 0, gt0)), [jsonl, pngs],
                               monitor=monitor, editor=editor, say=said.append, warn=warned.append)
    assert summary.frames == 10 and not warned            # the removed object is never reported lost
    assert [s for s in said if s.startswith("frame") and "object" in s] == [   # not the progress lines
        "frame 2: added object 4", "frame 4: removed object 1", "frame 6: corrected object 3, added object 5"]
    # what the editor was told: the followed objects and the next id (ids are not reused)
    seen = dict((i, (objs, nid)) for i, objs, nid in editor.seen)
    assert seen[0] == ((1, 3), 4) and seen[3] == ((1, 3, 4), 5) and seen[5] == ((3, 4), 5)
    assert seen[7] == ((3, 4, 5), 6) and monitor.removed == {1}
    # the tracker: re-anchored on the edited frames (one extra step each), new ids added, 1 gone
    assert tracker.t == 9 + 3 and tracker.slots.anchor == 6 + 3 and set(tracker.ids.tolist()) == {0, 1, 3, 4, 5}
    records = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    listed = [[o["id"] for o in rec["objects"]] for rec in records]
    assert listed == [[1, 3]] * 2 + [[1, 3, 4]] * 2 + [[3, 4]] * 2 + [[3, 4, 5]] * 4
    for rec in records:                                    # the JSON lines are the saved PNGs, edits included
        ids = read_mask(tmp_path / "m" / f"{rec['frame']:05d}.png")
        assert set(np.unique(ids).tolist()) - {0} <= {o["id"] for o in rec["objects"]}
        for obj in rec["objects"]:
            rle = {"size": obj["rle"]["size"], "counts": obj["rle"]["counts"].encode()}
            np.testing.assert_array_equal(coco_mask.decode(rle).astype(bool), ids == obj["id"])
    frames = {rec["frame"]: read_mask(tmp_path / "m" / f"{rec['frame']:05d}.png") for rec in records}
    assert iou(frames[2] == 4, gt2 == 2) > 0.5             # the added dog, as segmented ...
    assert iou(frames[3] == 4, quad(3)[1] == 2) > 0.4      # ... and tracked on the next frame
    assert not any((frames[k] == 1).any() for k in range(4, 10))
    assert iou(frames[6] == 3, gt6 == 3) > 0.5
    assert (frames[9] == 5).sum() > 0.3 * (gt6 == 1).sum() and records[-1]["objects"][-1]["present"]


def test_legends_fit_small_frames() -> None:
    """Every mode's keys fit the width of a 214 px wide frame (the text shrinks to fit)."""
    from mast.runtime.drawing import draw_legend

    for mode in ("paused", "add", "pick_correct", "correct", "pick_remove"):
        img = np.zeros((120, 214, 3), np.uint8)
        draw_legend(img, legend(mode, target=12, next_id=100))   # type: ignore[arg-type]
        assert img[:, -4:].max() == 0 and img[-40:].any()      # nothing reaches the right edge (any OpenCV font)
