"""``mast-export`` of a compact (MobileNetV2) checkpoint: the architecture comes from the file, the
exported graphs carry its key channels, and the parity check against torch passes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from typer.testing import CliRunner

from mast.core.checkpoint import save_checkpoint
from mast.core.lab import bgr_to_lab
from mast.core.metadata import ENCODER_FILE, METADATA_FILE, read_metadata
from mast.core.mobilenet import CompactConfig, CompactEncoder
from mast.export import cli
from mast.runtime.ort_backend import OrtBackend


def test_compact_checkpoint_exports_with_its_key_channels(tmp_path: Path):
    torch.manual_seed(0)
    model = CompactEncoder(CompactConfig(taps=(4, 7), colour_weight=2.0)).eval()
    save_checkpoint(tmp_path / "c.pt", model)
    out = tmp_path / "model"
    res = CliRunner().invoke(cli.app, ["--checkpoint", str(tmp_path / "c.pt"), "--out", str(out),
                                       "--height", "64", "--width", "111", "--parity-frames", "3"])
    assert res.exit_code == 0, res.output
    meta = read_metadata(out)
    assert meta.key_dim == 62 and json.loads((out / METADATA_FILE).read_text())["parity"]["mask_iou_mean"] >= 0.99
    frame = np.random.default_rng(0).integers(0, 256, (64, 111, 3), dtype=np.uint8)   # 111: not a multiple of 4 or 8
    got = ort.InferenceSession(str(out / ENCODER_FILE), providers=["CPUExecutionProvider"]).run(None, {"frame": frame[None]})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(bgr_to_lab(frame))[None]).numpy()
    # keys of norm sqrt(1/T) ~ 4.5 (+ colour): float32 error through ~10 layers, and OpenCV's Lab
    # table in the graph against the host's OpenCV call (equal to float rounding)
    assert got.shape == want.shape == (1, 62, 16, 28)
    assert np.abs(got - want).max() <= 1e-3 * np.abs(want).max()
    # the runtime takes the key channels from the model: its default configuration accepts it
    backend = OrtBackend(out)
    assert backend.encode(frame).shape == (62, 16, 28)
