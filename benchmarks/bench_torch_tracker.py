"""Per-frame time of the torch tracker on CPU, fp32 and bf16, on the parity clips (same weights as
the published code's timing in ../shared/parity/reference/timing.json).

    python benchmarks/bench_torch_tracker.py --weights /tmp/parity_weights.pt --size 240x427 --frames 30

Prints seconds per propagated frame (median over the clip's frames, and mean), split into
encoder and attention, and with --bf16 the bf16 figure (weights and activations in bf16) and its mask agreement (IoU of
the bf16 masks with the fp32 masks). The weights come from ../shared/parity/make_parity_weights.py.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from mast.core.checkpoint import load_encoder
from mast.core.masks import read_mask
from mast.runtime.bench import cpu_isa, cpu_name
from mast.runtime.torch_backend import TorchBackend
from mast.runtime.tracker import Tracker

SHARED = Path(__file__).resolve().parents[2] / "shared"


class TimedBackend(TorchBackend):
    """TorchBackend recording the seconds spent in encode and read."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.times = {"encode": [], "read": []}

    def encode(self, bgr):
        start = time.perf_counter()
        key = super().encode(bgr)
        self.times["encode"].append(time.perf_counter() - start)
        return key

    def read(self, key, slots, distances):
        start = time.perf_counter()
        probs = super().read(key, slots, distances)
        self.times["read"].append(time.perf_counter() - start)
        return probs


def run(weights: Path, seq: str, size: tuple[int, int], frames: int, precision: str):
    clip = SHARED / "data" / "davis2016-val-dev"
    paths = sorted((clip / "JPEGImages/480p" / seq).glob("*.jpg"))[:frames]
    h, w = size
    images = [cv2.resize(cv2.imread(str(p)), (w, h), interpolation=cv2.INTER_AREA) for p in paths]
    mask = cv2.resize(read_mask(clip / "Annotations/480p" / seq / "00000.png"), (w, h), interpolation=cv2.INTER_NEAREST)
    backend = TimedBackend(load_encoder(weights), precision=precision)
    tracker = Tracker(backend)
    tracker.start(images[0], mask)
    masks, per_frame = [], []
    for image in images[1:]:
        start = time.perf_counter()
        masks.append(tracker.step(image))
        per_frame.append(time.perf_counter() - start)
    return masks, per_frame, backend.times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, required=True)
    ap.add_argument("--size", default="240x427")
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--sequences", nargs="+", default=["blackswan", "dog"])
    ap.add_argument("--bf16", action="store_true", help="also run the bf16 encoder and compare masks")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(2)
    size = tuple(int(v) for v in a.size.lower().split("x"))
    report = {"cpu": f"{cpu_name()} ({cpu_isa()}), {torch.get_num_threads()} threads", "size": a.size, "frames": a.frames, "results": {}}
    for precision in ["fp32", "bf16"] if a.bf16 else ["fp32"]:
        spf, enc, att, masks_all = [], [], [], []
        for seq in a.sequences:
            masks, per_frame, times = run(a.weights, seq, size, a.frames, precision)
            spf += per_frame
            enc += times["encode"][1:]
            att += times["read"]
            masks_all.append(masks)
        report["results"][precision] = {
            "s_per_frame_median": statistics.median(spf), "s_per_frame_mean": statistics.fmean(spf),
            "encoder_median": statistics.median(enc), "attention_median": statistics.median(att)}
        report.setdefault("_masks", {})[precision] = masks_all
    if a.bf16:
        ious = [((x > 0) & (y > 0)).sum() / max(1, ((x > 0) | (y > 0)).sum())
                for xs, ys in zip(*report["_masks"].values()) for x, y in zip(xs, ys)]
        report["results"]["bf16"]["mask_iou_vs_fp32_mean"] = float(np.mean(ious))
        report["results"]["bf16"]["mask_iou_vs_fp32_min"] = float(np.min(ious))
    report.pop("_masks")
    text = json.dumps(report, indent=1)
    print(text)
    if a.json:
        a.json.write_text(text)


if __name__ == "__main__":
    main()
