"""Trace the encoder and the memory read to ONNX and write them with their metadata.

The TorchScript-based exporter (``torch.onnx.export(..., dynamo=False)``) is used: it records the
fine window's data-dependent square side as a dynamic ``Range`` without hints, needs no extra
package (the dynamo exporter needs onnxscript), and traces the 480x854 pieces in seconds.
Its deprecation warnings are silenced here.
"""
from __future__ import annotations

import copy
import io
import json
import warnings
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import torch
from torch import nn

from mast.core.config import EncoderPrecision, ModelConfig
from mast.core.lab_graph import OpenCvLab
from mast.core.metadata import ENCODER_FILE, MEMORY_READ_FILE, METADATA_FILE, TRT_ONNX_FILE, ModelMetadata, file_hash
from mast.export.compose import Pieces, memory_read_model
from mast.export.memory_graph import Finish, ReadSpec, SlotRead, initial_state
from mast.export.quantize import CalibrationConfig, quantise_encoder
from mast.export.trt_graph import trt_model

MIN_OPSET = 17
DEFAULT_OPSET = 17


class FrameEncoder(nn.Module):
    """What ``encoder.onnx`` computes: uint8 BGR ``[1, H, W, 3]`` -> key ``[1, 64, H/4, W/4]`` float32.

    ``half``: the convolutions run in float16 (Lab and the returned key stay float32)."""

    def __init__(self, encoder: nn.Module, half: bool = False) -> None:
        super().__init__()
        self.lab = OpenCvLab()
        self.encoder = encoder.half() if half else encoder
        self.half_precision = half

    def forward(self, bgr: torch.Tensor) -> torch.Tensor:
        lab = self.lab(bgr)
        if self.half_precision:
            return self.encoder(lab.half()).float()
        return self.encoder(lab)


@dataclass(frozen=True)
class ExportConfig:
    """What ``mast-export`` fixes in the graphs.

    height, width: frame size (pixels) the encoder takes; the runtime resizes frames to it.
    max_objects:   most objects a tracked mask may hold (label channels = max_objects + 1).
    opset:         ONNX opset (>= 17).
    precision:     fp32, fp16 convolutions in the encoder, or int8: ``encoder.onnx`` statically
                   quantised (QDQ, :mod:`mast.export.quantize`; ``mast_trt.onnx`` stays fp32). The
                   memory read stays fp32.
    model:         encoder geometry, attention and memory schedule.
    calibration:   int8 only: the calibration frames and settings.
    """

    height: int = 480
    width: int = 854
    max_objects: int = 15
    opset: int = DEFAULT_OPSET
    precision: EncoderPrecision = "fp32"
    model: ModelConfig = field(default_factory=ModelConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)

    @property
    def feature_size(self) -> tuple[int, int]:
        s = self.model.stride
        return -(-self.height // s), -(-self.width // s)

    @property
    def read_spec(self) -> ReadSpec:
        return ReadSpec.for_config(self.feature_size, self.model.memory, self.model.attention,
                                   self.max_objects + 1, self.model.key_dim)


def trace(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str], opset: int,
          dynamic: dict[str, dict[int, str]] | None = None) -> onnx.ModelProto:
    """``module`` traced on ``args`` into an in-memory ONNX model (TorchScript exporter);
    ``dynamic``: axes of inputs/outputs left symbolic (torch's ``dynamic_axes``)."""
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, buf, dynamo=False, opset_version=opset,
                          input_names=inputs, output_names=outputs, do_constant_folding=True,
                          dynamic_axes=dynamic)
    return onnx.load_from_string(buf.getvalue())


def encoder_model(encoder: nn.Module, cfg: ExportConfig) -> onnx.ModelProto:
    """``encoder.onnx``: ``frame`` uint8 ``[1, H, W, 3]`` (BGR) -> ``key`` float32 ``[1, C, h, w]``."""
    frame = torch.zeros(1, cfg.height, cfg.width, 3, dtype=torch.uint8)
    half = cfg.precision == "fp16"
    module = FrameEncoder(copy.deepcopy(encoder).float().eval() if half else encoder.float().eval(), half=half)
    return trace(module, (frame,), ["frame"], ["key"], cfg.opset)


