"""Where ``encoder.onnx``'s time goes in onnxruntime: kernel time per operator type and per part of
the graph (the Lab front ``/lab/``, the MobileNetV2 blocks ``/encoder/features.N/``, the rest: the
CIE inverse to sRGB, normalisation, tap upsampling, L2 norm, colour channels).

    python benchmarks/profile_ort_encoder.py DIR [DIR ...] [--runs 25] [--threads 2]

Each DIR is a ``mast-export`` folder (fp32, fp16 or int8); one random frame at its input size is
encoded ``--runs`` times with onnxruntime's profiler on (the session options of the onnxruntime
backend: all graph optimisations), and the kernel times of the nodes are summed per run. Kernel
time leaves out onnxruntime's scheduling between nodes, so the sum is a little under the wall time.
"""
from __future__ import annotations

import argparse
import collections
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from mast.core.metadata import ENCODER_FILE, read_metadata


def part(node_name: str) -> str:
    """The part of the encoder graph a node belongs to (its name is torch's ONNX scope)."""
    if node_name.startswith("/lab/"):
        return "lab front"
    if "/features." in node_name:
        return "MobileNetV2 blocks"
    return "rest"


def profile(model_dir: Path, runs: int, threads: int) -> tuple[dict[str, float], dict[str, float]]:
    """Kernel ms per run, by operator type and by :func:`part`."""
    meta = read_metadata(model_dir)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.enable_profiling = True
    options.log_severity_level = 3
    options.profile_file_prefix = str(Path("/tmp") / f"mast_encoder_profile_{model_dir.name}")
    session = ort.InferenceSession(str(model_dir / ENCODER_FILE), options, providers=["CPUExecutionProvider"])
    h, w = meta.input_size
    frame = np.random.default_rng(0).integers(0, 256, (1, h, w, 3), dtype=np.uint8)
    for _ in range(runs):
        session.run(None, {"frame": frame})
    trace = Path(session.end_profiling())
    by_op: dict[str, float] = collections.defaultdict(float)
    by_part: dict[str, float] = collections.defaultdict(float)
    for event in json.loads(trace.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            ms = event["dur"] / 1e3 / runs
            by_op[event["args"]["op_name"]] += ms
            by_part[part(event["name"])] += ms
    trace.unlink()
    return dict(by_op), dict(by_part)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=25)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    for model_dir in args.dirs:
        by_op, by_part = profile(model_dir, args.runs, args.threads)
        top = ", ".join(f"{op} {ms:.1f}" for op, ms in sorted(by_op.items(), key=lambda x: -x[1])[:8])
        parts = ", ".join(f"{name} {ms:.1f}" for name, ms in sorted(by_part.items(), key=lambda x: -x[1]))
        print(f"{model_dir} ({read_metadata(model_dir).precision}): {sum(by_op.values()):.1f} ms kernel time per run")
        print(f"  by part: {parts}")
        print(f"  by operator: {top}")


if __name__ == "__main__":
    main()
