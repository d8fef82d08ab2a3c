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
import onnx
import onnxruntime as ort
import pytest
import torch
from torch.nn import functional as F

from mast.core import attention_c
from mast.core.config import AttentionConfig, ModelConfig
from mast.core.errors import DependencyError, InputError, MastError, ModelError
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


# -- the fused read (mast.core.attention_c) against the graph (memory_read.onnx) --------------------
def _need_fused() -> None:
    if (reason := attention_c.available()) is not None:
        pytest.skip(reason)


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over the objects of either mask of their IoU."""
    ids = [i for i in np.union1d(np.unique(a), np.unique(b)) if i]
    return float(np.mean([((a == i) & (b == i)).sum() / ((a == i) | (b == i)).sum() for i in ids])) if ids else 1.0


@pytest.mark.slow
def test_fused_and_graph_reads_give_the_same_masks_on_a_real_clip(model_dir: Path, data_dir: Path):
    """18 frames of a real sequence, two objects (the mask split in halves), both trackers in
    turn; frame 0 is read through its ROI from frame 16 on. Each frame's distributions agree to
    float32 rounding (both within 1e-4 of the float64 specification, tests/test_attention_matrix.py),
    so the masks may differ only at near ties."""
    _need_fused()
    frames, mask = _sequence(data_dir, "dog", 18)
    mask = mask.astype(np.uint8)
    mask[:, mask.shape[1] // 2:] *= 2
    fused, graph = OrtBackend(model_dir, read="fused"), OrtBackend(model_dir, read="graph")
    assert (fused.read_mode, graph.read_mode) == ("fused", "graph")
    trackers = [Tracker(fused), Tracker(graph)]
    for t in trackers:
        t.start(frames[0], mask)
    ious, gaps = [], []
    for f in frames[1:]:
        a, b = (t.step(f) for t in trackers)
        ious.append(_mask_iou(a, b))
        gaps.append(float(np.abs(trackers[0].last_distribution - trackers[1].last_distribution).max()))
    assert min(ious) >= 0.999, ious
    assert max(gaps) <= 2e-4, gaps


def test_fused_read_matches_the_graph_under_another_attention_config(tmp_path: Path):
    """A model exported with a smaller window, threshold and dilation rule: the fused read is called
    with the configuration recorded in memory_read.onnx and gives the graph's distribution."""
    _need_fused()
    attention = AttentionConfig(radius=5, roi_threshold=3, dilation_step=4, max_dilation=3)
    config = ModelConfig(attention=attention)
    write_models(tmp_path, sharp_encoder(), ExportConfig(48, 72, max_objects=4, model=config), "x20", "x20")
    fused, graph = (OrtBackend(tmp_path, config=config, read=r) for r in ("fused", "graph"))
    props = onnx.load(str(tmp_path / MEMORY_READ_FILE)).metadata_props
    recorded = json.loads({p.key: p.value for p in props}["attention"])
    assert fused.attention == AttentionConfig(**recorded) and fused.attention.radius == 5
    g = np.random.default_rng(3)
    keys = [fused.encode(g.integers(0, 256, (48, 72, 3), dtype=np.uint8)) for _ in range(4)]
    labels = g.integers(0, 5, (12, 18))
    for b in (fused, graph):
        b.allocate(7, keys[0], 5)
        for slot in range(7):
            b.write(slot, keys[slot % 4], np.roll(labels, slot, axis=1))
    for slots, distances in (([0, 1, 2], [1, 2, 3]), ([0, 3, 4, 6], [4, 9, 13, 1]), ([5], [20])):
        got, want = fused.read(keys[3], slots, distances), graph.read(keys[3], slots, distances)
        assert got.shape == want.shape == (5, 12, 18)
        assert np.abs(got - want).max() <= 2e-4, (distances, np.abs(got - want).max())


