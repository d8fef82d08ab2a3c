"""``mast-run --select``: draw boxes (and clicks) on the frozen first frame, confirm the mask, track.

The logic is plain state (:class:`BoxSelector`: mouse and key events in, boxes and clicks out) so it
is tested with scripted events; :func:`select_mask` is the thin OpenCV loop around it and is only
called when :func:`mast.runtime.sinks.display_available` says a window can be shown.

Mouse: drag with the left button = a box (one object each, ids 1..n in drawing order); a left click
(no drag) = a foreground click, a right click = a background click. Keys: Enter or space = done
(then the mask is shown: Enter/space accept, any other key goes back to editing), ``u`` undo the
last box or click, ``c`` clear, ``q``/Esc cancel.
"""
from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from mast.core.errors import InputError
from mast.runtime.boxmask import Box, Click, boxes_to_mask
from mast.runtime.drawing import draw_legend, put_text, render
from mast.runtime.sinks import NoDisplayError, display_available

DRAG_MIN_PX = 4          # a left-button move shorter than this (both axes) is a click, not a box
HELP = "drag: box   click: fg   right-click: bg   Enter: done   u: undo   c: clear   q: cancel"
CONFIRM_HELP = "Enter/space: track with this mask   any other key: edit again"


class Action(enum.Enum):
    """What a key asks the selection loop to do."""

    CONTINUE = "continue"
    DONE = "done"
    CANCEL = "cancel"


@dataclass
class BoxSelector:
    """Boxes and clicks drawn with the mouse on an image of ``size`` (H, W) pixels."""

    size: tuple[int, int]
    boxes: list[Box] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    drag_from: tuple[int, int] | None = None     # where the left button went down
    drag_to: tuple[int, int] | None = None       # where it is now (the rubber band)
    _history: list[str] = field(default_factory=list)   # "box" / "click", for undo

    def on_mouse(self, event: int, x: int, y: int, flags: int = 0, param: object = None) -> None:
        """An OpenCV mouse callback (``cv2.setMouseCallback``); coordinates in image pixels."""
        x, y = min(max(x, 0), self.size[1] - 1), min(max(y, 0), self.size[0] - 1)
        if event == cv2.EVENT_LBUTTONDOWN:
            self.drag_from = self.drag_to = (x, y)
        elif event == cv2.EVENT_MOUSEMOVE and self.drag_from is not None:
            self.drag_to = (x, y)
        elif event == cv2.EVENT_LBUTTONUP and self.drag_from is not None:
            (x0, y0), self.drag_from, self.drag_to = self.drag_from, None, None
            if abs(x - x0) < DRAG_MIN_PX and abs(y - y0) < DRAG_MIN_PX:
                self._add_click((x, y, True))
            else:  # corners in any drag direction; the pixel under the release is inside
                self.boxes.append((min(x0, x), min(y0, y), max(x0, x) + 1, max(y0, y) + 1))
                self._history.append("box")
        elif event == cv2.EVENT_RBUTTONUP:
            self._add_click((x, y, False))

    def _add_click(self, click: Click) -> None:
        self.clicks.append(click)
        self._history.append("click")

    def on_key(self, key: int) -> Action:
        """A key code (``cv2.waitKey(...) & 0xFF``; 255 = none). Returns what the loop should do."""
        if key in (13, 10, ord(" ")):
            return Action.DONE if self.boxes else Action.CONTINUE
        if key in (27, ord("q"), ord("Q")):
            return Action.CANCEL
        if key == ord("u") and self._history:
            (self.boxes if self._history.pop() == "box" else self.clicks).pop()
        elif key == ord("c"):
            self.boxes, self.clicks, self._history = [], [], []
        return Action.CONTINUE

    def draw_marks(self, img: np.ndarray, labels: Sequence[int] | None = None) -> np.ndarray:
        """Draw into ``img`` ``uint8 [H, W, 3]`` (in place) the boxes, numbered with ``labels`` (default
        1..n), the rubber band and the clicks (green fg, red bg); returns ``img``."""
        labels = labels if labels is not None else range(1, len(self.boxes) + 1)
        for k, (x0, y0, x1, y1) in zip(labels, self.boxes):
            cv2.rectangle(img, (x0, y0), (x1 - 1, y1 - 1), (0, 255, 255), 2)
            put_text(img, str(k), (x0 + 4, y0 + 18), 0.6)
        if self.drag_from is not None and self.drag_to is not None:
            cv2.rectangle(img, self.drag_from, self.drag_to, (255, 255, 0), 1)
        for x, y, fg in self.clicks:
            cv2.circle(img, (x, y), 4, (0, 255, 0) if fg else (0, 0, 255), -1)
        return img

    def draw(self, bgr: np.ndarray) -> np.ndarray:
        """A copy of ``bgr`` ``uint8 [H, W, 3]`` with the marks (:meth:`draw_marks`) and the key help."""
        return draw_legend(self.draw_marks(bgr.copy()), (HELP,))

    def mask(self, bgr: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """The ids ``uint8 [H, W]`` of the current boxes and clicks (mast-mask's code) and its warnings."""
        return boxes_to_mask(bgr, self.boxes, self.clicks)


def require_display(window_allowed: bool = True) -> None:
    """InputError (one line, pointing to ``--box``) when no window can be shown (or ``--no-display``)."""
    if not window_allowed:
        raise InputError("--select needs a window but --no-display was given: drop --no-display, or give the "
                         "objects with --box X0,Y0,X1,Y1 (repeatable) or --mask PNG")
    if not display_available():
        raise InputError("--select needs a display (none available: DISPLAY/WAYLAND_DISPLAY unset or OpenCV "
                         "without GUI): give the objects with --box X0,Y0,X1,Y1 (repeatable) or --mask PNG")


def select_mask(bgr: np.ndarray, title: str = "mast-run: select objects") -> np.ndarray:
    """Show ``bgr`` frozen, let the user draw boxes and clicks, show the mask for confirmation;
    returns the confirmed ids ``uint8 [H, W]``. InputError when cancelled; NoDisplayError without a display."""
    if not display_available():
        raise NoDisplayError("cannot open the selection window: no display available")
    selector = BoxSelector(bgr.shape[:2])
    cv2.namedWindow(title, cv2.WINDOW_NORMAL)
    cv2.setMouseCallback(title, selector.on_mouse)
    try:
        while True:
            cv2.imshow(title, selector.draw(bgr))
            action = selector.on_key(cv2.waitKey(20) & 0xFF)
            if action is Action.CANCEL:
                raise InputError("selection cancelled: nothing to track")
            if action is Action.DONE:
                ids, warnings = selector.mask(bgr)
                preview = draw_legend(render(bgr, ids), (CONFIRM_HELP,))
                cv2.imshow(title, draw_legend(preview, warnings, bottom=False))
                if (cv2.waitKey(0) & 0xFF) in (13, 10, ord(" ")):
                    return ids
    finally:
        cv2.destroyWindow(title)
        cv2.waitKey(1)
