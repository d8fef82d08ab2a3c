"""Edits while tracking: pause, add an object, correct one, remove one (torch-free, no window).

:class:`EditSession` is the state machine of one pause: key codes and mouse events in, the edited
mask of the paused frame out. It opens no window, so tests drive it with scripted events; the
window around it is :class:`mast.runtime.edit_window.EditWindow`. Modes and keys (shown on the
image, :func:`legend`):

- ``paused``: ``a`` add objects, ``c`` correct an object, ``x`` remove an object, ``u`` undo the
  last edit, space resume tracking, ``q``/Esc quit.
- ``add``: drag a box per new object (ids :attr:`ObjectMonitor.next_id`, +1 per box), left click =
  sure foreground, right click = sure background (a click belongs to the boxes containing it),
  Enter applies (each box segmented by mast-mask's code, painted over what is there), ``u`` undoes
  the last box or click, Esc/``q`` cancels.
- ``pick_correct`` / ``pick_remove``: click the object (or press its id, 1-9; a lost object has no
  pixel to click); Esc/``q`` cancels. Removing is then immediate; correcting goes on to
- ``correct``: drag the object's new box (the last box drawn counts) and clicks as in ``add``;
  Enter replaces the object's pixels by the new segment (the others keep theirs).

Resuming with edits gives an :class:`EditResult`; :func:`apply_edits` re-anchors the tracker on the
paused frame with it (the paused frame, edited, becomes the long-term anchor of every object; a new
id reallocates the bank from it) and updates the :class:`~mast.runtime.objects.ObjectMonitor`:
added and corrected objects are anchored with their new areas, removed ones forgotten. Ids are never
reused. Removing the last object with pixels is refused (quit instead).
"""
from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import cv2
import numpy as np

from mast.core.errors import InputError
from mast.runtime.boxmask import Box, Click, GrabCutConfig, box_contains, clip_box, segment_box
from mast.runtime.objects import ObjectMonitor
from mast.runtime.selection import BoxSelector
from mast.runtime.drawing import draw_legend, render
from mast.runtime.tracker import ObjectTracker

EditKind = Literal["add", "correct", "remove"]
Mode = Literal["paused", "add", "pick_correct", "correct", "pick_remove"]
ENTER, ESC, SPACE, NO_KEY = (13, 10), 27, ord(" "), 255
MAX_ID = 255                 # ids are uint8


class Signal(enum.Enum):
    """What a key asks the pause loop to do."""

    CONTINUE = "continue"
    RESUME = "resume"
    QUIT = "quit"


@dataclass(frozen=True)
class Edit:
    """One edit of the paused frame: ``add`` object ``id`` in ``box`` (pixels, X1/Y1 exclusive) with
    ``clicks``; ``correct`` object ``id``: its pixels replaced by the segment of ``box``; ``remove`` it."""

    kind: EditKind
    id: int
    box: Box | None = None
    clicks: tuple[Click, ...] = ()


@dataclass(frozen=True)
class EditResult:
    """What a pause changed: ``ids`` ``uint8 [H, W]`` the edited mask of the paused frame, ``edits``
    in the order made."""

    ids: np.ndarray
    edits: tuple[Edit, ...]

    @property
    def removed(self) -> tuple[int, ...]:
        """Ids removed (an object added and removed in the same pause never reached the tracker)."""
        added = {e.id for e in self.edits if e.kind == "add"}
        return tuple(sorted({e.id for e in self.edits if e.kind == "remove"} - added))

    @property
    def changed(self) -> tuple[int, ...]:
        """Ids added or corrected, and not removed after."""
        gone = {e.id for e in self.edits if e.kind == "remove"}
        return tuple(sorted({e.id for e in self.edits if e.kind != "remove"} - gone))

    def describe(self) -> str:
        """One line: ``added object 3, corrected object 1, removed object 2``."""
        done = {"add": "added", "correct": "corrected", "remove": "removed"}
        return ", ".join(f"{done[e.kind]} object {e.id}" for e in self.edits)


class Editor(Protocol):
    """What the streaming loop asks to show a frame and take edits (``EditWindow``, or a script)."""

    quit_requested: bool

    def review(self, index: int, bgr: np.ndarray, ids: np.ndarray, objects: Sequence[int],
               next_id: int) -> EditResult | None:
        """Show frame ``index`` (``bgr`` ``uint8 [H, W, 3]``, its ``ids`` ``uint8 [H, W]``, the followed
        ``objects``); when the user paused and edited it, the edits (else None)."""
        ...


