"""Build ``mast.engine`` from ``mast_trt.onnx`` with TensorRT and the ``mast::RoiMemoryAttention``
plugin (``mast-export --engine``), and check it against onnxruntime.

Stages (each reported through ``progress``): parse the ONNX graph (the plugin registered first),
configure (precision, workspace, timing cache), build (TensorRT's tactic search), write the engine
and ``engine.json``. The input size is the export's, fixed in the graph. Needs TensorRT >= 10.9
and a CUDA GPU: without them :class:`DependencyError`, one line.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from mast.core.config import ExportPrecision
from mast.core.engine_metadata import ENGINE_FILE, EngineMetadata, read_engine_metadata, write_engine_metadata
from mast.core.errors import DependencyError, ModelError
from mast.core.metadata import ENCODER_FILE, MEMORY_READ_FILE, TRT_ONNX_FILE, ModelMetadata, file_hash
from mast.plugins.gpu_env import gpu_info, tensorrt
from mast.plugins.trt_plugin import register_plugin

Progress = Callable[[str], None]


@dataclass(frozen=True)
class TrtBuildConfig:
    """How the engine is built.

    precision:    fp16 (TensorRT may pick fp16 kernels, the plugin fp16 keys) or fp32.
    workspace_mb: TensorRT's workspace memory pool limit (MiB).
    timing_cache: file of TensorRT's timing cache, read when it exists and written after the build
                  (later builds on the same GPU skip the tactic timing); None: no cache file.
    """

    precision: ExportPrecision = "fp16"
    workspace_mb: int = 4096
    timing_cache: Path | None = None


def _parse(trt, logger, onnx_path: Path):
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ModelError(f"TensorRT cannot parse {onnx_path.name}: {errors[0] if errors else 'unknown error'}")
    return builder, network, parser


def build_engine(model_dir: Path, model: ModelMetadata, cfg: TrtBuildConfig, progress: Progress) -> EngineMetadata:
    """Build ``model_dir/mast.engine`` from ``model_dir/mast_trt.onnx`` and write ``engine.json``."""
    trt, _ = tensorrt()
    gpu = gpu_info()
    register_plugin()
    logger = trt.Logger(trt.Logger.WARNING)
    start = time.perf_counter()
    progress(f"parsing {TRT_ONNX_FILE} (TensorRT {trt.__version__}, {gpu.name}) ...")
    builder, network, _parser = _parse(trt, logger, model_dir / TRT_ONNX_FILE)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, cfg.workspace_mb << 20)
    if cfg.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    cache_bytes = cfg.timing_cache.read_bytes() if cfg.timing_cache is not None and cfg.timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    progress(f"building the {cfg.precision} engine (workspace {cfg.workspace_mb} MiB"
             f"{', timing cache ' + str(cfg.timing_cache) if cfg.timing_cache else ''}) ...")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise DependencyError(f"TensorRT could not build the engine on {gpu.name} (out of GPU memory? try a smaller "
                              "--workspace or frame size); its log above says why")
    engine_path = model_dir / ENGINE_FILE
    engine_path.write_bytes(bytes(serialized))
    if cfg.timing_cache is not None:
        cfg.timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    progress(f"  built in {time.perf_counter() - start:.1f} s ({engine_path.stat().st_size / 1e6:.1f} MB)")
    meta = EngineMetadata(tensorrt_version=trt.__version__, gpu_name=gpu.name, compute_capability=gpu.compute_capability,
                          input_size=tuple(model.input_size), checkpoint_hash=model.checkpoint_hash,
                          precision=cfg.precision, size_bytes=engine_path.stat().st_size,
                          engine_hash=file_hash(engine_path),
                          build_time=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    write_engine_metadata(model_dir, meta)
    return read_engine_metadata(model_dir)


@dataclass(frozen=True)
class EngineParity:
    """Engine vs onnxruntime on the same random frame and bank: max abs differences."""

    key_max_abs: float
    probs_max_abs: float

    def to_dict(self) -> dict[str, float]:
        return {"key_max_abs": self.key_max_abs, "probs_max_abs": self.probs_max_abs}


def engine_parity(model_dir: Path, seed: int = 0) -> EngineParity:
    """Run ``mast.engine`` and ``encoder.onnx`` + ``memory_read.onnx`` (onnxruntime, CPU) on one random
    frame and bank (slots at distances on both sides of the ROI threshold); max abs differences."""
    import onnxruntime as ort  # noqa: PLC0415

    from mast.runtime.trt_backend import TrtBackend  # noqa: PLC0415 - needs TensorRT

    backend = TrtBackend(model_dir)
    meta = backend.meta
    rng = np.random.default_rng(seed)
    h, w = meta.input_size
    s, (fh, fw), n_labels = meta.slots["n_slots"], meta.feature_size, meta.slots["max_labels"]
    frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    keys = rng.standard_normal((s, meta.key_dim, fh, fw)).astype(np.float32)
    labels = rng.integers(0, n_labels, (s, fh, fw)).astype(np.int32)
    distances = np.zeros(s, np.int64)
    reads = [1, 3, 5, 20, 50][: min(s, meta.slots["reads"])]
    distances[: len(reads)] = reads
    try:
        key, probs = backend.run_raw(frame, keys, labels, distances.astype(np.int32))
    finally:
        backend.close()
    cpu = ["CPUExecutionProvider"]
    ref_key = ort.InferenceSession(str(model_dir / ENCODER_FILE), providers=cpu).run(None, {"frame": frame[None]})[0]
    ref = ort.InferenceSession(str(model_dir / MEMORY_READ_FILE), providers=cpu).run(
        None, {"query": ref_key, "keys": keys, "labels": labels.astype(np.int64), "distances": distances})[0]
    return EngineParity(float(np.abs(key - ref_key[0]).max()), float(np.abs(probs - ref).max()))