def test_fused_read_refuses_a_graph_whose_config_disagrees(model_copy: Path):
    """memory_read.onnx's recorded attention is checked against metadata.json in fused mode too
    (the graph is not loaded into onnxruntime there)."""
    path = model_copy / MEMORY_READ_FILE
    model = onnx.load(str(path))
    for p in model.metadata_props:
        if p.key == "attention":
            p.value = json.dumps({**json.loads(p.value), "radius": 6})
    onnx.save(model, str(path))
    meta = json.loads((model_copy / METADATA_FILE).read_text())
    _edit_metadata(model_copy, files={**meta["files"], MEMORY_READ_FILE: file_hash(path)})
    for read in ("fused", "graph"):
        with pytest.raises(ModelError, match="memory_read.onnx: attention is") as exc:
            OrtBackend(model_copy, read=read)
        _one_line(exc.value)


def _spinning(session: ort.InferenceSession) -> str | None:
    """The session's ``allow_spinning`` entry (None: not set, onnxruntime's default: spin)."""
    try:
        return session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning")
    except RuntimeError:   # onnxruntime raises for an entry not set
        return None


def test_read_modes_resolve_and_refuse(model_dir: Path, monkeypatch, tmp_path: Path):
    with pytest.raises(InputError, match="unknown memory read 'fast'"):
        OrtBackend(model_dir, read="fast")
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("MAST_CACHE_DIR", str(tmp_path))
    attention_c._library.cache_clear()
    try:
        with pytest.raises(DependencyError, match="no-such-compiler") as exc:
            OrtBackend(model_dir, read="fused")
        _one_line(exc.value)
        with pytest.warns(UserWarning, match="slower ONNX graph"):
            assert OrtBackend(model_dir).read_mode == "graph"
    finally:
        attention_c._library.cache_clear()
    graph = OrtBackend(model_dir, read="graph")
    assert graph.memory is not None and _spinning(graph.encoder) is None   # onnxruntime's default
    if attention_c.available() is None:
        backend = OrtBackend(model_dir)
        assert backend.read_mode == "fused" and backend.memory is None
        # the encoder's workers do not spin into the fused read's threads
        assert _spinning(backend.encoder) == "0"