def apply_edit(bgr: np.ndarray, ids: np.ndarray, edit: Edit,
               config: GrabCutConfig = GrabCutConfig()) -> tuple[np.ndarray, str | None]:
    """``ids`` ``uint8 [H, W]`` of ``bgr`` ``uint8 [H, W, 3]`` after ``edit``: (a new array, warning or
    None). ``add`` paints the segment of the box (mast-mask's code) over what is there; ``correct``
    first clears the object's pixels; ``remove`` only clears them."""
    out = ids.copy()
    if edit.kind != "add":
        out[out == edit.id] = 0
    if edit.kind == "remove":
        return out, None
    if edit.box is None:
        raise InputError(f"{edit.kind} of object {edit.id} needs a box")
    result = segment_box(bgr, clip_box(edit.box, bgr.shape[:2]), edit.clicks, config)
    out[result.mask] = edit.id
    return out, result.warning


def apply_edits(tracker: ObjectTracker, monitor: ObjectMonitor, frame: np.ndarray, result: EditResult) -> np.ndarray:
    """Re-anchor ``tracker`` on ``frame`` (the paused frame, given once more as the stream's next frame)
    with the complete edited mask ``result.ids`` (``Tracker.anchor``: it becomes the long-term anchor;
    new ids reallocate the bank; removed objects have no pixel left in any frame the tracker reads) and
    update ``monitor``: removed objects forgotten, added and corrected ones anchored with their new
    areas. Returns the anchored ids ``uint8 [H, W]``."""
    ids = tracker.anchor(frame, result.ids)
    for k in result.removed:
        monitor.forget(k)
    if result.changed:
        monitor.anchor(np.where(np.isin(ids, result.changed), ids, 0))
    return ids


def legend(mode: Mode, target: int | None = None, next_id: int | None = None) -> tuple[str, ...]:
    """The keys of ``mode`` as lines for the image (``target``: the object being corrected;
    ``next_id``: the id the next added box gets)."""
    draw = ("click: fg   right-click: bg", "Enter: apply   u: undo   Esc: cancel")
    pick = ("or press its id (1-9)   Esc: cancel",)
    return {
        "paused": ("PAUSED   a: add   c: correct   x: remove", "u: undo   space: resume   q/Esc: quit"),
        "add": (f"ADD {next_id}, ...: drag a box each", *draw),
        "pick_correct": ("CORRECT: click the object", *pick),
        "correct": (f"CORRECT {target}: drag its new box", *draw),
        "pick_remove": ("REMOVE: click the object", *pick),
    }[mode]


