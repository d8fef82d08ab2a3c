"""Load test of ``mast-serve``: N concurrent streams (1, 2, 4, 8) of real DAVIS dev sequences on loopback.

    python benchmarks/bench_serve.py --davis ../shared/data/davis2016-val-dev --size 240x427 \
        --frames 12 --time-limit 180 --threads 1 --json OUT.json

For each N a fresh ``mast-serve`` (``--max-streams 8``, ``--size``) is started on free loopback ports;
N client threads (stock ``tritonclient`` gRPC, one stream each, a different sequence each) send
the first frame with its mask, then the next ``--frames`` frames at full size (854x480), each
after the previous answer (closed loop: one frame in flight per stream). Bounded: at most
``--frames`` frames per stream and ``--time-limit`` seconds per N (a stream stops sending then).
Reported per N: aggregate frames/s (tracked frames after the first of every stream / wall time
from the first tracked frame to the last answer), per-stream latency p50 / p95 (request sent ->
mask received, the first frame excluded; the table gives the mean p50 over streams and the worst
p95), the server's mean batch (frames per engine step, from its exit summary), and the server's
peak RSS sampled every 0.5 s: its own process and the whole tree (Triton and its per-instance
Python helpers included).
"""
from __future__ import annotations

import argparse
import json
import re
import signal
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from mast.core.masks import read_mask
from mast.runtime.bench import cpu_isa, cpu_name
from mast.runtime.client import tritonclient_grpc
from mast.runtime.serve_process import ServeProcess

SEQUENCES = ("blackswan", "bmx-trees", "breakdance", "camel", "car-roundabout", "cows", "dog", "goat")


def load(davis: Path, name: str, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The first ``n`` frames of sequence ``name`` (BGR, full size) and its first mask (id 1)."""
    paths = sorted((davis / "JPEGImages" / "480p" / name).glob("*.jpg"))[:n]
    mask = (read_mask(davis / "Annotations" / "480p" / name / "00000.png") > 0).astype(np.uint8)
    return [cv2.imread(str(p)) for p in paths], mask


def drive(url: str, stream: str, frames: list[np.ndarray], mask: np.ndarray, deadline: float,
          out: dict[str, object]) -> None:
    """One client: start the stream, then one frame at a time until the frames or the time run out."""
    grpc = tritonclient_grpc()
    client = grpc.InferenceServerClient(url)

    def send(frame: np.ndarray, first_mask: np.ndarray | None) -> float:
        inputs = [grpc.InferInput("frame", list(frame.shape), "UINT8")]
        inputs[0].set_data_from_numpy(frame)
        if first_mask is not None:
            inputs.append(grpc.InferInput("mask", list(first_mask.shape), "UINT8"))
            inputs[1].set_data_from_numpy(first_mask)
        t0 = time.perf_counter()
        client.infer("mast", inputs, parameters={"stream_id": stream}, client_timeout=600)
        return time.perf_counter() - t0

    try:
        send(frames[0], mask)
        out["t_first"] = time.perf_counter()
        latencies = []
        for frame in frames[1:]:
            if time.perf_counter() > deadline:
                break
            latencies.append(send(frame, None))
        out["latencies"], out["t_last"] = latencies, time.perf_counter()
    except Exception as exc:  # noqa: BLE001 - reported in the results
        out["error"] = repr(exc)
    finally:
        client.close()


def run_n(n: int, args: argparse.Namespace, clips: dict[str, tuple[list[np.ndarray], np.ndarray]],
          workdir: Path) -> dict[str, object]:
    """One load level: a fresh server, ``n`` concurrent streams, its figures."""
    server_args = ["--max-streams", "8", "--idle-timeout", "60", "--precision", args.precision, "--device", args.device]
    if args.size:
        server_args += ["--size", args.size]
    server = ServeProcess(workdir / f"serve-{n}.log", *server_args, threads=args.threads)
    peak = {"main": server.rss_mib(), "tree": server.tree_rss_mib()}
    idle = dict(peak)
    stop_sampling = threading.Event()

    def sample() -> None:
        while not stop_sampling.wait(0.5):
            peak["main"] = max(peak["main"], server.rss_mib())
            peak["tree"] = max(peak["tree"], server.tree_rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    results: list[dict[str, object]] = [{} for _ in range(n)]
    deadline = time.perf_counter() + args.time_limit
    threads = [threading.Thread(target=drive, args=(server.url, f"s{i}-{name}", *clips[name], deadline, results[i]))
               for i, name in enumerate(SEQUENCES[:n])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=args.time_limit + 600)
    stop_sampling.set()
    sampler.join()
    code = server.stop(signal.SIGINT)
    summary = re.search(r"mean batch ([0-9.]+)", server.output())
    errors = [r["error"] for r in results if "error" in r]
    if errors or code != 130:
        raise SystemExit(f"N={n}: errors {errors}, server exit {code}: {server.output()[-2000:]}")
    frames = sum(len(r["latencies"]) for r in results)
    wall = max(r["t_last"] for r in results) - min(r["t_first"] for r in results)
    p50 = [float(np.percentile(r["latencies"], 50)) for r in results]
    p95 = [float(np.percentile(r["latencies"], 95)) for r in results]
    return {"streams": n, "frames": frames, "seconds": wall, "fps": frames / wall,
            "p50_ms_mean": 1000 * float(np.mean(p50)), "p95_ms_max": 1000 * max(p95),
            "p50_ms": [1000 * v for v in p50], "p95_ms": [1000 * v for v in p95],
            "mean_batch": float(summary.group(1)) if summary else None,
            "rss_idle_mib": idle, "rss_peak_mib": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--davis", type=Path, default=Path("../shared/data/davis2016-val-dev"))
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--frames", type=int, default=12, help="frames tracked per stream after its first")
    parser.add_argument("--time-limit", type=float, default=180.0, help="seconds per load level")
    parser.add_argument("--size", default="240x427", help="the server's working size ('' = frame size)")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="the server's --device")
    parser.add_argument("--threads", type=int, default=1, help="the server's OMP_NUM_THREADS")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if max(args.streams) > len(SEQUENCES):
        parser.error(f"at most {len(SEQUENCES)} streams (one per dev sequence)")
    clips = {name: load(args.davis, name, args.frames + 1) for name in SEQUENCES[:max(args.streams)]}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        for n in args.streams:
            rows.append(run_n(n, args, clips, Path(tmp)))
            r = rows[-1]
            print(f"N={n}: {r['fps']:.2f} frames/s, p50 {r['p50_ms_mean']:.0f} ms, p95 {r['p95_ms_max']:.0f} ms, "
                  f"mean batch {r['mean_batch']}, RSS peak {r['rss_peak_mib']['main']:.0f} / "
                  f"{r['rss_peak_mib']['tree']:.0f} MiB", flush=True)
    info = {"cpu": cpu_name(), "isa": cpu_isa(), "device": args.device, "size": args.size, "precision": args.precision,
            "threads": args.threads, "frames_per_stream": args.frames,
            "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(info))
    print("| streams | frames | aggregate frames/s | p50 latency (mean over streams) | p95 latency (worst stream) "
          "| mean batch | server RSS peak (process / with Triton) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['streams']} | {r['frames']} | {r['fps']:.2f} | {r['p50_ms_mean']:.0f} ms "
              f"| {r['p95_ms_max']:.0f} ms "
              f"| {r['mean_batch']} | {r['rss_peak_mib']['main']:.0f} / {r['rss_peak_mib']['tree']:.0f} MiB |")
    if args.json:
        args.json.write_text(json.dumps({"info": info, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
