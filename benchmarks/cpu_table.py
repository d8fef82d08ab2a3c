"""The whole-frame CPU table of BENCHMARKS.md: ``mast-bench`` for each backend, CPU build and size,
every configuration run ``--runs`` times in turn (A B C ... A B C ...) so that a noisy neighbour
hits them alike; prints one Markdown row per configuration: the median run's stage medians, the
median and range of the runs' fps, and the command.

    python benchmarks/cpu_table.py [--runs 3] [--sizes 240x427 480x854] [--builds AVX-512 AVX2] [--exports DIR] [--bf16]
                                   [--radius 12 8 6]

The onnxruntime rows need exported models: ``DIR/m<H>`` (``DIR/m<H>-r<R>`` for ``--radius R``) is
made with ``mast-export`` when missing. ``--radius``: the attention window radii to run (each row's
backend says "R <radius>"; default: the model's only).
"AVX2" rows restrict the CPU build: PyTorch's kernels (``ATEN_CPU_CAPABILITY=avx2``), oneDNN's
(``ONEDNN_MAX_CPU_ISA=AVX2``) and the fused read's (``MAST_ATTENTION_CFLAGS=-mno-avx512f``);
onnxruntime's MLAS cannot be restricted, so its AVX2 rows restrict the fused read only.
``--bf16`` adds ``--precision bf16`` rows per size to the AVX-512 build: torch (bf16 encoder; on
AVX512-BF16 CPUs its keys read with bf16 dot products) and onnxruntime (the memory read in bf16; it
needs AVX512-BF16); the memory read each row ran is in its JSON.
Before each round the 2-thread AVX2 FMA peak is measured (``read_roofline.py``'s register-only loop,
0.3 s): on a shared host the FP units' share drifts, and the table prints those peaks with it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from mast.core.config import MAX_RADIUS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from read_roofline import peak_gflops, peak_library  # noqa: E402  (sibling script: the FMA loop)

AVX2 = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MAST_ATTENTION_CFLAGS": "-mno-avx512f"}
STAGES = ("encoder", "attention")


def export_dir(exports: Path, size: str, radius: int | None) -> Path:
    """The export folder of ``size`` (at ``radius``; None: the model's)."""
    return exports / (f"m{size.split('x')[0]}" + (f"-r{radius}" if radius is not None else ""))


def configurations(sizes: list[str], builds: list[str], exports: Path, bf16: bool = False,
                   radii: list[int | None] | None = None) -> list[tuple[str, str, str, list[str], dict[str, str]]]:
    """(backend, build, size, mast-bench arguments, environment) of each row; a row at a radius
    other than the model's says "R <radius>" after its size."""
    rows = []
    for radius, size in ((r, s) for r in radii or [None] for s in sizes):
        frames = ["--frames", "40", "--warmup", "20"] if size == "240x427" else ["--frames", "20", "--warmup", "20"]
        model, label = export_dir(exports, size, radius), size + (f", R {radius}" if radius is not None else "")
        window = ["--radius", str(radius)] if radius is not None else []   # an export has its radius already
        for build, env in (("AVX-512", {}), ("AVX2", AVX2)):
            if build not in builds:
                continue
            torch_args = ["--backend", "torch", "--threads", "2", "--size", size, *window, *frames]
            rows.append(("torch", build, label, torch_args, env))
            if bf16 and not env:
                rows.append(("torch bf16", build, label, [*torch_args, "--precision", "bf16"], env))
            ort_env = {"MAST_ATTENTION_CFLAGS": "-mno-avx512f"} if env else {}
            ort_args = ["--backend", "onnxruntime", "--model", str(model), "--size", size, *frames]
            rows.append(("onnxruntime", build if not env else "AVX2 read", label, ort_args, ort_env))
            if bf16 and not env:
                rows.append(("onnxruntime bf16", build, label, [*ort_args, "--precision", "bf16"], ort_env))
    return rows


class RunFailed(Exception):
    """A ``mast-export`` / ``mast-bench`` run failed: its command, exit code and last line of stderr."""


def run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    done = subprocess.run(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RunFailed(f"`{' '.join(cmd)}` failed (exit {done.returncode}): {last}")


def ensure_export(model: Path, size: str, radius: int | None = None) -> None:
    if not (model / "metadata.json").is_file():
        h, w = size.split("x")
        run(["mast-export", "--out", str(model), "--height", h, "--width", w]
            + (["--radius", str(radius)] if radius is not None else []))


def bench_once(args: list[str], env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        run(["mast-bench", *args, "--json", str(out)], env)
        return json.loads(out.read_text())


def row(backend: str, build: str, size: str, args: list[str], env: dict[str, str], runs: list[dict]) -> str:
    fps = sorted(r["fps_median"] for r in runs)
    mid = sorted(runs, key=lambda r: r["fps_median"])[len(runs) // 2]
    stage = {s: mid["stages"][s]["median_ms"] for s in STAGES}
    if backend.endswith("bf16"):   # which read its keys got (bf16 pairs only on AVX512-BF16 CPUs)
        backend += f" (read: {mid['device'].get('read', '?')})"
    prefix = " ".join(f"{k}={v}" for k, v in env.items())
    command = f"{prefix + ' ' if prefix else ''}mast-bench {' '.join(args)}"
    return (f"| {build} | {backend} | {size} | {stage['encoder']:.1f} | {stage['attention']:.1f} | "
            f"{mid['host']['median_ms']:.1f} | {mid['total']['median_ms']:.1f} | "
            f"**{statistics.median(fps):.1f}** ({fps[0]:.1f}-{fps[-1]:.1f}) | `{command}` |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sizes", nargs="+", default=["240x427", "480x854"])
    parser.add_argument("--builds", nargs="+", choices=["AVX-512", "AVX2"], default=["AVX-512", "AVX2"])
    parser.add_argument("--exports", type=Path, default=Path(tempfile.gettempdir()) / "mast-cpu-table")
    parser.add_argument("--bf16", action="store_true", help="add --precision bf16 rows (AVX-512 build)")
    parser.add_argument("--radius", nargs="+", type=int, help="attention window radii (default: the model's)")
    opts = parser.parse_args()
    if any(not 1 <= r <= MAX_RADIUS for r in opts.radius or []):
        parser.error(f"--radius {' '.join(map(str, opts.radius))}: expected radii from 1 to {MAX_RADIUS} (mast-bench --radius)")
    configs = configurations(opts.sizes, opts.builds, opts.exports, opts.bf16, opts.radius)
    results: list[list[dict]] = [[] for _ in configs]
    failure, peaks = None, []
    try:
        for size in opts.sizes:
            for radius in opts.radius or [None]:
                ensure_export(export_dir(opts.exports, size, radius), size, radius)
        with tempfile.TemporaryDirectory() as tmp:
            fma = peak_library("-mno-avx512f", 8, Path(tmp))
        for k in range(opts.runs):
            peaks.append(peak_gflops(fma, 8, 2, 0.3))
            for i, (backend, build, size, args, env) in enumerate(configs):
                print(f"run {k + 1}/{opts.runs}: {backend} {build} {size}", file=sys.stderr, flush=True)
                results[i].append(bench_once(args, env))
    except RunFailed as exc:
        failure = exc   # the rows measured so far are still printed
    if any(results):
        print(f"{platform.processor() or platform.machine()}; {next(r for r in results if r)[0]['device']}")
        print(f"2-thread AVX2 FMA peak before each round: {', '.join(f'{p:.0f}' for p in peaks)} GFLOP/s")
        print("| CPU build | backend | size | encoder ms | memory read ms | host ms | total ms | fps: median (range) | command |")
        print("|---|---|---|---|---|---|---|---|---|")
        for (backend, build, size, args, env), runs in zip(configs, results):
            if runs:
                print(row(backend, build, size, args, env, runs))
    if failure is not None:
        print(f"cpu_table: {failure}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
