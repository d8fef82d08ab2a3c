"""``mast-serve``: a real server process (Triton through PyTriton) on free loopback ports, driven by
a stock ``tritonclient`` and by ``mast-run --server``: two streams equal to local Trackers, re-anchor,
the refusals (unknown stream, malformed tensors, sizes, a full table), restart recovery by the
client, idle streams freed, memory flat over a run of three streams, clean Ctrl-C.

Every wait is bounded; the server works at 72x128 (``--size``) so each frame takes tens of ms.
"""
from __future__ import annotations

import signal
import threading
import time

import cv2
import numpy as np
import pytest

from mast.core.masks import read_mask

grpcclient = pytest.importorskip("tritonclient.grpc", reason="tritonclient not installed (pip install -e '.[serve]')")
pytest.importorskip("pytriton", reason="nvidia-pytriton not installed (pip install -e '.[serve]')")
from tritonclient.utils import InferenceServerException  # noqa: E402

from mast.runtime.client import RemoteTracker, ServerError, error_cause  # noqa: E402
from mast.runtime.factory import make_backend  # noqa: E402
from mast.runtime.run import main as run_main  # noqa: E402
from mast.runtime.serve_process import ServeProcess, wait_port_free  # noqa: E402
from mast.runtime.tracker import Tracker  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = (72, 128)


def infer(client, frame: np.ndarray, stream: str | None, mask: np.ndarray | None = None, dtype: str = "UINT8",
          **more: str):
    """One request as any tritonclient user writes it; the output mask."""
    inputs = [grpcclient.InferInput("frame", list(frame.shape), dtype)]
    inputs[0].set_data_from_numpy(frame)
    if mask is not None:
        inputs.append(grpcclient.InferInput("mask", list(mask.shape), "UINT8"))
        inputs[1].set_data_from_numpy(mask)
    parameters = ({} if stream is None else {"stream_id": stream}) | more
    return client.infer("mast", inputs, parameters=parameters, client_timeout=60).as_numpy("mask")


def refused(client, *args, **kwargs) -> str:
    with pytest.raises(InferenceServerException) as info:
        infer(client, *args, **kwargs)
    return error_cause(info.value.message())


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = ServeProcess(tmp_path_factory.mktemp("serve") / "serve.log", "--size", "72x128", "--max-streams", "3",
                       "--idle-timeout", "120")
    yield srv
    code = srv.stop(signal.SIGINT)
    assert code == 130 and "served" in srv.output(), srv.output()


def test_two_streams_match_local_trackers_and_reanchor(server, dev_clip):
    """Two streams of different frame sizes, interleaved: start, steps, a re-anchor of each (merge,
    the default; replace); the masks equal local Trackers' at the same working size, bit for bit."""
    client = grpcclient.InferenceServerClient(server.url)
    a_frames, a_mask = dev_clip("camel", 5, (96, 171))
    b_frames, b_mask = dev_clip("dog", 5, (120, 214))
    backend = make_backend("torch", None, "cpu")
    local = {"a": Tracker(backend.fork(), size=SIZE), "b": Tracker(backend.fork(), size=SIZE)}
    clips = {"a": (a_frames, a_mask), "b": (b_frames, b_mask)}
    for k in range(5):
        for name, (frames, mask) in clips.items():
            if k == 0:
                got, want = infer(client, frames[0], name, mask), local[name].start(frames[0], mask)
            elif (name, k) == ("a", 3):
                got, want = infer(client, frames[k], name, mask), local[name].anchor(frames[k], mask, merge=True)
            elif (name, k) == ("b", 2):
                got = infer(client, frames[k], name, mask, anchor="replace")
                want = local[name].anchor(frames[k], mask)
            else:
                got, want = infer(client, frames[k], name), local[name].step(frames[k])
            assert got.dtype == np.uint8 and got.shape == frames[k].shape[:2]
            assert np.array_equal(got, want), f"stream {name} frame {k}"
    assert got.any()


def test_refusals_name_the_cause_and_the_server_keeps_serving(server, dev_clip):
    client = grpcclient.InferenceServerClient(server.url)
    frames, mask = dev_clip("cows", 2, (96, 171))
    assert "UnknownStreamError: unknown stream 'nobody'" in refused(client, frames[0], "nobody")
    assert "stream_id" in refused(client, frames[0], None, mask)
    assert "'anchor' is 'both'" in refused(client, frames[0], "c", mask, anchor="both")
    assert "FP32" in refused(client, frames[0].astype(np.float32), "c", dtype="FP32")          # Triton: dtype
    assert "frame" in refused(client, frames[0][..., 0].copy(), "c")                            # Triton: rank
    assert "FrameSizeError" in refused(client, frames[0], "c", mask[:50])                       # mask size
    assert infer(client, frames[0], "c", mask).any()                                            # 3rd stream
    assert "FrameSizeError" in refused(client, frames[1][:60], "c")                             # frame size
    assert "TableFullError" in refused(client, frames[0], "d", mask)                            # 3 of 3 open
    assert infer(client, frames[1], "c").shape == (96, 171)                                     # still serving


