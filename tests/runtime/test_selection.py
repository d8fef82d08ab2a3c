"""``mast.runtime.selection``: the box/click selector driven by scripted mouse and key events (no
window is opened), and ``mast-run --select`` without a display (one line pointing to ``--box``)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mast.core.masks import read_mask
from mast.runtime.boxmask import mask_box
from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK
from mast.runtime.run import app
from mast.runtime.selection import Action, BoxSelector

H, W = 96, 128


def drag(sel: BoxSelector, start: tuple[int, int], end: tuple[int, int]) -> None:
    sel.on_mouse(cv2.EVENT_LBUTTONDOWN, *start)
    sel.on_mouse(cv2.EVENT_MOUSEMOVE, (start[0] + end[0]) // 2, (start[1] + end[1]) // 2)
    sel.on_mouse(cv2.EVENT_MOUSEMOVE, *end)
    sel.on_mouse(cv2.EVENT_LBUTTONUP, *end)


def test_drags_make_boxes_in_order_clicks_and_undo() -> None:
    sel = BoxSelector((H, W))
    drag(sel, (10, 20), (40, 50))
    drag(sel, (100, 80), (70, 30))                       # dragged up-left: corners sorted
    sel.on_mouse(cv2.EVENT_LBUTTONDOWN, 20, 30)
    sel.on_mouse(cv2.EVENT_LBUTTONUP, 21, 31)            # under DRAG_MIN_PX: a foreground click
    sel.on_mouse(cv2.EVENT_RBUTTONUP, 300, -5)           # outside: clamped to the image, background
    assert sel.boxes == [(10, 20, 41, 51), (70, 30, 101, 81)]
    assert sel.clicks == [(21, 31, True), (W - 1, 0, False)]
    assert sel.on_key(ord("u")) is Action.CONTINUE and sel.clicks == [(21, 31, True)]
    sel.on_key(ord("u"))
    sel.on_key(ord("u"))
    assert sel.boxes == [(10, 20, 41, 51)] and sel.clicks == []


def test_keys_done_cancel_clear() -> None:
    sel = BoxSelector((H, W))
    assert sel.on_key(13) is Action.CONTINUE             # Enter with no box: nothing to track yet
    assert sel.on_key(255) is Action.CONTINUE            # no key
    drag(sel, (10, 10), (50, 50))
    assert sel.on_key(ord(" ")) is Action.DONE and sel.on_key(13) is Action.DONE
    assert sel.on_key(ord("c")) is Action.CONTINUE and sel.boxes == []
    assert sel.on_key(27) is Action.CANCEL and sel.on_key(ord("q")) is Action.CANCEL


def test_rubber_band_and_drawing() -> None:
    sel = BoxSelector((H, W))
    sel.on_mouse(cv2.EVENT_LBUTTONDOWN, 10, 10)
    sel.on_mouse(cv2.EVENT_MOUSEMOVE, 60, 40)
    assert sel.drag_from == (10, 10) and sel.drag_to == (60, 40)
    frame = np.zeros((H, W, 3), np.uint8)
    drawn = sel.draw(frame)
    assert drawn.shape == frame.shape and drawn.any() and not frame.any()


def test_selected_boxes_make_the_mast_mask() -> None:
    """Boxes drawn around the demo camel give the same mask as mast-mask's code for those boxes."""
    bgr = cv2.imread(str(DEMO_FRAMES / "00000.jpg"))
    x0, y0, x1, y1 = mask_box(read_mask(DEMO_MASK))
    sel = BoxSelector(bgr.shape[:2])
    drag(sel, (x0, y0), (x1 - 1, y1 - 1))
    assert sel.boxes == [(x0, y0, x1, y1)]
    ids, _ = sel.mask(bgr)
    gt = read_mask(DEMO_MASK) > 0
    assert ((ids == 1) & gt).sum() / ((ids == 1) | gt).sum() > 0.6


@pytest.mark.parametrize("extra", [(), ("--no-display",)])
def test_select_without_display_says_use_box(monkeypatch: pytest.MonkeyPatch, extra: tuple[str, ...]) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = CliRunner().invoke(app, ["--frames", str(DEMO_FRAMES), "--select", "--backend", "torch", "--keys", "lab",
                                      *extra])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--select needs a" in result.output and "--box X0,Y0,X1,Y1" in result.output


def test_camera_without_mask_asks_for_select(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result = CliRunner().invoke(app, ["--camera", "0", "--backend", "torch", "--keys", "lab"])
    assert result.exit_code == 2 and "--select needs a display" in result.output
