"""benchmarks/gpu_train.sh, the prepared GPU training call, smoke-run on CPU: a first call from the
colour prior, then a second that continues from the first's encoder_fp16.pt."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import torch

from mast.core.checkpoint import load_encoder
from mast.training.monitor import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def _call(out: Path, data: Path, resume: Path) -> str:
    env = {**os.environ, "STEPS": "2", "SIZE": "32", "BATCH": "2", "DEVICE": "cpu", "OUT": str(out),
           "DATA": str(data), "RESUME": str(resume), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "benchmarks/gpu_train.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_gpu_train_script_trains_then_continues_from_its_output(texture_video, tmp_path):
    resume = tmp_path / "resume" / "encoder_fp16.pt"
    first = _call(tmp_path / "first", texture_video, resume)
    assert "training from colour-prior" in first
    weights = tmp_path / "first" / "encoder_fp16.pt"
    assert [r["step"] for r in read_metrics(tmp_path / "first" / "metrics.jsonl") if "loss" in r] == [1, 2]
    resume.parent.mkdir()
    resume.write_bytes(weights.read_bytes())
    second = _call(tmp_path / "second", texture_video, resume)
    assert f"training from {resume}" in second
    before, after = load_encoder(weights).state_dict(), load_encoder(tmp_path / "second" / "encoder_fp16.pt").state_dict()
    assert not torch.equal(before["post_convolution.weight"], after["post_convolution.weight"])
