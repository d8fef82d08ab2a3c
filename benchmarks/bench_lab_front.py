"""The compact encoder's Lab front (``mast.core.mobilenet.LabToRgb``) in PyTorch, alone and inside the
shipped encoder, against another revision's.

    git show 684ccc5:mast/core/mobilenet.py > /tmp/old_mobilenet.py
    python benchmarks/bench_lab_front.py --against /tmp/old_mobilenet.py [--sizes 240x427 480x854] [--rounds 5]

Each round times 10 calls of each version in turn (the front on the Lab tensor the torch backend
gives its encoder, channels_last; then the whole ``encode``), 2 torch threads, on DAVIS camel frame 0
resized; prints the median and range of
the rounds' medians (ms) and whether the two versions give the same bits.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from mast.core.cli import parse_size
from mast.core.errors import InputError
from mast.core.model import key_encoder
from mast.runtime.torch_backend import TorchBackend

FRAME = Path(__file__).resolve().parents[1].parent / "shared/data/davis2016-val-dev/JPEGImages/480p/camel/00000.jpg"


def other_front(path: Path) -> torch.nn.Module:
    """``LabToRgb()`` of the mobilenet module at ``path`` (another revision's file)."""
    spec = importlib.util.spec_from_file_location("other_mobilenet", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module     # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.LabToRgb()


def median_ms(call, n: int = 10) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1e3 * float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--against", type=Path, required=True, help="another revision's mast/core/mobilenet.py")
    ap.add_argument("--sizes", nargs="+", default=["240x427", "480x854"])
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    if not a.against.is_file() or not FRAME.is_file():
        ap.error(f"need --against FILE (got {a.against}) and the DAVIS camel frames at {FRAME.parent}")
    try:
        sizes = [parse_size(size) for size in a.sizes]
    except InputError as err:
        ap.error(str(err))
    torch.set_num_threads(2)
    new, old = TorchBackend(key_encoder("model")), TorchBackend(key_encoder("model"))
    old.encoder.to_rgb = other_front(a.against)
    for h, w in sizes:
        bgr = cv2.resize(cv2.imread(str(FRAME)), (w, h), interpolation=cv2.INTER_AREA)
        lab = new._lab(bgr[None])     # what encode gives the encoder: [1, 3, H, W] channels_last
        same = torch.equal(new.encoder.to_rgb(lab), old.encoder.to_rgb(lab)) and torch.equal(new.encode(bgr), old.encode(bgr))
        rows: dict[str, list[float]] = {}
        with torch.no_grad():
            for _ in range(a.rounds):
                for name, backend in (("other", old), ("this", new)):
                    rows.setdefault(f"{name} front", []).append(median_ms(lambda: backend.encoder.to_rgb(lab)))
                    rows.setdefault(f"{name} encode", []).append(median_ms(lambda: backend.encode(bgr)))
        cells = "  ".join(f"{k} {np.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" for k, v in sorted(rows.items()))
        print(f"{h}x{w}: {cells}  same bits: {same}")


if __name__ == "__main__":
    main()
