"""What a TensorRT engine in a model folder was built for, and the checks made before it is loaded
(torch-free, TensorRT-free: the runtime and ``mast-export --engine`` share it).

``mast.engine`` is only valid for the TensorRT version and the GPU architecture it was built with;
``engine.json`` beside it records them with the export it came from.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from mast.core.config import ExportPrecision
from mast.core.errors import ModelError
from mast.core.metadata import ModelMetadata, file_hash

ENGINE_FILE = "mast.engine"
ENGINE_METADATA_FILE = "engine.json"
ENGINE_FORMAT = "mast-trt-engine"
ENGINE_FORMAT_VERSION = 1


@dataclass(frozen=True)
class EngineMetadata:
    """One built engine.

    tensorrt_version:   TensorRT that built it (engines load only in the same version).
    gpu_name:           the build GPU's name.
    compute_capability: its (major, minor); the plugin's PTX and TensorRT's kernels target it.
    input_size:         (H, W) frame size, fixed in the engine.
    checkpoint_hash:    the weights' hash, as in ``metadata.json``.
    precision:          fp16 (TensorRT may run layers in fp16) or fp32.
    size_bytes, engine_hash: of ``mast.engine`` (a corrupted or replaced file is refused).
    parity:             engine vs onnxruntime figures measured after the build.
    """

    tensorrt_version: str
    gpu_name: str
    compute_capability: tuple[int, int]
    input_size: tuple[int, int]
    checkpoint_hash: str
    precision: ExportPrecision
    size_bytes: int
    engine_hash: str
    build_time: str = ""
    parity: dict[str, Any] = field(default_factory=dict)
    format: str = ENGINE_FORMAT
    format_version: int = ENGINE_FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def write_engine_metadata(model_dir: Path, meta: EngineMetadata) -> None:
    (Path(model_dir) / ENGINE_METADATA_FILE).write_text(json.dumps(meta.to_dict(), indent=2) + "\n")


def read_engine_metadata(model_dir: str | Path) -> EngineMetadata:
    """``engine.json`` of ``model_dir``; ModelError (one line) when the engine or its metadata is
    missing, of another format version, or the engine file does not match it."""
    model_dir = Path(model_dir)
    engine, path = model_dir / ENGINE_FILE, model_dir / ENGINE_METADATA_FILE
    if not engine.is_file():
        raise ModelError(f"{model_dir} has no {ENGINE_FILE}: build it with mast-export --engine --out {model_dir}")
    if not path.is_file():
        raise ModelError(f"{model_dir} has no {ENGINE_METADATA_FILE} beside {ENGINE_FILE}: rebuild the engine "
                         "with mast-export --engine")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != ENGINE_FORMAT:
        raise ModelError(f"{path}: not the metadata of an engine written by mast-export")
    if data.get("format_version") != ENGINE_FORMAT_VERSION:
        raise ModelError(f"{path}: engine format version {data.get('format_version')}, expected "
                         f"{ENGINE_FORMAT_VERSION}: rebuild the engine with this version's mast-export --engine")
    names = {f.name for f in fields(EngineMetadata)}
    missing = [n for n in ("tensorrt_version", "compute_capability", "engine_hash", "checkpoint_hash") if n not in data]
    if missing:
        raise ModelError(f"{path}: no field '{missing[0]}' (not written by mast-export?)")
    kept = {k: v for k, v in data.items() if k in names}
    for k in ("compute_capability", "input_size"):
        kept[k] = tuple(int(x) for x in kept[k])
    meta = EngineMetadata(**kept)
    found = file_hash(engine)
    if found != meta.engine_hash:
        raise ModelError(f"{engine}: file hash {found}, expected {meta.engine_hash}: the engine is corrupted or "
                         "was replaced (rebuild it with mast-export --engine)")
    return meta


def check_engine(meta: EngineMetadata, model: ModelMetadata, tensorrt_version: str, gpu_name: str,
                 compute_capability: tuple[int, int]) -> None:
    """ModelError (one line) when the engine cannot run here or does not belong to ``model``."""
    if meta.checkpoint_hash != model.checkpoint_hash or tuple(meta.input_size) != tuple(model.input_size):
        raise ModelError(f"{ENGINE_FILE} was built from another export (checkpoint {meta.checkpoint_hash}, "
                         f"{meta.input_size[0]}x{meta.input_size[1]}) than this folder's "
                         f"({model.checkpoint_hash}, {model.input_size[0]}x{model.input_size[1]}): rebuild it "
                         "with mast-export --engine")
    if meta.tensorrt_version != tensorrt_version:
        raise ModelError(f"{ENGINE_FILE} was built with TensorRT {meta.tensorrt_version}, this is TensorRT "
                         f"{tensorrt_version}: rebuild it here with mast-export --engine")
    if tuple(meta.compute_capability) != tuple(compute_capability):
        built, here = (".".join(map(str, c)) for c in (meta.compute_capability, compute_capability))
        raise ModelError(f"{ENGINE_FILE} was built for {meta.gpu_name} (compute capability {built}), this GPU is "
                         f"{gpu_name} ({here}): rebuild it on this GPU with mast-export --engine")
