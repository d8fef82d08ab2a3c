"""Static int8 quantisation of ``encoder.onnx`` (QDQ) for the onnxruntime backend.

``mast-export --precision int8`` traces the float encoder as usual, then rewrites ``encoder.onnx``
with onnxruntime's ``quantize_static`` (QDQ format, per-channel int8 weights, activations
:attr:`CalibrationConfig.activations`): only the MobileNetV2 blocks (``/encoder/features.N/...``:
their convolutions, ReLU6 clips and residual adds) are quantised; the Lab front (OpenCV's table and
the CIE inverse to sRGB), the ImageNet normalisation, the tap upsampling, the L2 normalisation, the
temperature and the colour channels stay float32, and the keys leave the graph as float32. The
memory read is not quantised (``memory_read.onnx`` and the fused C kernel stay float32).

Activation ranges are calibrated on frames of *training* footage (by default
``../shared/data/raw-videos/frames/<seq>/``, never an evaluation split), picked reproducibly
(:func:`calibration_frames`: sequences in natural name order, a seeded choice of frames) and given
to the float graph exactly as the runtime gives frames: read by :func:`mast.core.images.read_image`
(BGR uint8), resized to the model size with area interpolation (the tracker's resize); the graph
itself turns them into normalised Lab (docs/DESIGN.md step 1).
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Literal

import cv2
import numpy as np
import onnx

from mast.core.errors import InputError
from mast.core.images import list_images, read_image

Activations = Literal["uint8", "int8"]
CalibrationMethod = Literal["minmax", "percentile"]
QUANTISED_SCOPE = "/encoder/features."            # the MobileNetV2 blocks' node names (torch's ONNX scopes)
QUANTISED_OPS = ("Conv", "Clip", "Add")            # convolutions, ReLU6, residual adds
EVALUATION_SPLITS = ("davis2016-val-dev", "multiobject-dev")   # never calibrated on


def default_calibration_root() -> Path:
    """``<shared>/data/raw-videos/frames``: ``$MAST_SHARED`` or ``../shared`` beside the repository."""
    shared = Path(os.environ.get("MAST_SHARED", Path(__file__).resolve().parents[3] / "shared"))
    return shared / "data" / "raw-videos" / "frames"


@dataclass(frozen=True)
class CalibrationConfig:
    """How ``encoder.onnx`` is quantised to int8.

    root:        training footage: a folder of sequence folders ``<seq>/*.jpg`` (or one folder of
                 frames); None: :func:`default_calibration_root`.
    frames:      frames to calibrate on, spread round-robin over the sequences.
    seed:        seed of the choice of frame within each sequence (the list is reproducible).
    activations: uint8 or int8 activations (weights are int8, per output channel).
    method:      activation ranges: min/max over the calibration frames, or the 0.001 / 99.999
                 percentiles of their histogram (onnxruntime's ``Percentile``). min/max tracks
                 better on the shipped weights (240x427, dev / multiobject-dev J&F 76.9 / 72.0
                 against 76.3 / 71.3; fp32 76.7 / 71.8: docs/RESULTS.md).
    """

    root: Path | None = None
    frames: int = 48
    seed: int = 0
    activations: Activations = "uint8"
    method: CalibrationMethod = "minmax"

    @property
    def folder(self) -> Path:
        return Path(self.root) if self.root is not None else default_calibration_root()


def sequences(root: Path) -> list[Path]:
    """Frame folders under ``root`` (its sub-folders holding frames, in natural order; or ``root``
    itself when it holds frames); InputError (one line) when there is none or ``root`` is an
    evaluation split."""
    if not root.is_dir():
        raise InputError(f"calibration folder not found: {root} (expected training frames <seq>/*.jpg, "
                         f"e.g. ../shared/data/raw-videos/frames): pass --calibration DIR")
    if any(part in EVALUATION_SPLITS for part in root.resolve().parts):
        raise InputError(f"calibration folder {root} is inside an evaluation split ({', '.join(EVALUATION_SPLITS)}): "
                         f"calibrate on training footage, e.g. ../shared/data/raw-videos/frames")
    if list_images(root):
        return [root]
    subs = [p for p in sorted(root.iterdir(), key=lambda p: p.name.lower()) if p.is_dir() and list_images(p)]
    if not subs:
        raise InputError(f"calibration folder {root} holds no frames (expected <seq>/*.jpg or *.png): "
                         f"pass --calibration DIR with training frames")
    return subs


def calibration_frames(cfg: CalibrationConfig) -> list[Path]:
    """The calibration frame files: ``cfg.frames`` picks round-robin over the sequences, each a
    frame of that sequence drawn without replacement by a generator seeded with ``cfg.seed``."""
    if cfg.frames < 1:
        raise InputError(f"--calibration-frames {cfg.frames}: give at least 1 frame")
    rng = np.random.default_rng(cfg.seed)
    lists = [list_images(s) for s in sequences(cfg.folder)]
    pools = [list(rng.permutation(len(files))) for files in lists]
    picked: list[Path] = []
    while len(picked) < cfg.frames and any(pools):
        for files, pool in zip(lists, pools):
            if pool and len(picked) < cfg.frames:
                picked.append(files[pool.pop()])
    return picked


def load_frames(paths: list[Path], size: tuple[int, int]) -> list[np.ndarray]:
    """BGR uint8 ``[1, H, W, 3]`` of each path at ``size`` (H, W), resized as the tracker does (area)."""
    h, w = size
    return [cv2.resize(read_image(p, "calibration frame"), (w, h), interpolation=cv2.INTER_AREA)[None] for p in paths]


def quantised_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the float graph's nodes to quantise: the MobileNetV2 blocks' :data:`QUANTISED_OPS`."""
    return [n.name for n in model.graph.node if n.name.startswith(QUANTISED_SCOPE) and n.op_type in QUANTISED_OPS]


def quantise_encoder(model: onnx.ModelProto, cfg: CalibrationConfig, size: tuple[int, int],
                     progress: Callable[[int], None] | None = None) -> tuple[onnx.ModelProto, dict]:
    """The QDQ int8 twin of the float ``encoder.onnx`` ``model`` (input ``frame`` uint8 ``[1, H, W, 3]``
    at ``size``) and a record of its calibration (for the metadata). ``progress(n)`` is called after
    each calibration frame."""
    from onnxruntime.quantization import (  # noqa: PLC0415 - only for int8 exports
        CalibrationDataReader, CalibrationMethod as OrtMethod, QuantFormat, QuantType, quantize_static)

    nodes = quantised_nodes(model)
    if not nodes:
        raise InputError("--precision int8 quantises the MobileNetV2 blocks of a compact encoder (arch mobilenetv2); "
                         "this checkpoint's encoder has none: export it as fp32 or fp16")
    paths = calibration_frames(cfg)
    frames = load_frames(paths, size)

    class Reader(CalibrationDataReader):
        """The frames one at a time; ``set_range`` lets onnxruntime calibrate frame by frame
        (``CalibStridedMinMax`` = 1: ranges (or histograms) merged frame by frame, the intermediate
        tensors of one frame held at a time instead of all frames': percentile calibration all at
        once peaked at 7.1 GB at 240x427 with 48 frames, 0.76 GB frame by frame; min/max ranges are
        the same either way)."""

        def __init__(self) -> None:
            self.range: Iterator[np.ndarray] = iter(frames)
            self.done = 0

        def __len__(self) -> int:
            return len(frames)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.range = iter(frames[start_index:end_index])

        def get_next(self) -> dict[str, np.ndarray] | None:
            frame = next(self.range, None)
            if frame is None:
                return None
            self.done += 1
            if progress is not None:
                progress(self.done)
            return {"frame": frame}

    with tempfile.TemporaryDirectory(prefix="mast-int8-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        onnx.save(model, str(src))
        quiet = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)   # onnxruntime's advice to pre-process, per call
        try:
            with contextlib.redirect_stdout(io.StringIO()):   # its histogram steps are printed
                quantize_static(
                    str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, nodes_to_quantize=nodes,
                    per_channel=True, weight_type=QuantType.QInt8,
                    activation_type=QuantType.QUInt8 if cfg.activations == "uint8" else QuantType.QInt8,
                    calibrate_method=OrtMethod.Percentile if cfg.method == "percentile" else OrtMethod.MinMax,
                    calibration_providers=["CPUExecutionProvider"], extra_options={"CalibStridedMinMax": 1})
        finally:
            logging.getLogger().setLevel(quiet)
        quantised = onnx.load(str(dst))
    root = cfg.folder
    record = {"root": str(root), "frames": [str(p.relative_to(root)) for p in paths], "seed": cfg.seed,
              "activations": cfg.activations, "weights": "int8 per channel", "method": cfg.method,
              "quantised_nodes": len(nodes)}
    return quantised, record
