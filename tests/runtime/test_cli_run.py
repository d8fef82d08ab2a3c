"""``mast-run``: file / folder / live sources, outputs, the demo, and every bad input of issue 7.

A video file stands in for a camera (``--simulate-live``, or a ``CameraSource`` whose capture is
opened on the file). Raw Lab keys at 64x112 keep every run well under a second.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from mast.core.masks import read_mask, write_mask
from mast.runtime import factory
from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK
from mast.runtime.run import RunConfig, app, live_size, run
from mast.runtime.stream import conform_mask
from mast.runtime.sources import CameraSource, VideoSource

H, W = 64, 112
N = 12
REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _demo_frames(n: int) -> list[np.ndarray]:
    """The bundled clip back and forth, resized to H x W."""
    files = sorted(DEMO_FRAMES.glob("*.jpg"))
    order = (list(range(len(files))) + list(range(len(files) - 2, 0, -1))) * (1 + n // 40)
    return [cv2.resize(cv2.imread(str(files[i])), (W, H), interpolation=cv2.INTER_AREA) for i in order[:n]]


def write_video(path: Path, n: int = N, fps: float = 10.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (W, H))
    for frame in _demo_frames(n):
        writer.write(frame)
    writer.release()
    return path


def count_video_frames(path: Path) -> int:
    with VideoSource(path) as src:
        return sum(1 for _ in src)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 12-frame video, the same frames as a folder, and the first-frame mask (palette PNG)."""
    root = tmp_path_factory.mktemp("clip")
    folder = root / "frames"
    folder.mkdir()
    for i, frame in enumerate(_demo_frames(N)):
        cv2.imwrite(str(folder / f"{i:05d}.jpg"), frame)
    mask = root / "mask.png"
    write_mask(mask, cv2.resize(read_mask(DEMO_MASK), (W, H), interpolation=cv2.INTER_NEAREST))
    return {"video": write_video(root / "clip.mp4"), "frames": folder, "mask": mask, "root": root}


def invoke(*args: object):
    result = runner.invoke(app, [str(a) for a in args])
    return result, result.output


BASE = ("--backend", "torch", "--keys", "lab", "--no-display")


# -- normal runs -------------------------------------------------------------------------------------
def test_video_headless_writes_masks_and_a_playable_video(clip: dict[str, Path], tmp_path: Path) -> None:
    result, out = invoke("--video", clip["video"], "--mask", clip["mask"], *BASE,
                         "--save-masks", tmp_path / "masks", "--save-video", tmp_path / "o.mp4")
    assert result.exit_code == 0, out
    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert [p.stem for p in masks] == [f"{i:05d}" for i in range(N)]
    assert read_mask(masks[0]).shape == (H, W) and read_mask(masks[0]).max() == 1
    assert count_video_frames(tmp_path / "o.mp4") == N
    assert f"processed {N} frame(s)" in out and "0 stale frame(s) dropped" in out
    assert str((tmp_path / "o.mp4").resolve()) in out.replace("\n", "")
    assert "fps" in out


def test_frames_folder_with_mask_frame_and_max_frames(clip: dict[str, Path], tmp_path: Path) -> None:
    result, out = invoke("--frames", clip["frames"], "--mask", clip["mask"], "--mask-frame", 4,
                         "--max-frames", 5, "--size", "52x91", *BASE, "--save-masks", tmp_path / "m", "--radius", 5)
    assert result.exit_code == 0, out
    assert "attention radius 5" in out   # --radius reaches the tracker
    assert [p.stem for p in sorted((tmp_path / "m").glob("*.png"))] == [f"{i:05d}" for i in range(4, 9)]
    assert read_mask(tmp_path / "m" / "00004.png").shape == (H, W)  # masks come back at frame size
    assert "working size 52x91" in out


def test_mask_frame_past_the_end(clip: dict[str, Path]) -> None:
    result, out = invoke("--video", clip["video"], "--mask", clip["mask"], "--mask-frame", 50, *BASE)
    assert result.exit_code == 2 and "past its end" in out