def test_lab_on_host_gives_the_graphs_keys(model_dir: Path, data_dir: Path, tmp_path: Path):
    """On CPU the encoder runs from OpenCV's Lab on the host (the graph cut at its /lab/ front): the
    same keys as the whole graph from BGR to float32 rounding of the Lab (a few ulps of the key
    scale), the metadata still checked; a graph whose front is not one tensor runs whole."""
    frames, _ = _sequence(data_dir, "camel", 2)
    host, graph = OrtBackend(model_dir), OrtBackend(model_dir, lab_on_host=False)
    assert host.lab_input is not None and graph.lab_input is None
    for frame in frames:
        frame = cv2.resize(frame, SIZE[::-1], interpolation=cv2.INTER_AREA)
        want, got = graph.encode(frame), host.encode(frame)
        scale = float(np.linalg.norm(want, axis=0).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
    model = onnx.load(str(model_dir / ENCODER_FILE))
    for node in model.graph.node:
        node.name = node.name.replace("/lab/", "/colour/")
    onnx.save(model, tmp_path / "renamed.onnx")
    from mast.runtime.ort_backend import lab_input_model
    assert lab_input_model(tmp_path / "renamed.onnx") is None
    assert lab_input_model(model_dir / ENCODER_FILE).metadata_props == model.metadata_props


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


@pytest.mark.parametrize("read", ["fused", "graph"])
def test_ort_backend_imports_no_torch(model_dir: Path, read: str):
    """In a fresh process: build the backend with each read, encode, write and read (both branches);
    torch is not in sys.modules afterwards."""
    if read == "fused":
        _need_fused()
    script = textwrap.dedent(f"""
        import sys
        import numpy as np
        from mast.runtime.ort_backend import OrtBackend
        backend = OrtBackend({str(model_dir)!r}, read={read!r})
        assert backend.read_mode == {read!r}
        key = backend.encode(np.full((*backend.input_size, 3), 90, np.uint8))
        backend.allocate(7, key, 2)
        backend.write(0, key, np.ones(key.shape[1:], np.int64))
        backend.write(2, key, np.zeros(key.shape[1:], np.int64))
        probs = backend.read(key, [0, 2], [30, 1])
        assert probs.shape == (2, *key.shape[1:]) and probs.max() > 0.5   # zero padding: sums <= 1
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.")))
    """)
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout


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
    for read, error in (("graph", "onnxruntime cannot load"), ("auto", "cannot load")):
        with pytest.raises(ModelError, match=error) as exc:
            OrtBackend(model_copy, read=read)
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


# -- the bf16 read (read_precision="bf16": AVX512-BF16 CPUs) ------------------------------------------
def test_bf16_read_is_the_float32_read_of_bf16_rounded_keys(model_dir: Path, tol):
    """read_precision bf16: the fused bank reads bf16 pairs; a read equals the float32 fused read of
    the same keys rounded to bf16 (to float32 rounding), and stays near the float32 read of the keys
    themselves (their bf16 rounding is the only change)."""
    _need_fused()
    if (reason := attention_c.bf16_available()) is not None:
        pytest.skip(f"no bf16 read here: {reason}")
    g = np.random.default_rng(1)
    bf16, fp32 = OrtBackend(model_dir, read_precision="bf16"), OrtBackend(model_dir)
    keys = [bf16.encode(g.integers(0, 256, (*SIZE, 3), dtype=np.uint8)) for _ in range(3)]
    rounded = [torch.from_numpy(k).bfloat16().float().numpy() for k in keys]
    labels = g.integers(0, 3, keys[0].shape[1:])
    reads = {}
    for name, backend, ks in (("bf16", bf16, keys), ("fp32", fp32, keys), ("rounded", OrtBackend(model_dir), rounded)):
        backend.allocate(7, ks[0], 3)
        for slot in (0, 1, 4):
            backend.write(slot, ks[slot % 3], labels)
        reads[name] = backend.read(ks[2], [0, 1, 4], [40, 2, 17])
    assert bf16.fused.pairs and not fp32.fused.pairs
    cfg = fp32.attention
    atol = tol.read_atol(rounded[2], np.stack([rounded[0], rounded[1], rounded[1]]), 3 * (2 * cfg.radius + 1) ** 2,
                         roi=[(rounded[0], cfg.dilation(40)), (rounded[1], cfg.dilation(17))], radius=cfg.radius)
    np.testing.assert_allclose(reads["bf16"], reads["rounded"], atol=atol, rtol=0)
    # rounding q and k to bf16 (relative 2^-9 each) moves a score by at most eps = |q| |k| (2^-8 +
    # 2^-18); every softmax weight then changes by a factor within e^(+-2 eps), so a blend of one-hot
    # values by at most e^(2 eps) - 1 (plus the float32 read's own 1e-5)
    norms = [np.linalg.norm(k, axis=0).max() for k in keys]
    eps = norms[2] * max(norms) * (2.0 ** -8 + 2.0 ** -18)
    assert np.abs(reads["bf16"] - reads["fp32"]).max() <= np.expm1(2 * eps) + 1e-5, eps


def test_bf16_read_refused_where_it_cannot_run(model_dir: Path, monkeypatch):
    """bf16 needs the fused read and AVX512-BF16; fp16 is the torch encoder's: one line each, and
    through make_backend (the CLIs' --precision) the same."""
    from mast.runtime.factory import make_backend

    with pytest.raises(InputError, match="memory_read.onnx"):
        OrtBackend(model_dir, read="graph", read_precision="bf16")
    with pytest.raises(InputError, match="fp16 applies to the torch backend: drop it for onnxruntime"):
        make_backend("onnxruntime", model_dir, "cpu", precision="fp16")
    _need_fused()
    monkeypatch.setattr(attention_c, "_cpu_flags", lambda: "flags : fpu avx2 fma")
    attention_c._bf16_library.cache_clear()
    try:
        with pytest.raises(InputError, match="AVX512-BF16") as exc:
            make_backend("onnxruntime", model_dir, "cpu", precision="bf16")
        _one_line(exc.value)
    finally:
        attention_c._bf16_library.cache_clear()
