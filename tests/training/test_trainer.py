"""The trainer: schedule, rank slices, atomic checkpoints, validation, resume and interruption."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from mast.core.checkpoint import load_encoder
from mast.core.encoder import Encoder
from mast.training.config import TrainConfig
from mast.training.distributed import DistInfo, StepBatches
from mast.training.monitor import read_metrics
from mast.training.state import StepSchedule, load_state, save_state
from mast.training.trainer import train

TINY = ["--size", "32", "--batch-size", "2", "--lr", "1e-4"]


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "mast.training.cli", *[str(a) for a in args]]


def env() -> dict[str, str]:
    """One OpenMP thread: bitwise-reproducible and fast on the shared 2-core machine."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), env=env(), capture_output=True, text=True, timeout=timeout)


def wait_for_step(proc: subprocess.Popen, metrics: Path, step: int, timeout: float = 120) -> None:
    """Poll ``metrics`` until it logs ``step`` (fails if the process ends or time runs out first)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metrics.is_file() and any(r.get("step", 0) >= step for r in read_metrics(metrics)):
            return
        if proc.poll() is not None:
            pytest.fail(f"training ended (status {proc.returncode}) before step {step}: {proc.stderr.read()}")
        time.sleep(0.01)
    proc.kill()
    pytest.fail(f"step {step} not reached in {timeout} s")


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_encoder(path).state_dict()


# --------------------------------------------------------------------------------------------


def test_lr_halves_after_40_60_80_percent():
    config = TrainConfig(data=("x",), out="o", steps=10)
    assert config.milestones() == [4, 6, 8]
    schedule = StepSchedule(1e-3, config.milestones())
    assert [schedule.lr(s) for s in range(10)] == [1e-3] * 4 + [5e-4] * 2 + [2.5e-4] * 2 + [1.25e-4] * 2
    assert TrainConfig(data=("x",), out="o", steps=5, stage="memory").learning_rate == 2e-5


def test_a_run_stored_before_label_offset_existed_resumes_with_the_published_sampling():
    stored = TrainConfig(data=("x",), out="o", steps=5).to_dict()
    assert stored["label_offset"] == 1
    del stored["label_offset"]
    assert TrainConfig.from_dict(stored).label_offset == 0


def test_ranks_take_disjoint_slices_of_each_step():
    ranks = [StepBatches(3, 6, 4, DistInfo(r, 2)) for r in range(2)]
    per_rank = [list(b) for b in ranks]
    assert per_rank[0][0] == [24, 25, 26, 27] and per_rank[1][0] == [28, 29, 30, 31]
    merged = sorted(i for rank in per_rank for batch in rank for i in batch)
    assert merged == list(range(24, 48))  # steps 3..5 x global batch 8, each sample once
    assert list(StepBatches(3, 6, 8)) == [list(range(24 + 8 * s, 32 + 8 * s)) for s in range(3)]


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A writer dying mid-write leaves the previous last.pt intact (temp file + rename)."""
    model, path = Encoder(), tmp_path / "last.pt"
    opt = torch.optim.Adam(model.parameters())
    save_state(path, model, opt, StepSchedule(1e-3, [4]), None, 3, {"steps": 5})
    before = path.read_bytes()

    def dying_save(obj, f, *a, **k):
        Path(f).write_bytes(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError):
        save_state(path, model, opt, StepSchedule(1e-3, [4]), None, 4, {"steps": 5})
    assert path.read_bytes() == before and load_state(path)["step"] == 3