def test_concurrent_streams_and_mast_run_client(server, dev_clip, tmp_path):
    """Three clients at once (one through ``mast-run --server`` on a frame folder) are all served;
    the server's RSS stays flat over the run (the banks are fixed-size)."""
    clips = {"a": dev_clip("camel", 24, (96, 171)), "b": dev_clip("dog", 24, (120, 214))}  # as above
    cows, cows_mask = dev_clip("cows", 6, (96, 171))                       # stream c: its frame size
    (tmp_path / "frames").mkdir()
    for k, frame in enumerate(cows):
        cv2.imwrite(str(tmp_path / "frames" / f"{k:05d}.png"), frame)
    cv2.imwrite(str(tmp_path / "mask.png"), cows_mask * 255)
    errors: list[BaseException] = []

    def drive(name: str) -> None:
        try:
            client = grpcclient.InferenceServerClient(server.url)
            frames, _ = clips[name]
            for frame in frames:
                assert infer(client, frame, name).shape == frame.shape[:2]
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    rss_before = server.rss_mib()
    threads = [threading.Thread(target=drive, args=(name,)) for name in clips]
    for t in threads:
        t.start()
    with pytest.raises(SystemExit) as done:
        run_main(["--frames", str(tmp_path / "frames"), "--mask", str(tmp_path / "mask.png"), "--server", server.url,
                  "--stream-id", "c", "--save-masks", str(tmp_path / "masks"), "--no-display", "--max-frames", "6"])
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert done.value.code == 0
    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert len(masks) == 6 and read_mask(masks[-1]).shape == (96, 171) and read_mask(masks[-1]).any()
    growth_mib = server.rss_mib() - rss_before
    assert growth_mib < 30, f"server RSS grew {growth_mib:.1f} MiB over 54 frames of 3 streams"


def test_mast_run_server_options_are_checked(server, tmp_path, capsys):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    cv2.imwrite(str(tmp_path / "00000.png"), np.zeros((16, 16, 3), np.uint8))
    args = ["--frames", str(tmp_path), "--mask", str(tmp_path / "m.png"), "--server", server.url, "--no-display"]
    for extra, message in (([], "--server needs --stream-id"), (["--stream-id", "x", "--size", "8x8"], "server's")):
        with pytest.raises(SystemExit) as done:
            run_main(args + extra)
        assert done.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(ServerError, match="no mast-serve at 127.0.0.1:1"):
        RemoteTracker("127.0.0.1:1", "x", timeout=5)


def test_restart_and_idle_timeout_cost_one_reanchor(tmp_path, dev_clip):
    """Server killed (SIGKILL) and restarted on the same ports: the client's next frame is answered
    after one re-anchor with its last mask. A stream idle past --idle-timeout is freed: same."""
    frames, mask = dev_clip("blackswan", 7, (96, 171))
    said: list[str] = []
    args = ("--size", "72x128", "--idle-timeout", "1.5", "--max-streams", "2")
    srv = ServeProcess(tmp_path / "first.log", *args)
    try:
        tracker = RemoteTracker(srv.url, "cam", say=said.append)
        assert tracker.start(frames[0], mask).any()
        assert tracker.step(frames[1]).any()
        srv.stop(signal.SIGKILL)
        wait_port_free(srv.ports[1])
        srv = ServeProcess(tmp_path / "restarted.log", *args, ports=srv.ports)
        assert tracker.step(frames[2]).any() and tracker.reanchors == 1
        assert tracker.step(frames[3]).any() and tracker.reanchors == 1
        time.sleep(3.0)   # the client disappears for longer than the idle timeout
        assert tracker.step(frames[4]).any() and tracker.reanchors == 2
        assert np.array_equal(tracker.anchor(frames[5], mask), mask)         # anchor="replace"
        assert tracker.step(frames[6]).any() and tracker.reanchors == 2
        assert any("re-sent the last mask" in line for line in said)
        tracker.close()
    finally:
        code = srv.stop(signal.SIGINT)
    assert code == 130 and "stopping" in srv.output()