def test_live_source_drops_stale_frames(clip: dict[str, Path], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 40-frame video played like a camera at 400 fps, each tracked frame taking at least 10 ms:
    the tracker cannot keep up, so it takes the newest frame each time and the stale ones are
    dropped and reported. (Without the floor a fast machine tracked these small frames at 400 fps.)"""
    from mast.runtime.tracker import Tracker

    step = Tracker.step

    def slow_step(self, *args, **kwargs):
        time.sleep(0.01)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(Tracker, "step", slow_step)
    fast = write_video(tmp_path / "fast.mp4", n=40, fps=400.0)
    result, out = invoke("--video", fast, "--simulate-live", "--mask", clip["mask"], *BASE,
                         "--save-masks", tmp_path / "m")
    assert result.exit_code == 0, out
    names = [int(p.stem) for p in sorted((tmp_path / "m").glob("*.png"))]
    dropped = int(out.split("stale frame(s) dropped")[0].split(",")[-1])
    assert dropped > 0 and len(names) + dropped == 40
    assert names == sorted(set(names))
    assert "live: stale frames are dropped" in out


@pytest.mark.parametrize("frame_size, rows, expected", [
    ((640, 480), 240, (240, 320)), ((1280, 720), 240, (240, 427)), ((854, 480), 240, (240, 427)),
    ((480, 640), 240, (240, 180)), ((320, 240), 240, None), ((112, 64), 240, None), (None, 240, None),
    ((640, 480), 120, (120, 160)),
])
def test_live_size_keeps_the_aspect_at_the_given_rows(frame_size, rows, expected) -> None:
    assert live_size(frame_size, rows) == expected


def test_live_source_on_a_cpu_tracks_at_240_rows_unless_size_full(tmp_path: Path) -> None:
    """Live frames taller than 240 rows are tracked at 240 rows on a CPU (the aspect kept, masks back
    at the frame's size) when --size is not given; --size full and file sources keep the frame's size."""
    frame = cv2.resize(_demo_frames(1)[0], (640, 480))
    video = tmp_path / "tall.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (640, 480))
    for _ in range(3):
        writer.write(frame)
    writer.release()
    mask = tmp_path / "mask.png"
    write_mask(mask, cv2.resize(read_mask(DEMO_MASK), (640, 480), interpolation=cv2.INTER_NEAREST))
    result, out = invoke("--video", video, "--simulate-live", "--mask", mask, *BASE, "--save-masks", tmp_path / "m")
    assert result.exit_code == 0, out
    assert "working size 240x320 (a live source on a CPU" in out and "--size full" in out
    assert {read_mask(p).shape for p in (tmp_path / "m").glob("*.png")} == {(480, 640)}
    for args in (("--simulate-live", "--size", "full"), ("--simulate-live", "--size", "FULL "), ()):
        result, out = invoke("--video", video, *args, "--mask", mask, *BASE)
        assert result.exit_code == 0, out
        assert "working size = frame size" in out, args
    result, out = invoke("--video", video, "--simulate-live", "--size", "120x160", "--mask", mask, *BASE)
    assert result.exit_code == 0 and "working size 120x160," in out   # --size as given, no live note


def test_size_full_against_a_fixed_size_model_is_one_line(clip: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An exported model runs at its size only: --size full is refused naming it (a torch backend
    given a fixed input size stands in for the export)."""
    from mast.runtime import run as run_module
    from mast.runtime.tracker import Tracker

    def fixed_size_tracker(*args, **kwargs):
        backend = factory.make_backend("torch", keys="lab")
        backend.input_size = (H, W)
        return Tracker(backend, factory.model_config(backend))

    monkeypatch.setattr(run_module, "open_tracker", fixed_size_tracker)
    result, out = invoke("--video", clip["video"], "--size", "full", "--mask", clip["mask"], *BASE)
    assert result.exit_code == 2
    assert f"--size full but the model was exported for {H}x{W}" in out and "Traceback" not in out


def test_headless_when_no_display(clip: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    result, out = invoke("--video", clip["video"], "--mask", clip["mask"], "--backend", "torch",
                         "--keys", "lab", "--max-frames", 2, "--save-masks", tmp_path / "m")
    assert result.exit_code == 0, out
    assert "no display available: running headless" in out
    assert len(list((tmp_path / "m").glob("*.png"))) == 2


def test_demo_writes_overlay_video_and_masks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(factory, "shipped_weights", lambda: None)
    result, out = invoke("--demo", "--no-display", "--max-frames", 3)
    assert result.exit_code == 0, out
    assert "no shipped weights" in out and "--keys lab" in out
    out_dir = tmp_path / "mast-demo"
    assert count_video_frames(out_dir / "overlay.mp4") == 3
    assert len(list((out_dir / "masks").glob("*.png"))) == 3
    flat = out.replace("\n", "")
    assert str((out_dir / "overlay.mp4").resolve()) in flat and str((out_dir / "masks").resolve()) in flat


# -- bad input ---------------------------------------------------------------------------------------
def test_mask_size_policy_resize_same_aspect(clip: dict[str, Path], tmp_path: Path) -> None:
    """A mask 1 px narrower and shorter (same aspect within 2 %) is resized with a warning."""
    small = tmp_path / "small.png"
    write_mask(small, cv2.resize(read_mask(clip["mask"]), (W - 1, H - 1), interpolation=cv2.INTER_NEAREST))
    result, out = invoke("--video", clip["video"], "--mask", small, "--max-frames", 2, *BASE)
    assert result.exit_code == 0, out
    assert f"warning: the mask is {W - 1}x{H - 1} but the frame is {W}x{H}: resized" in out.replace("\n", " ")


def test_mask_size_policy_refuse_other_aspect(clip: dict[str, Path], tmp_path: Path) -> None:
    square = tmp_path / "square.png"
    write_mask(square, cv2.resize(read_mask(clip["mask"]), (H, H), interpolation=cv2.INTER_NEAREST))
    result, out = invoke("--video", clip["video"], "--mask", square, *BASE, "--save-masks", tmp_path / "m")
    assert result.exit_code == 2 and "another aspect ratio" in out
    assert not list((tmp_path / "m").glob("*.png"))


def test_conform_mask_judo_853_px(data_dir: Path) -> None:
    mask = read_mask(data_dir / "multiobject-demo/Annotations/480p/judo/00005.png")
    assert mask.shape == (480, 853)
    out, warning = conform_mask(mask, (480, 854))
    assert out.shape == (480, 854) and "853x480" in warning
    assert set(np.unique(out)) == set(np.unique(mask))


def test_mask_with_no_object(clip: dict[str, Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty.png"
    write_mask(empty, np.zeros((H, W), np.uint8))
    result, out = invoke("--video", clip["video"], "--mask", empty, *BASE)
    assert result.exit_code == 2 and "has no object" in out


def test_missing_mask(clip: dict[str, Path], tmp_path: Path) -> None:
    result, out = invoke("--video", clip["video"], "--mask", tmp_path / "nope.png", *BASE)
    assert result.exit_code == 2 and "mask not found" in out


def test_unknown_camera(clip: dict[str, Path]) -> None:
    result, out = invoke("--camera", 99, "--mask", clip["mask"], *BASE)
    assert result.exit_code == 2 and "camera 99 could not be opened" in out


def test_unreadable_and_missing_video(clip: dict[str, Path], tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video at all")
    result, out = invoke("--video", bad, "--mask", clip["mask"], *BASE)
    assert result.exit_code == 2 and "bad.mp4" in out and "error:" in out
    result, out = invoke("--video", tmp_path / "missing.mp4", "--mask", clip["mask"], *BASE)
    assert result.exit_code == 2 and "video not found" in out


@pytest.mark.parametrize("option", ["--save-video", "--save-masks"])
def test_unwritable_output(clip: dict[str, Path], tmp_path: Path, option: str) -> None:
    """An output under a regular file cannot be created: refused before any frame is processed."""
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    result, out = invoke("--video", clip["video"], "--mask", clip["mask"], *BASE, option, blocker / "out" / "x.mp4")
    assert result.exit_code == 2 and "cannot create" in out
    assert "processed" not in out


def test_no_model_says_so_in_one_line(clip: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(factory, "shipped_weights", lambda: None)
    result, out = invoke("--video", clip["video"], "--mask", clip["mask"], "--no-display")
    assert result.exit_code == 2
    assert out.strip().splitlines()[-1].startswith("error: no model:") or "error: no model:" in out
    assert "--keys lab" in out and "Traceback" not in out


def test_mask_frame_on_a_live_source(clip: dict[str, Path]) -> None:
    result, out = invoke("--video", clip["video"], "--simulate-live", "--mask", clip["mask"], "--mask-frame", 2, *BASE)
    assert result.exit_code == 2 and "not to live sources" in out


# -- interruptions ------------------------------------------------------------------------------------
class _InterruptingVideo(VideoSource):
    """A video that delivers SIGINT to this process ``times`` times when frame ``at`` is read."""

    def __init__(self, path: Path, at: int, times: int = 1) -> None:
        super().__init__(path)
        self.at, self.times = at, times

    def _read_frames(self) -> Iterator[tuple[int, np.ndarray]]:
        for index, frame in super()._read_frames():
            if index == self.at:
                for _ in range(self.times):
                    signal.raise_signal(signal.SIGINT)
            yield index, frame


def _cfg(clip: dict[str, Path], tmp_path: Path) -> RunConfig:
    return RunConfig(mask=clip["mask"], backend="torch", keys="lab", display=False,
                     save_masks=tmp_path / "m", save_video=tmp_path / "o.mp4")


@pytest.mark.parametrize("times", [1, 2])
def test_ctrl_c_flushes_outputs(clip: dict[str, Path], tmp_path: Path, times: int) -> None:
    """One Ctrl-C stops after the current frame; a second one stops at once. Either way the masks
    so far are written, the video is finalised and playable, and the exit code is 130."""
    before = signal.getsignal(signal.SIGINT)  # default_int_handler, or SIG_IGN under nohup / a background job
    summary = run(_cfg(clip, tmp_path), say=lambda s: None, source=_InterruptingVideo(clip["video"], 5, times))
    assert summary.interrupted and summary.exit_code == 130
    masks = sorted((tmp_path / "m").glob("*.png"))
    assert len(masks) == summary.frames == (6 if times == 1 else 5)
    assert count_video_frames(tmp_path / "o.mp4") == summary.frames
    assert signal.getsignal(signal.SIGINT) is before  # handler restored


def test_camera_that_stops_mid_stream_flushes_outputs(clip: dict[str, Path], tmp_path: Path) -> None:
    """A "camera" (a capture opened on the video) that stops delivering after 12 frames."""
    camera = CameraSource(0, opener=lambda _: cv2.VideoCapture(str(clip["video"])), max_failures=3, timeout_s=5.0)
    summary = run(_cfg(clip, tmp_path), say=lambda s: None, source=camera)
    assert summary.stopped and "stopped delivering frames" in summary.stopped
    assert summary.exit_code == 1 and summary.frames + summary.dropped == N
    assert len(list((tmp_path / "m").glob("*.png"))) == summary.frames
    assert count_video_frames(tmp_path / "o.mp4") == summary.frames


def test_sigint_to_the_command_leaves_playable_outputs(tmp_path: Path) -> None:
    """The real thing: SIGINT to a running ``mast-run`` process."""
    video = write_video(tmp_path / "long.mp4", n=400)
    mask = tmp_path / "mask.png"
    write_mask(mask, cv2.resize(read_mask(DEMO_MASK), (W, H), interpolation=cv2.INTER_NEAREST))
    masks, out_video = tmp_path / "m", tmp_path / "o.mp4"
    cmd = [sys.executable, "-m", "mast.runtime.run", "--video", str(video), "--mask", str(mask), *BASE,
           "--save-masks", str(masks), "--save-video", str(out_video)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 60
    while len(list(masks.glob("*.png"))) < 3 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "interrupted (Ctrl-C)" in out
    written = len(list(masks.glob("*.png")))
    assert 3 <= written < 400
    assert count_video_frames(out_video) == written


def test_unreadable_frame_mid_folder_stops_with_outputs(clip: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(8):
        (folder / f"{i:05d}.jpg").write_bytes((clip["frames"] / f"{i:05d}.jpg").read_bytes())
    (folder / "00005.jpg").write_bytes(b"truncated")
    result, out = invoke("--frames", folder, "--mask", clip["mask"], *BASE,
                         "--save-masks", tmp_path / "m", "--save-video", tmp_path / "o.mp4")
    assert result.exit_code == 1, out
    assert "stopped early: cannot read frame" in out and "00005.jpg" in out
    assert len(list((tmp_path / "m").glob("*.png"))) == 5 and count_video_frames(tmp_path / "o.mp4") == 5


# -- issue 23: every bad input one line on stderr, exit 2; every warning on stderr ----------------
def _one_error_line(result, *needles: str) -> str:
    """The single ``error:`` line on stderr (no traceback), holding every needle; exit code 2."""
    lines = result.stderr.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("size", ["13x7", "48x200", "200x12"])
def test_size_too_small_for_the_attention_window_is_refused(clip: dict[str, Path], tmp_path: Path, size: str) -> None:
    """Below a key map of R + 1 = 13 keys a side (49 px at stride 4) the objects fade (13x7: gone
    from frame 1): refused before any frame, by the --size rule of run, eval, bench and serve."""
    result, _ = invoke("--frames", clip["frames"], "--mask", clip["mask"], "--size", size, *BASE,
                       "--save-masks", tmp_path / "m")
    _one_error_line(result, f"--size {size}", "too small", "at least 49x49")
    assert not (tmp_path / "m").exists() or not list((tmp_path / "m").glob("*.png"))


def _broken_checkpoints(root: Path) -> dict[str, Path]:
    """Real broken files: empty, random bytes, text, a checkpoint cut in half, another model's."""
    import torch

    from mast.core.checkpoint import save_checkpoint
    from mast.core.model import key_encoder

    files = {name: root / f"{name}.pt" for name in ("empty", "random", "text", "truncated", "foreign")}
    files["empty"].write_bytes(b"")
    files["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["text"].write_text("hello, this is not a checkpoint\n")
    save_checkpoint(root / "whole.pt", key_encoder("random"))
    data = (root / "whole.pt").read_bytes()
    files["truncated"].write_bytes(data[:len(data) // 2])
    torch.save({"state_dict": torch.nn.Linear(3, 4).state_dict()}, files["foreign"])
    return files


def test_broken_checkpoints_are_one_line(clip: dict[str, Path], tmp_path: Path) -> None:
    for name, path in _broken_checkpoints(tmp_path).items():
        result, _ = invoke("--frames", clip["frames"], "--mask", clip["mask"], "--backend", "torch",
                           "--model", path, "--no-display", "--save-masks", tmp_path / "m")
        line = _one_error_line(result, "not a mast-tracker checkpoint", str(path))
        assert "weights_only" not in line, (name, line)   # not torch's advice to load untrusted pickles
        assert not (tmp_path / "m").exists() or not list((tmp_path / "m").glob("*.png"))


def test_truncated_jpeg_mid_stream_is_tracked_with_a_warning_naming_the_frame(clip: dict[str, Path], tmp_path: Path) -> None:
    """A JPEG cut short mid-stream is decoded as far as it goes and tracked, with one warning line
    on stderr naming the frame; every frame gets its mask. Bytes that are no image stop the stream
    (next test)."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(6):
        (folder / f"{i:05d}.jpg").write_bytes((clip["frames"] / f"{i:05d}.jpg").read_bytes())
    data = (folder / "00003.jpg").read_bytes()
    (folder / "00003.jpg").write_bytes(data[:len(data) * 2 // 3])
    result, _ = invoke("--frames", folder, "--mask", clip["mask"], *BASE, "--save-masks", tmp_path / "m")
    assert result.exit_code == 0, result.output
    warned = [line for line in result.stderr.splitlines() if "truncated JPEG" in line]
    assert len(warned) == 1 and warned[0].startswith("warning: frame ") and "00003.jpg" in warned[0], result.stderr
    assert len(list((tmp_path / "m").glob("*.png"))) == 6


def test_warnings_and_stopped_early_go_to_stderr(clip: dict[str, Path], tmp_path: Path) -> None:
    """The mask-resize warning and "stopped early" on stderr; the summary on stdout."""
    small = tmp_path / "small.png"
    write_mask(small, cv2.resize(read_mask(clip["mask"]), (W - 1, H - 1), interpolation=cv2.INTER_NEAREST))
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i:05d}.jpg").write_bytes((clip["frames"] / f"{i:05d}.jpg").read_bytes())
    (folder / "00004.jpg").write_bytes(b"not an image")
    result, _ = invoke("--frames", folder, "--mask", small, *BASE, "--save-masks", tmp_path / "m")
    assert result.exit_code == 1, result.output
    err = result.stderr.replace("\n", " ")
    assert "warning: the mask is" in err and "stopped early: cannot read frame" in err and "00004.jpg" in err
    assert "warning:" not in result.stdout and "stopped early:" not in result.stdout
    assert "processed 4 frame(s)" in result.stdout
