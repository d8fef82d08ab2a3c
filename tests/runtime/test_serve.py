"""``mast-serve``: a real server process (Triton through PyTriton) on free loopback ports, driven by
a stock ``tritonclient`` and by ``mast-run --server``: two streams equal to local Trackers, re-anchor,
the refusals (unknown stream, malformed tensors, sizes, a full table), the shared secret, restarts
(SIGTERM; SIGKILL of the whole process group) mid-stream costing one re-anchor and no frame, idle
streams freed, memory flat over a run of three streams, clean Ctrl-C, no console noise and no
temporary file left.

Every wait is bounded; the server works at 104x184 (``--size``) so each frame takes tens of ms.
"""
from __future__ import annotations

import signal
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from mast.core.masks import read_mask

SERVE_ENV = "run .ci/serve_tests (the serve environment: docs/SERVING.md)"
grpcclient = pytest.importorskip("tritonclient.grpc", reason=f"tritonclient not installed: {SERVE_ENV}")
pytest.importorskip("pytriton", reason=f"nvidia-pytriton not installed: {SERVE_ENV}")
from tritonclient.utils import InferenceServerException  # noqa: E402

from mast.runtime.client import RemoteTracker, ServerError, error_cause  # noqa: E402
from mast.runtime.factory import make_backend, model_config  # noqa: E402
from mast.runtime.run import main as run_main  # noqa: E402
from mast.runtime.serve import main as serve_main  # noqa: E402
from mast.runtime.serve_process import ServeProcess, wait_port_free  # noqa: E402
from mast.runtime.tracker import Tracker  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
SIZE = (104, 184)
ARGS = ("--size", "104x184")
NOISE = ("NVML", "resource_tracker", "Signal (", "Non-graceful", "Traceback")   # what a clean server never prints


def scratch_of(srv: ServeProcess) -> list[Path]:
    """The server's temporary folders (mast.runtime.serve_scratch: named after its pid)."""
    return sorted(Path(tempfile.gettempdir()).glob(f"mast-serve-{srv.process.pid}-*"))


def triton_folders(scratch: Path) -> list[Path]:
    """The model folders Triton made for the server, as it listed them."""
    return [Path(line) for line in (scratch / "triton-folders").read_text().split()]


