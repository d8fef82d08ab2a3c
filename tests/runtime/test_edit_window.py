"""``mast.runtime.edit_window``: ``mast-run`` with a window, edits made while paused, driven by scripted
keys and mouse events: once with OpenCV's window functions stood in for, once with real windows on a
virtual X server (Xvfb; skipped where it is not installed). The edits reach ``--save-json``."""
from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from mast.core.masks import read_mask, write_mask
from mast.runtime.boxmask import mask_box
from mast.runtime import run as run_module
from mast.runtime import selection, sinks
from mast.runtime.edit_window import EditWindow
from mast.runtime.run import RunConfig, run
from mast.runtime.sinks import NoDisplayError

H, W = 120, 214
NO_KEY = 255
Step = int | Callable[[], int]   # a key code, or mouse events sent through the window's callback


class ScriptedGui:
    """Replays ``script`` through ``cv2.waitKey``, then Esc (which cancels, then quits: a script that
    goes wrong ends); ``fake``: cv2's window functions stood in for (no X server needed), else the real
    ones run and only the keys are scripted."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, script: list[Step], fake: bool) -> None:
        self.script = list(script)
        self.callback: Callable[..., None] | None = None
        self.shown: list[tuple[int, ...]] = []   # the shapes of the images shown
        real_wait, real_show, real_mouse = cv2.waitKey, cv2.imshow, cv2.setMouseCallback

        def wait(ms: int) -> int:
            if not fake:
                real_wait(1)
            step = self.script.pop(0) if self.script else 27
            return step() if callable(step) else step

        def show(title: str, img: np.ndarray) -> None:
            self.shown.append(img.shape)
            if not fake:
                real_show(title, img)

        def mouse(title: str, callback: Callable[..., None]) -> None:
            self.callback = callback
            if not fake:
                real_mouse(title, callback)

        monkeypatch.setattr(cv2, "waitKey", wait)
        monkeypatch.setattr(cv2, "imshow", show)
        monkeypatch.setattr(cv2, "setMouseCallback", mouse)
        if fake:
            monkeypatch.setattr(sinks, "display_available", lambda: True)
            monkeypatch.setattr(run_module, "display_available", lambda: True)
            monkeypatch.setattr(selection, "display_available", lambda: True)
            monkeypatch.setattr(cv2, "namedWindow", lambda *a: None)
            monkeypatch.setattr(cv2, "getWindowProperty", lambda *a: 1.0)
            monkeypatch.setattr(cv2, "destroyWindow", lambda *a: None)

    def click(self, x: int, y: int) -> Callable[[], int]:
        def send() -> int:
            self.callback(cv2.EVENT_LBUTTONDOWN, x, y, 0, None)
            self.callback(cv2.EVENT_LBUTTONUP, x, y, 0, None)
            return NO_KEY
        return send

    def drag(self, box: tuple[int, int, int, int]) -> Callable[[], int]:
        def send() -> int:
            self.callback(cv2.EVENT_LBUTTONDOWN, box[0], box[1], 0, None)
            self.callback(cv2.EVENT_MOUSEMOVE, box[2] - 1, box[3] - 1, 0, None)
            self.callback(cv2.EVENT_LBUTTONUP, box[2] - 1, box[3] - 1, 0, None)
            return NO_KEY
        return send


@pytest.fixture(scope="module")
def xvfb() -> Iterator[str]:
    """A virtual X server for the module: its DISPLAY (skipped without ``Xvfb`` on PATH)."""
    if shutil.which("Xvfb") is None:
        pytest.skip("Xvfb is not installed (Debian: apt-get install xvfb)")
    number = next(n for n in range(99, 200) if not Path(f"/tmp/.X11-unix/X{n}").exists())
    server = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "640x480x24", "-nolisten", "tcp"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not Path(f"/tmp/.X11-unix/X{number}").exists():
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.skip("Xvfb did not start")
        time.sleep(0.05)
    yield f":{number}"
    server.terminate()
    server.wait(timeout=10)


@pytest.fixture
def quad_clip(tmp_path: Path, data_dir: Path) -> tuple[Path, Path, np.ndarray]:
    """Frames 0-5 of multiobject-dev quad-1 at 214x120 and a mask PNG of its objects 1 and 3."""
    root = data_dir / "multiobject-dev"
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(6):
        frame = cv2.imread(str(root / "JPEGImages" / "480p" / "quad-1" / f"{k:05d}.jpg"))
        cv2.imwrite(str(folder / f"{k:05d}.png"), cv2.resize(frame, (W, H), interpolation=cv2.INTER_AREA))
    gt = cv2.resize(read_mask(root / "Annotations" / "480p" / "quad-1" / "00000.png"), (W, H),
                    interpolation=cv2.INTER_NEAREST)
    mask = np.where((gt == 1) | (gt == 3), gt, 0).astype(np.uint8)
    write_mask(tmp_path / "first.png", mask)
    return folder, tmp_path / "first.png", mask


def inside(mask: np.ndarray) -> tuple[int, int]:
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3)
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("gui", ["stand-in", "xvfb"])
def test_pause_remove_add_resume_quit(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                                      tmp_path: Path, quad_clip, gui: str) -> None:
    """Frame 1: space, ``x`` + ``1`` (object 1 removed), ``a`` + a dragged box (object 4 added), space;
    frame 2: space, ``c`` + a click on object 3 + a box (corrected), space; frame 3: ``q``. The JSON
    lines list the objects as edited."""
    if gui == "xvfb":
        monkeypatch.setenv("DISPLAY", request.getfixturevalue("xvfb"))
        monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
        monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
        if not sinks.display_available():
            pytest.skip("OpenCV has no GUI backend")
    folder, first, mask = quad_clip
    box = (5, 5, 60, 50)          # an arbitrary box: whatever GrabCut finds in it becomes object 4
    gui_ = ScriptedGui(monkeypatch, [], fake=gui == "stand-in")
    gui_.script = [NO_KEY, ord(" "), ord("x"), ord("1"), ord("a"), gui_.drag(box), 13, NO_KEY, ord(" "),
                   ord(" "), ord("c"), gui_.click(*inside(mask == 3)), gui_.drag(mask_box(mask == 3)), 13, ord(" "),
                   ord("q")]
    cfg = RunConfig(mask=first, frames=folder, backend="torch", save_json=tmp_path / "o.jsonl")
    said: list[str] = []
    summary = run(cfg, say=said.append)
    assert summary.quit and summary.frames == 4 and not gui_.script
    assert "frame 1: removed object 1, added object 4" in said and "frame 2: corrected object 3" in said
    records = [json.loads(line) for line in (tmp_path / "o.jsonl").read_text().splitlines()]
    assert [[o["id"] for o in r["objects"]] for r in records] == [[1, 3], [3, 4], [3, 4], [3, 4]]
    assert records[1]["objects"][1]["area"] > 0 and records[1]["objects"][1]["bbox"][0] >= box[0]
    assert len(gui_.shown) > 10 and set(gui_.shown) == {(H, W, 3)}


def test_no_window_without_a_display(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sinks, "display_available", lambda: False)
    for name in ("namedWindow", "imshow", "setMouseCallback"):
        monkeypatch.setattr(cv2, name, lambda *a: pytest.fail("a GUI function was called without a display"))
    with pytest.raises(NoDisplayError, match="no display available"):
        EditWindow("t")


def test_plain_write_pauses_without_edits(monkeypatch: pytest.MonkeyPatch) -> None:
    """``write`` outside the loop (no objects to edit): space pauses and resumes as in WindowSink."""
    gui = ScriptedGui(monkeypatch, [ord(" "), ord("a"), ord(" ")], fake=True)
    ids = np.zeros((H, W), np.uint8)
    ids[10:40, 10:40] = 1
    with EditWindow("t") as win:
        win.write(0, np.zeros((H, W, 3), np.uint8), ids)
        assert not win.paused and not win.quit_requested and gui.script == []


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("gui", ["stand-in", "xvfb"])
def test_camera_without_mask_selects_then_tracks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path, quad_clip, gui: str) -> None:
    """``mast-run --camera 0`` with no ``--mask``/``--box``: the selection window opens on the first
    frame (a box dragged, Enter, Enter to accept), then the tracking window (``q``). The quad-1 frames
    stand in for the camera."""
    from typer.testing import CliRunner

    from mast.runtime.sources import FrameFolderSource

    if gui == "xvfb":
        monkeypatch.setenv("DISPLAY", request.getfixturevalue("xvfb"))
        monkeypatch.setenv("QT_QPA_PLATFORM", "xcb")
        if not sinks.display_available():
            pytest.skip("OpenCV has no GUI backend")
    folder, _, mask = quad_clip

    def camera(cfg: RunConfig) -> FrameFolderSource:
        assert cfg.camera == 0 and cfg.select and cfg.mask is None
        return FrameFolderSource(folder)

    monkeypatch.setattr(run_module, "open_input", camera)
    gui_ = ScriptedGui(monkeypatch, [], fake=gui == "stand-in")
    gui_.script = [gui_.drag(mask_box(mask == 3)), 13, 13, NO_KEY, NO_KEY, ord("q")]   # the 1st NO_KEY: the
    # selection window's closing waitKey
    result = CliRunner().invoke(run_module.app, ["--camera", "0", "--backend", "torch",
                                                 "--save-masks", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    saved = [read_mask(p) for p in sorted((tmp_path / "m").glob("*.png"))]
    assert len(saved) == 2 and set(np.unique(saved[0]).tolist()) == {0, 1} and saved[1].max() <= 1
    ys, xs = np.nonzero(saved[0] == 1)
    x0, y0, x1, y1 = mask_box(mask == 3)
    assert x0 <= xs.min() and xs.max() < x1 and y0 <= ys.min() and ys.max() < y1   # inside the drawn box