@dataclass
class EditSession:
    """One pause on frame ``bgr`` ``uint8 [H, W, 3]`` whose mask is ``ids`` ``uint8 [H, W]``; ``objects``
    the ids followed (lost ones included), ``next_id`` the id of the first added object."""

    bgr: np.ndarray
    ids: np.ndarray
    objects: list[int]                      # any sequence given; kept as a list, updated by the edits
    next_id: int
    config: GrabCutConfig = field(default_factory=GrabCutConfig)
    mode: Mode = "paused"
    target: int | None = None               # the object being corrected
    message: str = ""                       # the last outcome or warning, shown on the image
    edits: list[Edit] = field(default_factory=list)
    selector: BoxSelector = field(init=False)
    _undo: list[tuple[np.ndarray, int]] = field(default_factory=list)   # (ids, len(edits)) before each apply

    def __post_init__(self) -> None:
        self.ids = self.ids.copy()
        self.objects = list(self.objects)
        self.selector = BoxSelector(self.ids.shape)

    # -- events ------------------------------------------------------------------------------------
    def on_key(self, key: int) -> Signal:
        """A key code (``cv2.waitKey(...) & 0xFF``; 255 = none): changes the mode or the mask; returns
        RESUME (space while paused) or QUIT (q/Esc while paused), else CONTINUE."""
        if key == NO_KEY:
            return Signal.CONTINUE
        if self.mode == "paused":
            return self._paused_key(key)
        if key in (ESC, ord("q")):
            self._to("paused", "cancelled")
        elif self.mode in ("add", "correct"):
            if key in ENTER:
                self._apply_boxes()
            elif key == ord("u"):
                self.selector.on_key(key)
        elif ord("1") <= key <= ord("9"):
            self._pick(key - ord("0"))
        return Signal.CONTINUE

    def on_mouse(self, event: int, x: int, y: int, flags: int = 0, param: object = None) -> None:
        """An OpenCV mouse callback; coordinates in image pixels. Boxes and clicks in ``add`` /
        ``correct``; a left click picks the object under it in ``pick_*``."""
        if self.mode in ("add", "correct"):
            self.selector.on_mouse(event, x, y, flags, param)
        elif self.mode in ("pick_correct", "pick_remove") and event == cv2.EVENT_LBUTTONUP:
            h, w = self.ids.shape
            k = int(self.ids[min(max(y, 0), h - 1), min(max(x, 0), w - 1)])
            if k:
                self._pick(k)
            else:
                self.message = f"no object at {x},{y}: click on an object"

    def result(self) -> EditResult | None:
        """The edits of this pause (None when none is left)."""
        return EditResult(self.ids.copy(), tuple(self.edits)) if self.edits else None

    # -- drawing -----------------------------------------------------------------------------------
    def draw(self, alpha: float = 0.5) -> np.ndarray:
        """The paused frame with the edited mask (:func:`mast.runtime.drawing.render`), the boxes and
        clicks being drawn, the last message (top) and the keys of the mode (bottom): ``uint8 [H, W, 3]``."""
        out = render(self.bgr, self.ids, alpha)
        if self.mode in ("add", "correct"):
            n = len(self.selector.boxes)
            labels = range(self._first_new(), self._first_new() + n) if self.mode == "add" else [self.target] * n
            self.selector.draw_marks(out, labels)
        if self.message:
            draw_legend(out, (self.message,), bottom=False)
        return draw_legend(out, legend(self.mode, self.target, self._first_new()))

    # -- internals ---------------------------------------------------------------------------------
    def _paused_key(self, key: int) -> Signal:
        if key == SPACE:
            return Signal.RESUME
        if key in (ESC, ord("q"), ord("Q")):
            return Signal.QUIT
        if key == ord("a"):
            if self._first_new() > MAX_ID:
                self.message = f"no free object id (ids go up to {MAX_ID} and are not reused)"
            else:
                self._to("add")
        elif key == ord("c"):
            self._to("pick_correct")
        elif key == ord("x"):
            self._to("pick_remove")
        elif key == ord("u"):
            self._undo_edit()
        return Signal.CONTINUE

    def _to(self, mode: Mode, message: str = "") -> None:
        self.mode, self.message = mode, message
        self.selector = BoxSelector(self.ids.shape)
        if mode == "paused":
            self.target = None

    def _first_new(self) -> int:
        """The id the next added object gets."""
        return max([self.next_id - 1] + [e.id for e in self.edits if e.kind == "add"]) + 1

    def _pick(self, k: int) -> None:
        if k not in self.objects:
            self.message = f"no object {k}: the objects are {', '.join(map(str, sorted(self.objects)))}"
        elif self.mode == "pick_correct":
            self._to("correct")
            self.target = k
        elif not ((self.ids != k) & (self.ids > 0)).any():
            self._to("paused", f"object {k} is the last one with pixels: it cannot be removed (q quits)")
        else:
            self._commit([Edit("remove", k)])

    def _apply_boxes(self) -> None:
        boxes, clicks = self.selector.boxes, self.selector.clicks
        if not boxes:
            self.message = "drag a box first (or Esc to cancel)"
            return
        if self.mode == "correct":
            boxes = boxes[-1:]
        stray = [(x, y) for x, y, fg in clicks if fg and not any(box_contains(b, x, y) for b in boxes)]
        if stray:
            self.message = f"foreground click {stray[0][0]},{stray[0][1]} lies in no box: undo it (u) or draw its box"
            return
        def inside(box: Box) -> tuple[Click, ...]:
            return tuple(c for c in clicks if box_contains(box, c[0], c[1]))

        first = self._first_new()
        if self.mode == "correct" and self.target is not None:
            self._commit([Edit("correct", self.target, boxes[0], inside(boxes[0]))])
        elif first + len(boxes) - 1 > MAX_ID:
            self.message = f"{len(boxes)} new objects do not fit: object ids go up to {MAX_ID}"
        else:
            self._commit([Edit("add", first + n, box, inside(box)) for n, box in enumerate(boxes)])

    def _commit(self, edits: list[Edit]) -> None:
        """Apply ``edits`` to the mask (one undo step), back to ``paused`` with what happened as message."""
        self._undo.append((self.ids, len(self.edits)))
        warnings = []
        for edit in edits:
            self.ids, warning = apply_edit(self.bgr, self.ids, edit, self.config)
            warnings += [warning] if warning else []
            self.edits.append(edit)
            if edit.kind == "add":
                self.objects.append(edit.id)
            elif edit.kind == "remove":
                self.objects.remove(edit.id)
        self._to("paused", "; ".join([EditResult(self.ids, tuple(edits)).describe(), *warnings]))

    def _undo_edit(self) -> None:
        if not self._undo:
            self.message = "nothing to undo"
            return
        self.ids, n = self._undo.pop()
        undone, self.edits = self.edits[n:], self.edits[:n]
        for edit in reversed(undone):
            if edit.kind == "add":
                self.objects.remove(edit.id)
            elif edit.kind == "remove":
                self.objects.append(edit.id)
        self.message = f"undone: {EditResult(self.ids, tuple(undone)).describe()}"


__all__ = ["Edit", "EditKind", "EditResult", "EditSession", "Editor", "Mode", "Signal", "apply_edit",
           "apply_edits", "legend"]
