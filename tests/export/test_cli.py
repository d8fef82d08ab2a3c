"""``mast-export``: a small export end to end with its parity check, and the bad inputs."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mast.core.checkpoint import save_checkpoint
from mast.core.metadata import file_hash
from mast.core.encoder import Encoder
from mast.export import cli
from mast.core.metadata import ENCODER_FILE, MEMORY_READ_FILE, METADATA_FILE, TRT_ONNX_FILE
from mast.export.parity import ParityReport

runner = CliRunner()
SMALL = ("--height", "64", "--width", "112", "--parity-frames", "3")


def _run(*args):
    return runner.invoke(cli.app, [str(a) for a in args])


def _one_line_error(res, needle: str, code: int = 2) -> None:
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error: ")]
    assert len(errors) == 1 and needle in errors[0], res.output


def test_exports_a_checkpoint_and_checks_parity(tmp_path: Path):
    ckpt = tmp_path / "w.pt"
    save_checkpoint(ckpt, Encoder())
    out = tmp_path / "model"
    res = _run("--checkpoint", ckpt, "--out", out, *SMALL)
    assert res.exit_code == 0, res.output
    assert "key max abs error" in res.output and "mask IoU" in res.output
    meta = json.loads((out / METADATA_FILE).read_text())
    assert meta["checkpoint"] == "w.pt" and meta["checkpoint_hash"] == file_hash(ckpt)
    assert meta["parity"]["key_max_abs"] <= 1e-3 and meta["parity"]["mask_iou_mean"] >= 0.99
    assert {p.name for p in out.iterdir()} == {ENCODER_FILE, MEMORY_READ_FILE, TRT_ONNX_FILE, METADATA_FILE}


def test_failed_parity_writes_nothing(tmp_path: Path, monkeypatch):
    bad = ParityReport("clip", 2, 0.5, 1.0, 0.0, 0.0, (1,), 1.0, 1.0)
    monkeypatch.setattr("mast.export.parity.check_parity", lambda *args, **kwargs: bad)
    out = tmp_path / "model"
    res = _run("--keys", "random", "--out", out, *SMALL)
    _one_line_error(res, "parity check failed", code=1)
    assert "key max abs error 5.00e-01 > 1.0e-03" in res.output
    assert not out.exists()
    assert not list(tmp_path.glob(".model.export-*"))


def test_engine_without_tensorrt_is_one_line(tmp_path: Path):
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("TensorRT is installed here")
    _one_line_error(_run("--out", tmp_path / "m", "--engine"), "TensorRT is not available")
    res = _run("--out", tmp_path / "m", "--engine")
    assert "pip install 'mast-tracker[gpu]' on a machine with an NVIDIA driver" in res.output.replace("\n", "")
    assert not (tmp_path / "m").exists()


def test_engine_without_gpu_is_one_line(tmp_path: Path, no_cuda_gpu):
    """TensorRT importable but no CUDA device: the GPU check's line."""
    _one_line_error(_run("--out", tmp_path / "m", "--engine"), "no CUDA GPU is visible")


@pytest.mark.parametrize("args, needle", [(("--workspace", "0"), "--workspace 0")])
def test_bad_engine_option_is_one_line(tmp_path: Path, args, needle):
    _one_line_error(_run("--out", tmp_path / "m", "--engine", *args), needle)


def test_without_checkpoint_or_shipped_weights(tmp_path: Path, monkeypatch):
    monkeypatch.setattr("mast.core.model.default_checkpoint", lambda: None)
    _one_line_error(_run("--out", tmp_path / "m"), "no --checkpoint given and no shipped weights")


@pytest.mark.parametrize("args, needle", [
    (("--checkpoint", "missing.pt"), "checkpoint not found"),
    (("--opset", "13"), "--opset 13"),
    (("--height", "8"), "at least 16x16"),
    (("--max-objects", "0"), "--max-objects 0"),
])
def test_bad_input_is_one_line(tmp_path: Path, args, needle):
    _one_line_error(_run("--out", tmp_path / "m", *args), needle)


def test_out_under_a_file_is_one_line(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    _one_line_error(_run("--out", tmp_path / "file" / "m"), "is a file, not a folder")