def test_sigkill_then_resume_ends_with_the_weights_of_an_uninterrupted_run(texture_video, tmp_path):
    common = ["--data", texture_video, "--steps", "24", "--save-every", "4", *TINY]
    full = run_cli(*common, "--out", tmp_path / "full")
    assert full.returncode == 0, full.stderr

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli(*common, "--out", killed, "--workers", "1"), env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, killed / "metrics.jsonl", 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    step = load_state(killed / "last.pt")["step"]  # complete, loadable: never a partial file
    assert step in (8, 12, 16, 20)

    resumed = run_cli(*common, "--out", killed, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert not list(killed.glob(".*.tmp*"))
    a, b = weights(tmp_path / "full" / "encoder.pt"), weights(killed / "encoder.pt")
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise, same machine and thread count
    full_log = read_metrics(tmp_path / "full" / "metrics.jsonl")
    resumed_log = read_metrics(killed / "metrics.jsonl")
    assert [r["step"] for r in resumed_log] == list(range(1, 25))
    assert [r["loss"] for r in resumed_log] == [r["loss"] for r in full_log]
    # the uninterrupted run's outputs
    assert set(full_log[0]) >= {"step", "loss", "lr", "samples_per_s", "data_s", "step_s"}
    assert [r["lr"] for r in full_log[8:10]] == [1e-4, 5e-5]  # milestones 9, 14, 19 of 24 steps
    assert (tmp_path / "full" / "tb").is_dir()
    state = load_state(tmp_path / "full" / "last.pt")
    assert state["step"] == 24 and state["config"]["steps"] == 24 and "optimizer" in state


def test_ctrl_c_saves_then_exits_130(texture_video, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(cli("--data", texture_video, "--steps", "200", "--save-every", "100", *TINY,
                                "--out", out), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, out / "metrics.jsonl", 3)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    logged = read_metrics(out / "metrics.jsonl")[-1]["step"]
    assert load_state(out / "last.pt")["step"] == logged < 200
    assert "--resume" in stdout


def _fake_davis(root: Path, n: int = 6) -> Path:
    """A DAVIS root with one 64x64 sequence: a bright square moving right on a textured background."""
    rng = np.random.default_rng(0)
    background = rng.integers(0, 120, (64, 64, 3), dtype=np.uint8)
    for folder in ("JPEGImages/480p/square", "Annotations/480p/square"):
        (root / folder).mkdir(parents=True)
    for k in range(n):
        frame, mask = background.copy(), np.zeros((64, 64), np.uint8)
        frame[20:40, 10 + 2 * k:30 + 2 * k] = (40, 200, 240)
        mask[20:40, 10 + 2 * k:30 + 2 * k] = 255
        cv2.imwrite(str(root / f"JPEGImages/480p/square/{k:05d}.jpg"), frame)
        cv2.imwrite(str(root / f"Annotations/480p/square/{k:05d}.png"), mask)
    return root


def test_validation_logs_j_and_f(one_thread, texture_video, tmp_path):
    config = TrainConfig(data=(str(texture_video),), out=str(tmp_path / "run"), steps=2, size=32, batch_size=2,
                         save_every=2, val_davis=str(_fake_davis(tmp_path / "davis")), val_size=(64, 64))
    train(config, progress=False)
    val = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "val_jf" in r]
    assert [r["step"] for r in val] == [0, 2] and all(0.0 <= r["val_jf"] <= 1.0 for r in val)
    assert all(r["val_loss"] > 0 and r["val_zero"] > r["val_identity"] > 0 for r in val)
    assert all(r["val_spread"] >= 0 for r in val)
    assert not (tmp_path / "run" / "val").exists()  # the tracked masks are scratch


def test_frozen_batchnorm_keeps_the_prior_statistics_and_trains_the_rest(one_thread, texture_video, tmp_path):
    from mast.core.checkpoint import load_encoder
    from mast.training.prior import colour_prior_encoder

    config = TrainConfig(data=(str(texture_video),), out=str(tmp_path / "run"), steps=2, size=32, batch_size=2,
                         init="colour-prior", batchnorm="frozen", lr=1e-4)
    train(config, progress=False)
    prior, trained = colour_prior_encoder().state_dict(), load_encoder(tmp_path / "run" / "encoder.pt").state_dict()
    stats = [k for k in prior if "running_" in k or "num_batches" in k]
    assert stats and all(torch.equal(prior[k], trained[k]) for k in stats)
    assert not torch.equal(prior["post_convolution.weight"], trained["post_convolution.weight"])


def test_torchrun_two_processes(texture_video, tmp_path):
    """DDP on CPU (gloo): two processes, each its slice of every step; the main one logs and saves."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29517",
           "-m", "mast.training.cli", "--data", str(texture_video), "--out", str(out), "--steps", "2",
           "--size", "32", "--batch-size", "1"]
    result = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("done: 2 steps") == 1
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == [1, 2]
    assert load_state(out / "last.pt")["step"] == 2


@pytest.mark.parametrize("init", ["colour-prior", "texture-prior"])
def test_readout_only_training_leaves_the_backbone_as_initialised(one_thread, texture_video, tmp_path, init):
    from mast.core.checkpoint import load_encoder
    from mast.training.prior import PRIORS, colour_prior_encoder

    config = TrainConfig(data=(str(texture_video),), out=str(tmp_path / "run"), steps=2, size=32, batch_size=2,
                         init=init, batchnorm="frozen", trainable="readout", lr=1e-4)
    train(config, progress=False)
    prior = colour_prior_encoder(PRIORS[init]).state_dict()
    trained = load_encoder(tmp_path / "run" / "encoder.pt").state_dict()
    assert all(torch.equal(prior[k], trained[k]) for k in prior if k.startswith("feature_extraction."))
    assert not torch.equal(prior["post_convolution.weight"], trained["post_convolution.weight"])


def test_stem_training_changes_conv1_and_the_readout_only(one_thread, texture_video, tmp_path):
    from mast.core.checkpoint import load_encoder
    from mast.training.prior import colour_prior_encoder

    config = TrainConfig(data=(str(texture_video),), out=str(tmp_path / "run"), steps=2, size=32, batch_size=2,
                         init="colour-prior", batchnorm="frozen", trainable="stem", lr=1e-4)
    train(config, progress=False)
    prior, trained = colour_prior_encoder().state_dict(), load_encoder(tmp_path / "run" / "encoder.pt").state_dict()
    changed = {k for k in prior if not torch.equal(prior[k], trained[k])}
    assert changed == {"feature_extraction.conv1.0.weight", "feature_extraction.conv1.1.weight",
                       "feature_extraction.conv1.1.bias", "post_convolution.weight", "post_convolution.bias"}
