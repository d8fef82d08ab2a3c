"""The ``mast-run`` window with edits while tracking: pause, add, correct, remove objects.

:class:`EditWindow` is the :class:`~mast.runtime.sinks.WindowSink` (overlay, ids, fps, ``q``/Esc
quit) whose pause runs an :class:`~mast.runtime.edits.EditSession` on the paused frame: the keys of
each mode are written on the image. The streaming loop calls :meth:`EditWindow.review` for every
frame before its other outputs (:func:`mast.runtime.stream.stream_masks`), so the masks saved for the
paused frame are the edited ones. Like every window here it refuses to open without a display
(:class:`~mast.runtime.sinks.NoDisplayError`); no cv2 GUI function is called then.
"""
from __future__ import annotations

import time
from collections.abc import Sequence

import cv2
import numpy as np

from mast.runtime.boxmask import GrabCutConfig
from mast.runtime.edits import EditResult, EditSession, Signal
from mast.runtime.sinks import WindowSink

PAUSED_WAIT_MS = 30   # key polling period while paused (ms)


class EditWindow(WindowSink):
    """A window showing the tracked frames; space pauses and opens the edit mode (see
    :mod:`mast.runtime.edits` for the keys). ``grabcut`` configures the segmentation of drawn boxes."""

    legend = ("space: pause and edit objects   q/Esc: quit",)

    def __init__(self, title: str = "mast", *, alpha: float = 0.5, grabcut: GrabCutConfig = GrabCutConfig()) -> None:
        super().__init__(title, alpha=alpha)
        self.grabcut = grabcut
        self.session: EditSession | None = None       # the pause in progress
        self._followed: tuple[Sequence[int], int] | None = None   # (objects, next_id) of the frame shown
        self._result: EditResult | None = None
        cv2.setMouseCallback(title, self._on_mouse)

    def review(self, index: int, bgr: np.ndarray, ids: np.ndarray, objects: Sequence[int],
               next_id: int) -> EditResult | None:
        """Show frame ``index`` (:meth:`write`); when the user pauses, run the edit session on it until
        resumed or quit. Returns the edits of that pause (None when none, or not paused)."""
        self._followed, self._result = (tuple(objects), next_id), None
        try:
            self.write(index, bgr, ids)
        finally:
            self._followed = None
        return self._result

    def _wait_while_paused(self, bgr: np.ndarray, ids: np.ndarray, overlay: np.ndarray) -> None:
        """The edit session on the paused frame, until space (resume: its edits are kept for
        :meth:`review`) or q/Esc while paused (quit: edits dropped)."""
        if self._followed is None:       # shown by write() alone: a plain pause
            super()._wait_while_paused(bgr, ids, overlay)
            return
        objects, next_id = self._followed
        self.session = EditSession(bgr, ids, objects, next_id, config=self.grabcut)
        try:
            while not self.quit_requested:
                cv2.imshow(self.title, self.session.draw(self.alpha))
                signal = self.session.on_key(cv2.waitKey(PAUSED_WAIT_MS) & 0xFF)
                if signal is Signal.QUIT or self._window_closed():
                    self.quit_requested = True
                elif signal is Signal.RESUME:
                    self._result = self.session.result()
                    break
        finally:
            self.session, self.paused = None, False
        self._last = time.monotonic()    # the pause does not count in the frame rate

    def _on_mouse(self, event: int, x: int, y: int, flags: int = 0, param: object = None) -> None:
        if self.session is not None:
            self.session.on_mouse(event, x, y, flags, param)
