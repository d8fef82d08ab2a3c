"""What an exported model folder is, and the checks a runtime makes before using it (torch-free).

The artifact format shared by the writer (:mod:`mast.export`) and the reader (:mod:`mast.runtime`):
it lives in ``core``, below both (docs/DESIGN.md, "Layers and their direction").

A folder written by ``mast-export`` holds ``encoder.onnx``, ``memory_read.onnx`` (the onnxruntime
backend's pair), ``mast_trt.onnx`` (what TensorRT builds from) and ``metadata.json``, and with
``--engine`` also ``mast.engine`` and ``engine.json`` (:mod:`mast.core.engine_metadata`); the
fields are stored in each ONNX file's ``metadata_props`` too (values as JSON text), so a model file
moved out of its folder still says what it is.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args

from mast.core.config import AttentionConfig, EncoderPrecision, MemoryConfig, ModelConfig
from mast.core.errors import ModelError

FORMAT = "mast-onnx"
FORMAT_VERSION = 1
ENCODER_FILE = "encoder.onnx"
MEMORY_READ_FILE = "memory_read.onnx"
TRT_ONNX_FILE = "mast_trt.onnx"      # encoder + memory read with the TensorRT plugin node
METADATA_FILE = "metadata.json"
MODEL_FILES = (ENCODER_FILE, MEMORY_READ_FILE)  # what the onnxruntime backend needs


def file_hash(path: str | Path) -> str:
    """First 16 hex digits of the file's SHA-256 (identifies checkpoints and model files in metadata)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class ModelMetadata:
    """Everything a runtime must agree with to use an exported model.

    input_size:   (H, W) frame size the encoder takes (uint8 BGR ``[1, H, W, 3]``).
    feature_size: (h, w) key size, ``ceil(H / stride)``, ``ceil(W / stride)``.
    attention:    :class:`AttentionConfig` fields (radius, threshold, dilation, tile, band).
    schedule:     :class:`MemoryConfig` fields (long_term, short_term, ring_size).
    slots:        bank layout: ``n_slots`` (long-term slots first, then the ring), ``reads`` (most
                  slots read per frame), ``max_labels`` (label channels, background included).
    files:        short SHA-256 of each model file (a corrupted or replaced file is refused).
    parity:       figures of the parity check run at export.
    precision:    ``encoder.onnx``'s precision (:data:`EncoderPrecision`); checked at load.
    calibration:  int8 only: the calibration of the quantised encoder (frames, seed, settings).
    """

    checkpoint: str
    checkpoint_hash: str
    input_size: tuple[int, int]
    feature_size: tuple[int, int]
    attention: dict[str, int]
    schedule: dict[str, Any]
    slots: dict[str, int]
    opset: int
    ir_version: int
    export_time: str
    package_version: str
    stride: int = 4
    key_dim: int = 64
    precision: EncoderPrecision = "fp32"
    versions: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    parity: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def attention_config(self) -> AttentionConfig:
        return AttentionConfig(**self.attention)

    @property
    def memory_config(self) -> MemoryConfig:
        s = self.schedule
        return MemoryConfig(tuple(s["long_term"]), tuple(s["short_term"]), int(s["ring_size"]))

    @property
    def max_objects(self) -> int:
        return self.slots["max_labels"] - 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def props(self) -> dict[str, str]:
        """The ONNX ``metadata_props``: each field as JSON text (``files``, ``parity`` and
        ``calibration`` left out: they describe the files after they are written)."""
        return {k: json.dumps(v) for k, v in self.to_dict().items() if k not in ("files", "parity", "calibration")}

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str) -> ModelMetadata:
        """Parse ``data``; ModelError naming the first missing field."""
        names = {f.name for f in fields(cls)}
        required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
        for name in required:
            if name not in data:
                raise ModelError(f"{where}: metadata has no field '{name}' (not a model written by mast-export?)")
        kept = {k: v for k, v in data.items() if k in names}
        if kept.get("precision", "fp32") not in get_args(EncoderPrecision):
            raise ModelError(f"{where}: precision {kept['precision']!r}, expected one of "
                             f"{', '.join(get_args(EncoderPrecision))} (written by a newer mast-export?)")
        for k in ("input_size", "feature_size"):
            kept[k] = tuple(int(x) for x in kept[k])
        return cls(**kept)