def memory_read_pieces(spec: ReadSpec, opset: int) -> Pieces:
    """The traced :class:`SlotRead` branches and :class:`Finish`."""
    g = torch.Generator().manual_seed(0)
    query = torch.randn(1, spec.key_dim, spec.height, spec.width, generator=g)
    keys = torch.randn(spec.n_slots, spec.key_dim, spec.height, spec.width, generator=g)
    # the label channels are data (the bank's largest id + 1): traced with 3, any count runs
    labels = torch.randint(0, 3, (spec.n_slots, spec.height, spec.width), generator=g)
    labels[0, 0, 0] = 2
    peak, acc = initial_state(spec, 3)
    names = ["query", "keys", "labels", "slot", "distance", "peak", "acc"]
    outs = ["peak_out", "acc_out"]
    slot = torch.tensor(0)
    channels = {"acc": {2: "channels"}, "acc_out": {2: "channels"}}
    local = trace(SlotRead(spec, roi=False), (query, keys, labels, slot, torch.tensor(1), peak, acc), names, outs, opset,
                  channels)
    far = torch.tensor(spec.attention.roi_threshold + 1)
    roi = trace(SlotRead(spec, roi=True), (query, keys, labels, slot, far, peak, acc), names, outs, opset, channels)
    finish = trace(Finish(spec), (acc,), ["acc"], ["probs"], opset, {"acc": {2: "channels"}})
    return Pieces(local, roi, finish)


def memory_model(spec: ReadSpec, opset: int, ir_version: int) -> onnx.ModelProto:
    """``memory_read.onnx`` (inputs and output: :mod:`mast.export.memory_graph`)."""
    shapes = {"query": (1, spec.key_dim, spec.height, spec.width),
              "keys": (spec.n_slots, spec.key_dim, spec.height, spec.width),
              "labels": (spec.n_slots, spec.height, spec.width), "distances": (spec.n_slots,)}
    peak = initial_state(spec, 1)[0].numpy()
    model = memory_read_model(memory_read_pieces(spec, opset), spec.reads, spec.attention.roi_threshold,
                              peak, shapes, (spec.max_labels, spec.height, spec.width), opset, ir_version)
    onnx.checker.check_model(model)
    return model


def package_version() -> str:
    try:
        return importlib_metadata.version("mast-tracker")
    except importlib_metadata.PackageNotFoundError:
        return "unknown"


def build_metadata(cfg: ExportConfig, checkpoint: str, checkpoint_hash: str, ir_version: int) -> ModelMetadata:
    """Metadata of an export (files and parity filled in later)."""
    spec, m = cfg.read_spec, cfg.model
    import onnxruntime  # noqa: PLC0415 - only for its version string

    return ModelMetadata(
        checkpoint=checkpoint, checkpoint_hash=checkpoint_hash, input_size=(cfg.height, cfg.width),
        feature_size=cfg.feature_size, attention=dict(vars(m.attention)),
        schedule={"long_term": list(m.memory.long_term), "short_term": list(m.memory.short_term),
                  "ring_size": m.memory.ring_size},
        slots={"n_slots": spec.n_slots, "long_term_slots": len(m.memory.long_term), "reads": spec.reads,
               "max_labels": spec.max_labels},
        opset=cfg.opset, ir_version=ir_version, stride=m.stride, key_dim=m.key_dim, precision=cfg.precision,
        export_time=datetime.now(timezone.utc).isoformat(timespec="seconds"), package_version=package_version(),
        versions={"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__,
                  "numpy": np.__version__})


def save_model(model: onnx.ModelProto, path: Path, meta: ModelMetadata) -> None:
    """Write ``model`` with ``meta`` as its ``metadata_props``."""
    onnx.helper.set_model_props(model, meta.props())
    onnx.save(model, str(path))


def write_models(out_dir: Path, encoder: nn.Module, cfg: ExportConfig, checkpoint: str,
                 checkpoint_hash: str, progress: Callable[[int], None] | None = None) -> ModelMetadata:
    """Export the graphs (``encoder.onnx``, ``memory_read.onnx``, ``mast_trt.onnx``) into ``out_dir``
    with ``metadata.json``; returns the metadata written. int8: ``progress(n)`` after each
    calibration frame."""
    out_dir.mkdir(parents=True, exist_ok=True)
    enc = encoder_model(encoder, cfg)
    meta = build_metadata(cfg, checkpoint, checkpoint_hash, enc.ir_version)
    if cfg.precision == "int8":
        quantised, record = quantise_encoder(enc, cfg.calibration, (cfg.height, cfg.width), progress)
        meta = replace(meta, calibration=record)
        save_model(quantised, out_dir / ENCODER_FILE, meta)
    else:
        save_model(enc, out_dir / ENCODER_FILE, meta)
    save_model(memory_model(cfg.read_spec, cfg.opset, enc.ir_version), out_dir / MEMORY_READ_FILE, meta)
    trt = trt_model(enc, cfg.read_spec)
    onnx.checker.check_model(trt, full_check=True)
    save_model(trt, out_dir / TRT_ONNX_FILE, meta)
    meta = replace(meta, files={f: file_hash(out_dir / f) for f in (ENCODER_FILE, MEMORY_READ_FILE, TRT_ONNX_FILE)})
    write_metadata(out_dir, meta)
    return meta


def write_metadata(out_dir: Path, meta: ModelMetadata) -> None:
    (out_dir / METADATA_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")
