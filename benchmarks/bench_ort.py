"""onnxruntime (CPU) vs the torch backend: per-frame encoder and memory-read latency, and peak memory.

    python benchmarks/bench_ort.py [--sizes 240x427,480x854] [--repeats 7] [--threads N] [--model-dir DIR]
    python benchmarks/bench_ort.py --compare DIR [DIR ...] [--repeats 7] [--threads N] [--frames 22]

Same weights for both backends (the random-init encoder with its keys scaled x20 to trained-like
magnitudes, so that attention is peaked; random keys of scale 0.1 would make every read a blur),
exported once per size with ``mast-export``'s code. Each backend runs in its own fresh process:

- encoder: ``encode`` of the bundled clip's frames resized to the size (median over repeats);
- memory read: ``read`` from a bank filled with real keys of the clip, for two schedules of the
  default memory: frame t=10 (reads at d = 10, 5, 1, 3: restricted windows only) and t=60 (d = 60,
  55, 1, 3, 5: two ROI reads at dilation 4, three restricted windows), median over repeats;
- peak memory: the process's peak RSS (VmHWM) after loading and running everything above.

Prints one markdown table; other processes share the CPU, so figures are medians of several runs.

``--compare``: the memory reads of several export folders (``mast-export`` outputs of one size and
configuration, e.g. the graph of an older commit beside this one) and the torch read, in one
process, run in turn (A, B, ..., A, B, ...) so that a shared machine's load hits them alike. The
bank is a steady-state read of the tracker (the first folder's onnxruntime backend on the bundled
clip, played back and forth for ``--frames`` frames: two ROI reads and three windows). Prints the
min and median of each and its largest difference from the read in float64 (the graph's eager
twin, :class:`mast.export.memory_graph.MemoryRead`, exact to rounding).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from mast.runtime.bench import cpu_isa, cpu_name

REPO = Path(__file__).resolve().parents[1]
CLIP = REPO / "mast" / "runtime" / "demo" / "clip" / "JPEGImages" / "240p" / "camel"
MASK = REPO / "mast" / "runtime" / "demo" / "clip" / "Annotations" / "240p" / "camel" / "00000.png"
SCHEDULES = {"t=10 (4 windows)": [10, 5, 1, 3], "t=60 (2 ROI + 3 windows)": [60, 55, 1, 3, 5]}
KEY_SCALE = 20.0


def bench_encoder():
    """The encoder both backends run: random init, keys scaled to trained-like magnitudes."""
    import torch  # noqa: PLC0415 - only the torch worker and the export need it

    from mast.core.model import key_encoder  # noqa: PLC0415
    enc = key_encoder("random")
    with torch.no_grad():
        enc.post_convolution.weight.mul_(KEY_SCALE)
        enc.post_convolution.bias.mul_(KEY_SCALE)
    return enc


def peak_rss_mb() -> float:
    text = Path("/proc/self/status").read_text()
    return int(text.split("VmHWM:")[1].split()[0]) / 1024


def frames_at(size: tuple[int, int], n: int = 6) -> list[np.ndarray]:
    paths = sorted(CLIP.glob("*.jpg"))[:n]
    return [cv2.resize(cv2.imread(str(p)), (size[1], size[0]), interpolation=cv2.INTER_AREA) for p in paths]


def make_backend(kind: str, model_dir: Path, threads: int | None):
    """The backend under test; ``threads``: intra-op threads of either (None: its default, 2 here)."""
    if kind == "onnxruntime":
        from mast.runtime.ort_backend import OrtBackend  # noqa: PLC0415
        return OrtBackend(model_dir, "cpu", threads=threads)
    import torch  # noqa: PLC0415

    from mast.runtime.torch_backend import TorchBackend  # noqa: PLC0415
    if threads:
        torch.set_num_threads(threads)
    return TorchBackend(bench_encoder())


def worker(kind: str, model_dir: Path, size: tuple[int, int], repeats: int, threads: int | None) -> dict:
    """Timings (seconds, medians) and peak RSS of one backend in this process."""
    backend = make_backend(kind, model_dir, threads)
    frames = frames_at(size)
    keys = [backend.encode(f) for f in frames]           # warm-up, and the bank's keys
    enc = []
    for i in range(repeats):
        start = time.perf_counter()
        backend.encode(frames[i % len(frames)])
        enc.append(time.perf_counter() - start)
    mask = cv2.resize(cv2.imread(str(MASK), cv2.IMREAD_GRAYSCALE), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
    labels = (mask[::4, ::4] > 0).astype(np.int64)
    backend.allocate(7, keys[0], 2)
    for slot in range(7):
        backend.write(slot, keys[(slot + 1) % len(keys)], labels)
    reads = {}
    for name, distances in SCHEDULES.items():
        slots = list(range(len(distances)))
        backend.read(keys[0], slots, distances)          # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            probs = backend.read(keys[0], slots, distances)
            backend.decode(probs, size)
            times.append(time.perf_counter() - start)
        reads[name] = statistics.median(times)
    return {"encode": statistics.median(enc), "reads": reads, "peak_mb": peak_rss_mb()}


def export(model_dir: Path, size: tuple[int, int]) -> None:
    from mast.export.onnx_export import ExportConfig, write_models  # noqa: PLC0415
    if not (model_dir / "metadata.json").is_file():
        write_models(model_dir, bench_encoder(), ExportConfig(*size), "random-x20", "random-seed-0-x20")


def run_worker(kind: str, model_dir: Path, size: tuple[int, int], repeats: int, threads: int | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--model-dir", str(model_dir),
           "--sizes", f"{size[0]}x{size[1]}", "--repeats", str(repeats)] + (["--threads", str(threads)] if threads else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def table(results: dict) -> str:
    lines = ["| size | backend | encoder (ms) | " + " | ".join(f"read+decode {k} (ms)" for k in SCHEDULES) + " | peak RSS (MB) |",
             "|---|---|---:|" + "---:|" * len(SCHEDULES) + "---:|"]
    for (size, kind), r in results.items():
        reads = " | ".join(f"{1000 * r['reads'][k]:.0f}" for k in SCHEDULES)
        lines.append(f"| {size} | {kind} | {1000 * r['encode']:.0f} | {reads} | {r['peak_mb']:.0f} |")
    return "\n".join(lines)


def steady_bank(model_dir: Path, frames: int, threads: int | None) -> dict[str, np.ndarray]:
    """The inputs of the last memory read of a tracker run on the bundled clip (``--compare``)."""
    from mast.runtime.bench import clip_frames  # noqa: PLC0415
    from mast.runtime.demo_clip import DEMO_FRAMES, DEMO_MASK  # noqa: PLC0415
    from mast.runtime.ort_backend import OrtBackend  # noqa: PLC0415
    from mast.runtime.stream import conform_mask, load_mask  # noqa: PLC0415
    from mast.runtime.tracker import Tracker  # noqa: PLC0415

    backend = OrtBackend(model_dir, "cpu", threads=threads)
    seen: list[dict[str, np.ndarray]] = []
    read = backend.read

    def record(key, slots, distances):
        if slots:
            dist = np.zeros(len(backend.keys), np.int64)
            dist[list(slots)] = distances
            seen.append({"query": key[None].copy(), "keys": backend.keys.copy(), "labels": backend.labels.copy(),
                         "distances": dist})
        return read(key, slots, distances)

    backend.read = record
    tracker, clip = Tracker(backend), clip_frames(DEMO_FRAMES)
    first = next(clip)
    tracker.start(first, conform_mask(load_mask(DEMO_MASK), first.shape[:2])[0])
    for _ in range(frames):
        tracker.step(next(clip))
    return seen[-1]


def compare(model_dirs: list[Path], repeats: int, threads: int | None, frames: int) -> None:
    """``--compare``: the reads of ``model_dirs`` and the torch read, alternated in one process."""
    import onnxruntime as ort  # noqa: PLC0415
    import torch  # noqa: PLC0415

    from mast.core.attention import roi_memory_attention  # noqa: PLC0415
    from mast.core.metadata import read_metadata  # noqa: PLC0415
    from mast.export.memory_graph import MemoryRead, ReadSpec  # noqa: PLC0415
    from mast.runtime.ort_backend import open_session  # noqa: PLC0415

    if threads:
        torch.set_num_threads(threads)
    bank = steady_bank(model_dirs[0], frames, threads)
    n_labels = int(bank["labels"].max()) + 1
    used = [int(i) for i in np.nonzero(bank["distances"] > 0)[0]]
    meta = read_metadata(model_dirs[0])
    cfg = meta.attention_config

    def torch_read() -> np.ndarray:
        q = torch.from_numpy(bank["query"][0])
        values = [torch.from_numpy(bank["labels"][i])[None] == torch.arange(n_labels)[:, None, None] for i in used]
        return roi_memory_attention(q, [torch.from_numpy(bank["keys"][i]) for i in used], [v.float() for v in values],
                                    [int(bank["distances"][i]) for i in used], cfg).numpy()

    runs = {"torch": torch_read}
    for d in model_dirs:
        session = open_session(d / "memory_read.onnx", ["CPUExecutionProvider"], threads)
        runs[str(d)] = (lambda s: lambda: s.run(None, bank)[0][:n_labels])(session)
    _, c, h, w = bank["query"].shape
    spec = ReadSpec(h, w, c, len(bank["keys"]), meta.slots["reads"], meta.slots["max_labels"], cfg)
    with torch.no_grad():
        want = MemoryRead(spec)(*(torch.from_numpy(bank[k]).double() for k in ("query", "keys")),
                                torch.from_numpy(bank["labels"]), torch.from_numpy(bank["distances"]))
    want = want[:n_labels].numpy()
    diffs = {name: float(np.abs(run() - want).max()) for name, run in runs.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    print(f"CPU: {cpu_name()} ({cpu_isa()}, {os.cpu_count()} CPUs); onnxruntime {ort.__version__}; threads "
          f"{threads or 'default'}; distances {bank['distances'].tolist()}; {repeats} runs each, alternated")
    print("| read | min (ms) | median (ms) | max abs difference from float64 |\n|---|---:|---:|---:|")
    for name, t in times.items():
        print(f"| {name} | {1000 * min(t):.0f} | {1000 * statistics.median(t):.0f} | {diffs[name]:.1e} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="240x427,480x854")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/mast-bench-ort"))
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads of both backends")
    parser.add_argument("--compare", type=Path, nargs="+", help="export folders whose memory reads to time")
    parser.add_argument("--frames", type=int, default=22, help="--compare: frames tracked before the read")
    parser.add_argument("--worker", choices=["torch", "onnxruntime"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compare:
        compare(args.compare, args.repeats, args.threads, args.frames)
        return
    sizes = [tuple(int(x) for x in s.split("x")) for s in args.sizes.split(",")]
    if args.worker:
        print(json.dumps(worker(args.worker, args.model_dir, sizes[0], args.repeats, args.threads)))
        return
    results = {}
    for size in sizes:
        folder = args.model_dir / f"{size[0]}x{size[1]}"
        export(folder, size)
        for kind in ("torch", "onnxruntime"):
            results[(f"{size[0]}x{size[1]}", kind)] = run_worker(kind, folder, size, args.repeats, args.threads)
    import onnxruntime  # noqa: PLC0415
    threads = args.threads or "default (2)"
    print(f"CPU: {cpu_name()} ({cpu_isa()}, {os.cpu_count()} CPUs); onnxruntime {onnxruntime.__version__}; threads {threads}; medians of {args.repeats} runs")
    print(table(results))


if __name__ == "__main__":
    main()