SEMANTIC_ATTENTION = ("radius", "roi_threshold", "dilation_step", "max_dilation")  # tile, band: layout only


def model_config_fields(meta: ModelMetadata) -> dict[str, Any]:
    """The fields a runtime compares with its own :class:`ModelConfig` (name -> value): those that
    change what is computed (not the tiling, which only changes how). The key channels are the
    encoder's own (its architecture, from the checkpoint): a runtime takes them from the model."""
    out = {"stride": meta.stride}
    out.update({f"attention.{k}": v for k, v in meta.attention.items() if k in SEMANTIC_ATTENTION})
    out.update({f"schedule.{k}": list(v) if isinstance(v, (list, tuple)) else v for k, v in meta.schedule.items()})
    return out


def config_fields(config: ModelConfig) -> dict[str, Any]:
    """The same fields of a runtime's :class:`ModelConfig`."""
    out = {"stride": config.stride}
    out.update({f"attention.{k}": v for k, v in asdict(config.attention).items() if k in SEMANTIC_ATTENTION})
    out.update({f"schedule.{k}": list(v) if isinstance(v, (list, tuple)) else v
                for k, v in asdict(config.memory).items()})
    return out


def read_metadata(model_dir: str | Path) -> ModelMetadata:
    """Read and check a model folder's ``metadata.json`` and files; ModelError (one line) when the
    folder is not a model of this format version or a file is missing or corrupted."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelError(f"model folder not found: {model_dir} (write one with mast-export --out DIR)")
    path = model_dir / METADATA_FILE
    if not path.is_file():
        raise ModelError(f"{model_dir} has no {METADATA_FILE}: not a model folder written by mast-export")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelError(f"{path}: format {data.get('format') if isinstance(data, dict) else None!r}, "
                         f"expected {FORMAT!r}: not a model folder written by mast-export")
    if data.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{path}: format version {data.get('format_version')}, expected {FORMAT_VERSION}: "
                         f"re-export the model with this version's mast-export")
    meta = ModelMetadata.from_dict(data, str(path))
    for name in MODEL_FILES:
        check_file(model_dir / name, meta.files.get(name))
    return meta


def check_file(path: Path, expected_hash: str | None) -> None:
    """ModelError when ``path`` is missing or its hash differs from the metadata's."""
    if not path.is_file():
        raise ModelError(f"{path.parent} has no {path.name}: the model folder is incomplete (re-run mast-export)")
    if expected_hash is None:
        raise ModelError(f"{path.parent / METADATA_FILE} lists no hash for {path.name} (not written by mast-export?)")
    found = file_hash(path)
    if found != expected_hash:
        raise ModelError(f"{path}: file hash {found}, expected {expected_hash}: the file is corrupted or "
                         f"was replaced (re-run mast-export)")


def check_props(name: str, props: dict[str, str], meta: ModelMetadata) -> None:
    """ModelError when an ONNX file's ``metadata_props`` disagree with ``metadata.json``."""
    for key, text in meta.props().items():
        if key not in props:
            raise ModelError(f"{name}: no metadata field '{key}' in the ONNX file (not written by mast-export?)")
        if json.loads(props[key]) != json.loads(text):
            raise ModelError(f"{name}: {key} is {props[key]} in the ONNX file but {text} in {METADATA_FILE}: "
                             f"the files come from different exports")


def check_expected(meta: ModelMetadata, config: ModelConfig, size: tuple[int, int] | None = None) -> None:
    """ModelError naming the first field where the model differs from what the runtime expects."""
    if size is not None and tuple(size) != tuple(meta.input_size):
        raise ModelError(f"model input size is {meta.input_size[0]}x{meta.input_size[1]}, expected "
                         f"{size[0]}x{size[1]}: re-export with --height {size[0]} --width {size[1]}")
    found, want = model_config_fields(meta), config_fields(config)
    for key, value in want.items():
        if found.get(key) != value:
            raise ModelError(f"model was exported with {key} = {found.get(key)}, expected {value}: "
                             f"re-export it with this configuration")