def wait_listed_segments(scratch: Path, timeout: float = 20.0) -> list[Path]:
    """The tensor-store segments the running server listed (it lists them every 2 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = (scratch / "shared-memory").read_text().split() if (scratch / "shared-memory").exists() else []
        if listed:
            return [Path("/dev/shm") / name for name in listed]
        time.sleep(0.2)
    raise AssertionError(f"the server listed no shared memory in {timeout:g} s")


def assert_clean_exit(srv: ServeProcess, code: int) -> None:
    """Exit 130 with the summary, none of Triton's console noise, no temporary file left."""
    out = srv.output()
    assert code == 130 and "served" in out, out
    assert not [n for n in NOISE if n in out], out
    assert not scratch_of(srv) and not list(Path("/dev/shm").glob(f"pytrtion{srv.process.pid}-*"))


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
    srv = ServeProcess(tmp_path_factory.mktemp("serve") / "serve.log", *ARGS, "--max-streams", "3",
                       "--idle-timeout", "120")
    folders = triton_folders(scratch_of(srv)[0])
    assert folders and all(f.is_dir() for f in folders)
    yield srv
    assert_clean_exit(srv, srv.stop(signal.SIGINT))
    assert not any(f.exists() for f in folders)   # Triton's model copies removed too


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
    the server's memory stays flat over the run: after a warm-up of 22 frames of two streams, sent
    at once (banks allocated, batched steps run, both long-term frames read through their ROI, which
    the fused read's bank lays out once: mast.core.attention_c.FusedBank), the peak RSS of the
    second half of the run is within 16 MiB of the first half's (a step's transient memory varies by
    ~25 MiB from sample to sample, so single samples are not compared)."""
    clips = {"a": dev_clip("camel", 44, (96, 171)), "b": dev_clip("dog", 44, (120, 214)),  # as above
             "c": dev_clip("cows", 6, (96, 171))}                                          # its frame size
    (tmp_path / "frames").mkdir()
    for k, frame in enumerate(clips["c"][0]):
        cv2.imwrite(str(tmp_path / "frames" / f"{k:05d}.png"), frame)
    cv2.imwrite(str(tmp_path / "mask.png"), clips["c"][1] * 255)
    errors: list[BaseException] = []

    def drive(name: str, first: int, last: int) -> None:
        try:
            client = grpcclient.InferenceServerClient(server.url)
            frames, mask = clips[name]
            for k in range(first, last):
                assert infer(client, frames[k], name, mask if k == 0 else None).shape == frames[k].shape[:2]
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def run_threads(threads: list[threading.Thread]) -> None:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)

    for name in clips:   # warm-up: each stream (re)started, then frames of each at once
        drive(name, 0, 1)
    run_threads([threading.Thread(target=drive, args=(name, 1, 22 if name != "c" else 2)) for name in clips])
    assert not errors, errors
    samples: list[float] = []
    sampled = threading.Event()

    def sample() -> None:
        while not sampled.wait(0.25):
            samples.append(server.rss_mib())

    sampler = threading.Thread(target=sample)
    sampler.start()
    threads = [threading.Thread(target=drive, args=(name, 22, 44)) for name in ("a", "b")]
    for t in threads:
        t.start()
    with pytest.raises(SystemExit) as done:
        run_main(["--frames", str(tmp_path / "frames"), "--mask", str(tmp_path / "mask.png"), "--server", server.url,
                  "--stream-id", "c", "--save-masks", str(tmp_path / "masks"), "--no-display", "--max-frames", "6"])
    for t in threads:
        t.join(timeout=120)
    sampled.set()
    sampler.join()
    assert not errors, errors
    assert done.value.code == 0
    masks = sorted((tmp_path / "masks").glob("*.png"))
    assert len(masks) == 6 and read_mask(masks[-1]).shape == (96, 171) and read_mask(masks[-1]).any()
    half = len(samples) // 2
    assert half >= 2, samples
    growth_mib = max(samples[half:]) - max(samples[:half])
    assert growth_mib < 16, f"server RSS peak grew {growth_mib:.1f} MiB over 50 frames of 3 streams: {samples}"


def test_mast_run_server_options_are_checked(server, tmp_path, capsys):
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 255
    cv2.imwrite(str(tmp_path / "m.png"), mask)
    cv2.imwrite(str(tmp_path / "00000.png"), np.zeros((16, 16, 3), np.uint8))
    args = ["--frames", str(tmp_path), "--mask", str(tmp_path / "m.png"), "--server", server.url, "--no-display"]
    for extra, message in (([], "--server needs --stream-id"), (["--stream-id", "x", "--size", "240x427"], "server's")):
        with pytest.raises(SystemExit) as done:
            run_main(args + extra)
        assert done.value.code == 2 and message in capsys.readouterr().err
    with pytest.raises(ServerError, match="no mast-serve at 127.0.0.1:1"):
        RemoteTracker("127.0.0.1:1", "x", timeout=5)


def test_restarts_mid_stream_cost_one_reanchor_and_no_frame(tmp_path, dev_clip):
    """A client streams frames while its server is stopped (SIGTERM) and started again on the same
    ports, then killed whole (SIGKILL of its process group: Triton and its helpers too) and started
    again: every frame gets its mask; each restart costs one wait (said) and one re-anchor with the
    last mask. The stopped server removed its temporary files; the killed one's are removed by the
    next start. A stream idle past --idle-timeout is freed: one more re-anchor."""
    frames, mask = dev_clip("blackswan", 12, (96, 171))
    said: list[str] = []
    args = (*ARGS, "--idle-timeout", "3", "--max-streams", "2")
    srv = ServeProcess(tmp_path / "first.log", *args)
    tracker = RemoteTracker(srv.url, "cam", say=said.append, retry_s=180)
    masks: list[np.ndarray] = []
    errors: list[BaseException] = []
    sent = [0]                        # frames handed to the tracker
    done = threading.Event()          # set by the main thread once both restarts are behind it

    def stream() -> None:
        """Frames every 0.2 s, the clip over and over, until told to stop: the stream outlives both
        restarts however slow the machine (a fixed count could end before the second one)."""
        try:
            sent[0] += 1
            masks.append(tracker.start(frames[0], mask))
            while not done.is_set():
                time.sleep(0.2)
                sent[0] += 1
                masks.append(tracker.step(frames[sent[0] % len(frames)]))
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    def wait_masks(n: int) -> None:
        deadline = time.monotonic() + 120
        while len(masks) < n and not errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(masks) >= n and not errors, (len(masks), errors)

    client = threading.Thread(target=stream)
    client.start()
    try:
        wait_masks(3)
        scratch = scratch_of(srv)[0]
        folders = triton_folders(scratch)
        assert srv.stop(signal.SIGTERM) == 130   # mid-stream: the client is waiting for its next frame
        assert not scratch.exists() and not any(f.exists() for f in folders)
        for port in srv.ports:
            wait_port_free(port)
        srv = ServeProcess(tmp_path / "after-sigterm.log", *args, ports=srv.ports)
        wait_masks(len(masks) + 3)   # streaming again, after one re-anchor
        assert tracker.reanchors == 1 and tracker.waits == 1
        killed_scratch = scratch_of(srv)[0]
        killed_folders = triton_folders(killed_scratch)
        killed_segments = wait_listed_segments(killed_scratch)
        srv.kill_group(signal.SIGKILL)
        assert killed_scratch.exists() and all(s.exists() for s in killed_segments)   # nothing of it ran ...
        for port in srv.ports:
            wait_port_free(port)
        srv = ServeProcess(tmp_path / "after-sigkill.log", *args, ports=srv.ports)
        srv.wait_output("removed the temporary files of 1 mast-serve process")
        assert not killed_scratch.exists() and not any(f.exists() for f in killed_folders)   # ... the next start did
        assert not any(s.exists() for s in killed_segments)
        wait_masks(len(masks) + 3)   # streaming again, after the second re-anchor
        done.set()
        client.join(timeout=180)
        assert not client.is_alive() and not errors, errors
        assert len(masks) == sent[0] and all(m.shape == frames[0].shape[:2] and m.any() for m in masks)
        assert tracker.reanchors == 2 and tracker.waits == 2, said
        assert sum("re-sent the last mask" in line for line in said) == 2
        assert sum("cannot answer" in line for line in said) == 2, said
        assert sum("answers again" in line for line in said) == 2, said
        time.sleep(5.0)   # the client disappears for longer than the idle timeout
        assert tracker.step(frames[-1]).any() and tracker.reanchors == 3
        assert np.array_equal(tracker.anchor(frames[-1], mask), mask)       # anchor="replace"
        assert tracker.step(frames[-1]).any() and tracker.reanchors == 3
        tracker.close()
    finally:
        done.set()
        client.join(timeout=180)
        code = srv.stop(signal.SIGINT)
    assert_clean_exit(srv, code)
    assert "stopping" in srv.output()


def test_token_is_required_on_every_request(tmp_path, dev_clip, monkeypatch, capsys):
    """With --token (here $MAST_TOKEN) Triton refuses any request without it (a clear line, never
    waited on), health probes excepted; RemoteTracker and mast-run send it (--token or $MAST_TOKEN)."""
    frames, mask = dev_clip("cows", 3, (96, 171))
    srv = ServeProcess(tmp_path / "token.log", *ARGS, token="s3cret")
    try:
        srv.wait_output("every request must carry the token")
        stock = grpcclient.InferenceServerClient(srv.url)
        assert stock.is_server_ready() and stock.is_model_ready("mast")      # probes stay open
        assert "restricted" in refused(stock, frames[0], "x", mask)
        with pytest.raises(InferenceServerException, match="restricted"):
            stock.get_model_metadata("mast")
        with pytest.raises(ServerError, match="requires a shared secret: give --token"):
            RemoteTracker(srv.url, "x")
        with pytest.raises(ServerError, match="the token is not the server's"):
            RemoteTracker(srv.url, "x", token="wrong")
        tracker = RemoteTracker(srv.url, "x", token="s3cret")
        assert tracker.start(frames[0], mask).any() and tracker.step(frames[1]).any()
        tracker.close()
        (tmp_path / "frames").mkdir()
        for k, frame in enumerate(frames):
            cv2.imwrite(str(tmp_path / "frames" / f"{k:05d}.png"), frame)
        cv2.imwrite(str(tmp_path / "mask.png"), mask * 255)
        args = ["--frames", str(tmp_path / "frames"), "--mask", str(tmp_path / "mask.png"), "--server", srv.url,
                "--stream-id", "y", "--no-display"]
        capsys.readouterr()
        for extra, env, code in (([], None, 2), (["--token", "s3cret"], None, 0), ([], "s3cret", 0)):
            if env is None:
                monkeypatch.delenv("MAST_TOKEN", raising=False)
            else:
                monkeypatch.setenv("MAST_TOKEN", env)
            with pytest.raises(SystemExit) as done:
                run_main(args + extra)
            err = capsys.readouterr().err
            assert done.value.code == code, err
            assert ("requires a shared secret" in err) == (code == 2) and "Traceback" not in err
    finally:
        code = srv.stop(signal.SIGTERM)
    assert_clean_exit(srv, code)


def test_radius_reaches_every_stream(tmp_path, dev_clip):
    """--radius: the server says it at start and tracks every stream with it (the masks of a local
    Tracker built with the same radius, bit for bit; not the default radius's)."""
    frames, mask = dev_clip("camel", 4, (96, 171))
    srv = ServeProcess(tmp_path / "radius.log", *ARGS, "--radius", "5")
    try:
        srv.wait_output("attention radius 5")
        client = grpcclient.InferenceServerClient(srv.url)
        got = [infer(client, frames[0], "r", mask)] + [infer(client, f, "r") for f in frames[1:]]
    finally:
        code = srv.stop(signal.SIGTERM)
    assert_clean_exit(srv, code)
    for radius, same in ((5, True), (None, False)):
        backend = make_backend("torch", None, "cpu", radius=radius)
        local = Tracker(backend, model_config(backend), size=SIZE)
        want = [local.start(frames[0], mask)] + [local.step(f) for f in frames[1:]]
        assert all(np.array_equal(g, w) for g, w in zip(got, want)) == same, radius


def test_serve_says_a_public_address_and_refuses_an_empty_token(tmp_path, capsys):
    """Another address than loopback is said at start (before the model loads); an empty --token
    is refused (one line, exit 2)."""
    for argv, line in ((["--address", "0.0.0.0", "--checkpoint", str(tmp_path / "none.pt")],
                        "warning: listening on 0.0.0.0: other machines can reach this server and, without --token"),
                       (["--token", " "], "--token (or $MAST_TOKEN) is empty")):
        with pytest.raises(SystemExit) as done:
            serve_main(argv)
        err = capsys.readouterr().err
        assert done.value.code == 2 and line in err, err
        assert "Traceback" not in err
