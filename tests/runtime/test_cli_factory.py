"""Backend choice (``make_backend`` / the ``auto`` rule) and torch-free command-line imports."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from mast.core.errors import InputError
from mast.runtime import factory
from mast.runtime.factory import BackendUnavailableError, Choice, choose_backend, make_backend


def _env(monkeypatch: pytest.MonkeyPatch, *, trt: bool = False, ort_cuda: bool = False, torch_cuda: bool = False) -> None:
    monkeypatch.setattr(factory, "tensorrt_available", lambda: trt)
    monkeypatch.setattr(factory, "ort_cuda_available", lambda: ort_cuda)
    monkeypatch.setattr(factory, "torch_cuda_available", lambda: torch_cuda)


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "metadata.json").write_text("{}")
    (folder / "encoder.onnx").write_bytes(b"")
    return folder


def test_auto_export_folder(monkeypatch: pytest.MonkeyPatch, export_dir: Path) -> None:
    _env(monkeypatch)
    assert choose_backend(export_dir) == Choice("onnxruntime", "cpu")
    _env(monkeypatch, ort_cuda=True, torch_cuda=True)
    assert choose_backend(export_dir) == Choice("onnxruntime", "cuda")
    assert choose_backend(export_dir, "cpu") == Choice("onnxruntime", "cpu")
    _env(monkeypatch, trt=True, ort_cuda=True)
    assert choose_backend(export_dir) == Choice("onnxruntime", "cuda")  # no mast.engine in the folder
    (export_dir / "mast.engine").write_bytes(b"")
    assert choose_backend(export_dir) == Choice("tensorrt", "cuda")


def test_auto_export_folder_with_checkpoint_prefers_torch_cuda_over_ort_cpu(
        monkeypatch: pytest.MonkeyPatch, export_dir: Path) -> None:
    (export_dir / "weights.pt").write_bytes(b"")
    _env(monkeypatch, torch_cuda=True)
    assert choose_backend(export_dir) == Choice("torch", "cuda")
    _env(monkeypatch)
    assert choose_backend(export_dir) == Choice("onnxruntime", "cpu")


def test_auto_checkpoint_or_shipped_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ckpt = tmp_path / "w.pt"
    ckpt.write_bytes(b"")
    _env(monkeypatch, ort_cuda=True, trt=True)
    assert choose_backend(ckpt) == Choice("torch", "cpu")
    assert choose_backend(None) == Choice("torch", "cpu")
    _env(monkeypatch, torch_cuda=True)
    assert choose_backend(None) == Choice("torch", "cuda")
    assert choose_backend(None, "cpu") == Choice("torch", "cpu")


def test_auto_cuda_requested_but_absent(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch)
    with pytest.raises(BackendUnavailableError, match="no backend can run"):
        choose_backend(None, "cuda")


def test_make_backend_errors(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, export_dir: Path) -> None:
    with pytest.raises(InputError, match="model not found"):
        make_backend("torch", tmp_path / "missing.pt")
    with pytest.raises(InputError, match="needs --model EXPORT_DIR"):
        make_backend("onnxruntime", None)
    with pytest.raises(InputError, match="--keys lab applies to the torch backend only"):
        make_backend("onnxruntime", export_dir, keys="lab")
    with pytest.raises(InputError, match="without one .pt checkpoint"):
        make_backend("torch", export_dir)
    monkeypatch.setattr(factory, "shipped_weights", lambda: None)
    with pytest.raises(InputError, match="^no model: "):
        make_backend("torch", None)


def test_torch_backend_with_lab_keys() -> None:
    backend = make_backend("torch", None, "cpu", keys="lab")
    assert backend.name == "torch" and factory.describe(backend) == "torch (cpu, fp32)"


def test_commands_do_not_import_torch_for_onnxruntime(tmp_path: Path) -> None:
    """Importing the CLI modules, and running both commands with --backend onnxruntime up to
    their error, loads no torch (a deployment box may not have it)."""
    frames, mask = tmp_path / "frames", tmp_path / "m.png"
    frames.mkdir()
    script = f"""
import json, sys
from mast.runtime import bench, factory, run
codes = []
for main, args in ((run.main, ["--frames", {str(frames)!r}, "--mask", {str(mask)!r}, "--backend", "onnxruntime", "--no-display"]),
                   (bench.main, ["--backend", "onnxruntime"])):
    try:
        main(args)
    except SystemExit as exc:
        codes.append(exc.code)
print(json.dumps({{"codes": codes, "torch": "torch" in sys.modules}}))
"""
    cv2.imwrite(str(frames / "00000.jpg"), np.zeros((32, 32, 3), np.uint8))
    mask_img = np.zeros((32, 32), np.uint8)
    mask_img[8:16, 8:16] = 255
    cv2.imwrite(str(mask), mask_img)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"codes": [2, 2], "torch": False}, proc.stdout + proc.stderr
    assert "onnxruntime backend needs --model EXPORT_DIR" in proc.stderr
