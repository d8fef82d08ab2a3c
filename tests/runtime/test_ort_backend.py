"""The onnxruntime backend: same masks as the torch backend on a real clip, torch-free import and use,
and the refusal of models it cannot run (one-line errors)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch.nn import functional as F

from mast.core.config import AttentionConfig, ModelConfig
from mast.core.errors import InputError, MastError, ModelError
from mast.core.masks import read_mask
from mast.core.metadata import ENCODER_FILE, MEMORY_READ_FILE, METADATA_FILE, file_hash
from mast.core.model import key_encoder
from mast.evaluation.track import track_davis_backend
from mast.export.onnx_export import ExportConfig, write_models
from mast.runtime.ort_backend import CUDA_EP, OrtBackend, decode_probs
from mast.runtime.torch_backend import TorchBackend
from mast.runtime.tracker import Tracker

SIZE = (96, 168)
REPO = Path(__file__).resolve().parents[2]


def sharp_encoder() -> torch.nn.Module:
    """The random encoder with keys scaled x20 (trained-like magnitudes: peaked attention)."""
    enc = key_encoder("random")
    with torch.no_grad():
        enc.post_convolution.weight.mul_(20.0)
        enc.post_convolution.bias.mul_(20.0)
    return enc


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ort-model")
    write_models(out, sharp_encoder(), ExportConfig(*SIZE, max_objects=3), "random-x20", "random-x20")
    return out


@pytest.fixture
def model_copy(model_dir: Path, tmp_path: Path) -> Path:
    """A copy of the exported folder that a test may break."""
    return Path(shutil.copytree(model_dir, tmp_path / "model"))


def _sequence(data_dir: Path, seq: str, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    root = data_dir / "davis2016-val-dev"
    paths = sorted((root / "JPEGImages" / "480p" / seq).glob("*.jpg"))[:n]
    return [cv2.imread(str(p)) for p in paths], read_mask(root / "Annotations" / "480p" / seq / "00000.png")


def _one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and text
    return text


# -- same masks as the torch backend ------------------------------------------------------------------
@pytest.mark.slow
def test_tracker_masks_match_torch_backend_on_real_clip(model_dir: Path, data_dir: Path):
    """18 frames of a real sequence at 96x168 (frame 0 is read through its ROI from frame 16 on)."""
    frames, mask = _sequence(data_dir, "dog", 18)
    ort_t = Tracker(OrtBackend(model_dir))
    torch_t = Tracker(TorchBackend(sharp_encoder()), size=SIZE)
    assert ort_t.size == SIZE
    ort_t.start(frames[0], mask)
    torch_t.start(frames[0], mask)
    ious = []
    for f in frames[1:]:
        a, b = ort_t.step(f), torch_t.step(f)
        assert a.shape == b.shape == f.shape[:2]
        ious.append(((a > 0) & (b > 0)).sum() / max(1, ((a > 0) | (b > 0)).sum()))
    assert np.mean(ious) >= 0.99 and min(ious) >= 0.97, ious


def test_read_matches_torch_backend_with_several_objects(model_dir: Path):
    """One read with 3 objects, both branches and an unread slot, through the Backend interface."""
    g = np.random.default_rng(0)
    ort_b, torch_b = OrtBackend(model_dir), TorchBackend(sharp_encoder())
    frames = [g.integers(0, 256, (*SIZE, 3), dtype=np.uint8) for _ in range(3)]
    keys = [torch_b.encode(f) for f in frames]
    labels = g.integers(0, 4, (SIZE[0] // 4, SIZE[1] // 4))
    for b in (ort_b, torch_b):
        b.allocate(7, keys[0] if b is torch_b else keys[0].numpy(), 4)
        for slot in (0, 1, 4):
            k = keys[slot % 3]
            b.write(slot, k if b is torch_b else k.numpy(), labels)
    got = ort_b.read(keys[2].numpy(), [0, 1, 4], [40, 2, 17])
    want = torch_b.read(keys[2], [0, 1, 4], [40, 2, 17]).numpy()
    assert got.shape == want.shape == (4, *labels.shape)
    assert np.abs(got - want).max() <= 1e-4


def test_decode_matches_torch_interpolate_argmax():
    g = np.random.default_rng(1)
    probs = g.random((4, 30, 54)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(probs)[None], size=SIZE, mode="bilinear", align_corners=False)[0].argmax(0)
    assert (decode_probs(probs, SIZE) == want.numpy()).mean() > 0.9999


# -- torch-free deployment ----------------------------------------------------------------------------
def test_runs_where_importing_torch_fails(model_dir: Path, data_dir: Path, tmp_path: Path):
    """In a process where ``import torch`` raises: build the backend (directly and through the
    factory), track real frames, and track a DAVIS sequence with track_davis_backend."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('torch is blocked in this test')\n")
    clip = tmp_path / "davis"
    for kind, ext in (("JPEGImages", "jpg"), ("Annotations", "png")):
        dst = clip / kind / "480p" / "dog"
        dst.mkdir(parents=True)
        for p in sorted((data_dir / "davis2016-val-dev" / kind / "480p" / "dog").glob(f"*.{ext}"))[:4]:
            shutil.copy(p, dst)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import cv2
        from mast.core.masks import read_mask
        from mast.runtime.factory import make_backend
        from mast.runtime.ort_backend import OrtBackend
        from mast.runtime.tracker import Tracker
        from mast.evaluation.track import track_davis_backend
        backend = make_backend("onnxruntime", model=Path({str(model_dir)!r}), device="cpu")
        assert isinstance(backend, OrtBackend)
        frames = sorted(Path({str(clip)!r}).glob("JPEGImages/480p/dog/*.jpg"))
        mask = read_mask(Path({str(clip)!r}) / "Annotations/480p/dog/00000.png")
        tracker = Tracker(backend)
        tracker.start(cv2.imread(str(frames[0])), mask)
        out = tracker.step(cv2.imread(str(frames[1])))
        assert out.shape == mask.shape and out.any()
        track_davis_backend(Path({str(clip)!r}), ["dog"], Path({str(tmp_path / "pred")!r}), Path({str(model_dir)!r}))
        assert "torch" not in sys.modules
        print("torch-free ok")
    """)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 0 and "torch-free ok" in res.stdout, res.stderr[-3000:]
    assert len(list((tmp_path / "pred" / "dog").glob("*.png"))) == 4


def test_track_davis_backend_refuses_another_size(model_dir: Path, tmp_path: Path):
    with pytest.raises(InputError) as exc:
        track_davis_backend(tmp_path, ["dog"], tmp_path / "out", model_dir, size=(240, 427))
    assert "exported for 96x168" in _one_line(exc.value)


# -- models it must refuse ------------------------------------------------------------------------------
def _edit_metadata(folder: Path, **changes) -> None:
    path = folder / METADATA_FILE
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def test_refuses_missing_folder_and_files(model_copy: Path, tmp_path: Path):
    with pytest.raises(ModelError, match="model folder not found"):
        OrtBackend(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="has no metadata.json"):
        OrtBackend(tmp_path / "empty")
    (model_copy / ENCODER_FILE).unlink()
    with pytest.raises(ModelError, match="has no encoder.onnx") as exc:
        OrtBackend(model_copy)
    _one_line(exc.value)


def test_refuses_corrupted_onnx(model_copy: Path):
    path = model_copy / MEMORY_READ_FILE
    data = bytearray(path.read_bytes())
    data[100:4000] = bytes(3900)
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="corrupted") as exc:
        OrtBackend(model_copy)
    _one_line(exc.value)
    # a corrupted file whose hash was rewritten too still fails, as a load error, in one line
    meta = json.loads((model_copy / METADATA_FILE).read_text())
    _edit_metadata(model_copy, files={**meta["files"], MEMORY_READ_FILE: file_hash(path)})
    with pytest.raises(ModelError, match="onnxruntime cannot load") as exc:
        OrtBackend(model_copy)
    _one_line(exc.value)


def test_refuses_another_format_version(model_copy: Path):
    _edit_metadata(model_copy, format_version=2)
    with pytest.raises(ModelError, match="format version 2, expected 1") as exc:
        OrtBackend(model_copy)
    _one_line(exc.value)


def test_refuses_another_size_or_configuration(model_dir: Path):
    with pytest.raises(ModelError, match="input size is 96x168, expected 240x427") as exc:
        OrtBackend(model_dir, size=(240, 427))
    _one_line(exc.value)
    with pytest.raises(ModelError, match="attention.radius = 12, expected 6") as exc:
        OrtBackend(model_dir, config=ModelConfig(attention=AttentionConfig(radius=6)))
    _one_line(exc.value)


def test_refuses_metadata_that_disagrees_with_the_onnx_files(model_copy: Path):
    _edit_metadata(model_copy, input_size=[240, 427], feature_size=[60, 107])
    with pytest.raises(ModelError, match="input_size is") as exc:
        OrtBackend(model_copy)
    _one_line(exc.value)


def test_refuses_frames_of_another_size_and_too_many_objects(model_dir: Path):
    backend = OrtBackend(model_dir)
    with pytest.raises(InputError, match="the model takes uint8 96x168x3"):
        backend.encode(np.zeros((240, 427, 3), np.uint8))
    key = backend.encode(np.zeros((*SIZE, 3), np.uint8))
    with pytest.raises(InputError, match="exported for at most 3") as exc:
        backend.allocate(7, key, 5)
    _one_line(exc.value)


@pytest.mark.skipif(CUDA_EP in ort.get_available_providers(), reason="this onnxruntime has the CUDA EP")
def test_cuda_without_the_cuda_provider_is_refused(model_dir: Path):
    with pytest.raises(MastError, match="no CUDA execution provider") as exc:
        OrtBackend(model_dir, device="cuda")
    _one_line(exc.value)
    assert OrtBackend(model_dir, device="auto").device == "cpu"
