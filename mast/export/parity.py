"""Parity of an exported model with the torch reference, on real frames (run by ``mast-export``).

Three figures, each against what the torch backend computes on the same frames at the model's size:

- **key**: max abs difference of ``encoder.onnx``'s keys and the torch encoder's on OpenCV Lab.
- **read**: ``memory_read.onnx`` against :func:`mast.core.attention.roi_memory_attention` on the
  clip's real keys and mask, slots at distances on both sides of the ROI threshold (both branches,
  dilations 2 and 4): max abs and 99.9th percentile of the difference of the distributions.
- **masks**: both trackers propagate the clip's first mask; mean and min over frames of the IoU of
  their masks (mean over objects).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from mast.core.attention import roi_memory_attention
from mast.core.config import ModelConfig
from mast.core.errors import InputError
from mast.core.masks import read_mask
from mast.runtime.ort_backend import OrtBackend
from mast.runtime.torch_backend import TorchBackend
from mast.runtime.tracker import Tracker

READ_DISTANCES = (1, 3, 5, 20, 50)  # restricted windows, then ROI with dilation 2 and 4
# int8 encoders (static QDQ quantisation) carry the rounding of 8-bit activations through seven
# blocks: on the shipped weights at 240x427 the keys differ by up to 0.43 of the largest key (mean
# per-pixel cosine about 0.986) and the masks of the bundled clip by 1.8 % IoU. What is checked is that
# the graph computes the same keys up to that noise (a wrong scale or zero point moves keys by
# their whole size, and masks far more): key error below the largest key, mask IoU >= 0.95.
INT8_TOLERANCES = {"key_rel": 1.0, "iou_min": 0.95}


@dataclass(frozen=True)
class ParityConfig:
    """What is checked and how strictly.

    frames:   frames of the clip propagated by both trackers (0: skip the check).
    key_tol:  max abs key difference allowed (fp32; fp16 and int8 models: relative to the largest
              key, :data:`INT8_TOLERANCES`).
    read_tol: allowed 99.9th percentile of the distribution difference (max is reported).
    iou_min:  minimum mean IoU of the two trackers' masks (int8: at most 0.95).
    clip:     frame folder (JPEG/PNG frames); None: the bundled demo clip, else the shared data.
    mask:     first-frame mask of ``clip`` (None: its DAVIS annotation).
    threads:  onnxruntime threads (None: default).
    """

    frames: int = 8
    key_tol: float = 1e-3
    read_tol: float = 1e-3
    iou_min: float = 0.99
    clip: Path | None = None
    mask: Path | None = None
    threads: int | None = None


@dataclass(frozen=True)
class ParityReport:
    """Figures of one parity check (see the module docstring)."""

    clip: str
    frames: int
    key_max_abs: float
    key_scale: float
    read_max_abs: float
    read_p999: float
    read_distances: tuple[int, ...]
    mask_iou_mean: float
    mask_iou_min: float

    def failures(self, cfg: ParityConfig, precision: str = "fp32") -> list[str]:
        """One line per figure above its tolerance."""
        key_tol = {"fp32": cfg.key_tol, "int8": INT8_TOLERANCES["key_rel"] * self.key_scale}.get(
            precision, 1e-2 * max(1.0, self.key_scale))
        iou_min = min(cfg.iou_min, INT8_TOLERANCES["iou_min"]) if precision == "int8" else cfg.iou_min
        out = []
        if self.key_max_abs > key_tol:
            out.append(f"key max abs error {self.key_max_abs:.2e} > {key_tol:.1e}")
        if self.read_p999 > cfg.read_tol:
            out.append(f"memory read error (99.9th pct) {self.read_p999:.2e} > {cfg.read_tol:.1e}")
        if self.mask_iou_mean < iou_min:
            out.append(f"mask IoU mean {self.mask_iou_mean:.4f} < {iou_min}")
        return out

    def to_dict(self) -> dict:
        return asdict(self)


def default_clip() -> tuple[Path, Path]:
    """Frames folder and first mask of the bundled demo clip, else of a shared DAVIS sequence."""
    spec = importlib.util.find_spec("mast.runtime")
    for base in (spec.submodule_search_locations or []) if spec else []:
        frames = Path(base) / "demo" / "clip" / "JPEGImages" / "240p" / "camel"
        if frames.is_dir():
            return frames, Path(base) / "demo" / "clip" / "Annotations" / "240p" / "camel" / "00000.png"
    shared = Path(os.environ.get("MAST_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    frames = shared / "data" / "davis2016-val-dev" / "JPEGImages" / "480p" / "blackswan"
    if frames.is_dir():
        return frames, shared / "data" / "davis2016-val-dev" / "Annotations" / "480p" / "blackswan" / "00000.png"
    raise InputError("no clip for the parity check: the bundled demo clip is missing and no shared data "
                     "was found; pass --parity-clip DIR --parity-mask PNG")


def load_clip(frames_dir: Path, mask: Path | None, n: int) -> tuple[list[np.ndarray], np.ndarray]:
    """The first ``n`` frames (BGR uint8) of ``frames_dir`` and the first frame's mask (ids)."""
    paths = sorted(p for p in Path(frames_dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if len(paths) < 2:
        raise InputError(f"parity clip {frames_dir} has {len(paths)} frame(s): it needs at least 2")
    if mask is None:
        parts = list(Path(frames_dir).parts)
        if "JPEGImages" not in parts:
            raise InputError(f"no mask for parity clip {frames_dir}: pass --parity-mask PNG")
        parts[parts.index("JPEGImages")] = "Annotations"
        mask = Path(*parts) / f"{paths[0].stem}.png"
    frames = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in paths[: max(2, n)]]
    return frames, read_mask(mask)


def _resize(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(frame, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def key_error(ort_b: OrtBackend, torch_b: TorchBackend, frames: list[np.ndarray]) -> tuple[float, float, list]:
    """Max abs key difference over ``frames`` (at the model size), the largest key, torch keys."""
    worst, scale, keys = 0.0, 0.0, []
    for f in frames:
        small = _resize(f, ort_b.input_size)
        ref = torch_b.encode(small)
        worst = max(worst, float(np.abs(ort_b.encode(small) - ref.numpy()).max()))
        scale = max(scale, float(ref.abs().max()))
        keys.append(ref)
    return worst, scale, keys


def read_error(ort_b: OrtBackend, keys: list[torch.Tensor], mask: np.ndarray, config: ModelConfig):
    """ORT read vs the reference on real keys: slots hold the clip's keys and first mask, read at
    :data:`READ_DISTANCES` (as many as the model reads). Returns (max abs, 99.9th percentile, distances)."""
    stride, h, w = config.stride, *keys[0].shape[1:]
    ids = cv2.resize(mask, (ort_b.input_size[1], ort_b.input_size[0]), interpolation=cv2.INTER_NEAREST)
    objects = np.unique(ids)
    labels = np.searchsorted(objects, ids[::stride, ::stride])[:h, :w]
    n = min(len(READ_DISTANCES), ort_b.meta.slots["reads"], ort_b.meta.slots["n_slots"])
    distances = list(READ_DISTANCES[-n:])
    ort_b.allocate(ort_b.meta.slots["n_slots"], keys[0].numpy(), len(objects))
    slot_keys = [keys[(i + 1) % len(keys)] for i in range(n)]
    for i in range(n):
        ort_b.write(i, slot_keys[i].numpy(), labels)
    got = ort_b.read(keys[0].numpy(), list(range(n)), distances)
    value = torch.from_numpy((labels[None] == np.arange(len(objects))[:, None, None]).astype(np.float32))
    ref = roi_memory_attention(keys[0], slot_keys, [value] * n, distances, config.attention).numpy()
    diff = np.abs(got - ref)
    return float(diff.max()), float(np.quantile(diff, 0.999)), tuple(distances)


def mask_iou(ort_b: OrtBackend, torch_b: TorchBackend, frames: list[np.ndarray], mask: np.ndarray,
             config: ModelConfig) -> list[float]:
    """Per propagated frame: mean over objects of the IoU of the two trackers' masks."""
    a, b = Tracker(ort_b, config), Tracker(torch_b, config, size=ort_b.input_size)
    a.start(frames[0], mask)
    b.start(frames[0], mask)
    objects = [i for i in np.unique(mask) if i]
    out = []
    for f in frames[1:]:
        ma, mb = a.step(f), b.step(f)
        ious = [(((ma == i) & (mb == i)).sum() / max(1, ((ma == i) | (mb == i)).sum())) if ((ma == i) | (mb == i)).any()
                else 1.0 for i in objects]
        out.append(float(np.mean(ious)))
    return out


def check_parity(model_dir: Path, encoder: nn.Module, cfg: ParityConfig,
                 config: ModelConfig = ModelConfig()) -> ParityReport:
    """Run the three checks of the module docstring on ``model_dir`` against ``encoder``."""
    frames_dir, mask_path = (cfg.clip, cfg.mask) if cfg.clip is not None else default_clip()
    frames, mask = load_clip(frames_dir, mask_path, cfg.frames)
    if mask.shape != frames[0].shape[:2]:
        raise InputError(f"parity mask {mask_path} is {mask.shape[1]}x{mask.shape[0]} but the frames are "
                         f"{frames[0].shape[1]}x{frames[0].shape[0]}")
    ort_b = OrtBackend(model_dir, "cpu", config, threads=cfg.threads, read="graph")   # the exported graph is what is checked
    torch_b = TorchBackend(encoder, attention=config.attention)
    key_max, key_scale, keys = key_error(ort_b, torch_b, frames[:3])
    read_max, read_p, dists = read_error(ort_b, keys, mask, config)
    ious = mask_iou(ort_b, torch_b, frames[: max(2, cfg.frames)], mask, config)
    return ParityReport(str(frames_dir), len(ious), key_max, key_scale, read_max, read_p, dists,
                        float(np.mean(ious)), float(np.min(ious)))
