"""The onnxruntime backend (torch-free): ``encoder.onnx`` + ``memory_read.onnx`` from ``mast-export``.

The bank is preallocated numpy arrays, keys ``[S, C, h, w]`` float32 and label maps ``[S, h, w]``
int64. The memory read (:data:`ReadMode`) runs either

- ``graph``: ``memory_read.onnx``, given the whole bank with a per-slot distance (0 = not read,
  masked in the graph). On the CUDA execution provider the bank stays on the host and is copied in
  for each read (~46 MB at 480x854, a few ms over PCIe); keys are not kept on the device between
  frames.
- ``fused``: the fused C kernel of :mod:`mast.core.attention_c` (the torch backend's CPU read,
  compiled with the host's C compiler on first use; torch-free) on the read slots' keys and
  one-hot label maps, with the attention configuration recorded in ``memory_read.onnx`` (the same
  semantics, docs/DESIGN.md step 5; the graph file is checked but not loaded into onnxruntime).
  The encoder still runs in onnxruntime. ``read_precision="bf16"`` (``--precision bf16``) scores in
  bf16 pairs (the keys rounded to bf16; AVX512-BF16 CPUs).

On the CPU execution provider frames become Lab on the host (OpenCV, as the torch backend does) and
``encoder.onnx`` runs from its Lab tensor on (:func:`lab_input_model`): its table-interpolated Lab
front, written for devices, was most of its CPU time.

Frames must have the model's fixed size (``input_size``): the :class:`~mast.runtime.tracker.Tracker`
resizes them to it and its masks back.
"""
from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import onnx
import onnx.helper
import onnx.utils
import onnxruntime as ort

from mast.core import attention_c
from mast.core.config import AttentionConfig, ModelConfig
from mast.core.errors import DependencyError, InputError, ModelError
from mast.core.lab import bgr_to_lab
from mast.core.metadata import ENCODER_FILE, MEMORY_READ_FILE, ModelMetadata, check_expected, check_props, read_metadata

Device = Literal["cpu", "cuda", "auto"]
# the memory read: "graph" memory_read.onnx; "fused" the fused C kernel (CPU; DependencyError where
# it cannot be built); "auto" fused on CPU where the kernel builds and takes the model, else graph
ReadMode = Literal["auto", "fused", "graph"]
ReadPrecision = Literal["fp32", "bf16"]   # the fused read's dot products (bf16: AVX512-BF16 CPUs)
LAB_SCOPE = "/lab/"   # the node names of encoder.onnx's Lab front (mast.export.onnx_export.FrameEncoder.lab)
CPU_EP = "CPUExecutionProvider"
CUDA_EP = "CUDAExecutionProvider"


def providers_for(device: Device) -> list[str]:
    """Execution providers for ``device``: cpu; cuda (refused, one line, without the CUDA EP);
    auto (CUDA when onnxruntime has it, else CPU)."""
    available = ort.get_available_providers()
    if device == "cpu":
        return [CPU_EP]
    if device == "cuda" and CUDA_EP not in available:
        raise InputError("device cuda: this onnxruntime has no CUDA execution provider "
                         f"(has {', '.join(available)}): install onnxruntime-gpu, or use device cpu")
    if device in ("cuda", "auto"):
        return [CUDA_EP, CPU_EP] if CUDA_EP in available else [CPU_EP]
    raise InputError(f"unknown device {device!r}: expected cpu, cuda or auto")


def open_session(path: Path, providers: list[str], threads: int | None = None,
                 arena: bool = True, spinning: bool = True, model: bytes | None = None) -> ort.InferenceSession:
    """An inference session on ``path`` (or on ``model``, a serialised graph made from it); ModelError
    (one line) when onnxruntime cannot load it.

    ``arena``: onnxruntime's CPU memory arena. It keeps the buffers it served for reuse, so the
    memory read (whose sizes vary from frame to frame) holds more memory, but allocates less: on a
    480x854 stream the read takes 963 instead of 1319 ms for a peak RSS of 1.15 instead of 0.73 GB
    (a 240x427 stream: 276 vs 329 ms, 460 vs 372 MiB), and the footprint stays flat over the stream
    (BENCHMARKS.md). Off: the smallest footprint.

    ``spinning``: onnxruntime's intra-op threads spin for more work after a run (its default). Off
    where other threads run between this session's runs: with the fused read after the encoder,
    the spinning workers took a core from the read (240x424 on 2 cores, shared host: encoder +
    read 216 vs 151 ms CPU a frame; BENCHMARKS.md)."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    # all graph optimisations, stated (it is the Python default): on CPU the encoder's convolutions
    # run in MLAS's blocked NCHWc layout and MatMul + Transpose fuse. The optimised model is not
    # saved next to the export: it is specific to the CPU it was made on, and loading takes ~1 s.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.enable_cpu_mem_arena = arena
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(model if model is not None else str(path), options, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"onnxruntime cannot load {path}: {reason}") from exc


class OrtBackend:
    """:class:`~mast.runtime.backend.Backend` on onnxruntime; keys and label distributions are
    numpy arrays (keys ``[C, h, w]`` float32, distributions ``[L, h, w]`` float32).

    model_dir: a folder written by ``mast-export``. device: cpu | cuda | auto.
    config:    what the tracker will run (attention, schedule): the model must have been exported
               with the same, else ModelError naming the field.
    size:      (H, W) the caller expects, checked against the model's input size when given.
    threads:   onnxruntime intra-op threads, and the fused read's (None: onnxruntime's default, one
               per physical core; the fused read: :func:`mast.core.attention_c.default_threads`).
    read:      the memory read (:data:`ReadMode`); ``read_mode`` says which one runs.
    read_precision: "bf16": the fused read's dot products in bf16 (keys and queries rounded to bf16 when
               laid out, float32 sums: :class:`~mast.core.attention_c.FusedBank` ``pairs``; AVX512-BF16
               CPUs), about 1.5x faster; InputError where it cannot run. "fp32" (default): float32.
    lab_on_host: convert frames to Lab with OpenCV on the host and run ``encoder.onnx`` from its Lab
               tensor on (:func:`lab_input_model`; None: on the CPU execution provider, where the
               graph's table-interpolated Lab front took 22 of the encoder's 29 ms at 240x427 and
               OpenCV takes 2); ``lab_input`` says whether it does.
    """

    name = "onnxruntime"

    def __init__(self, model_dir: str | Path, device: Device = "cpu", config: ModelConfig = ModelConfig(),
                 size: tuple[int, int] | None = None, threads: int | None = None, read: ReadMode = "auto",
                 lab_on_host: bool | None = None, read_precision: ReadPrecision = "fp32") -> None:
        self.model_dir = Path(model_dir)
        self.meta: ModelMetadata = read_metadata(self.model_dir)
        check_expected(self.meta, config, size)
        providers = providers_for(device)
        self.read_mode: Literal["fused", "graph"] = self._read_mode(read, CUDA_EP in providers)
        self.read_precision = _check_read_precision(read_precision, self.read_mode)
        self.threads = threads
        path = self.model_dir / ENCODER_FILE
        from_lab = lab_input_model(path) if (CUDA_EP not in providers if lab_on_host is None else lab_on_host) else None
        self.lab_input: str | None = None if from_lab is None else from_lab.graph.input[0].name
        self.encoder = open_session(path, providers, threads, spinning=self.read_mode == "graph",
                                    model=None if from_lab is None else from_lab.SerializeToString())
        check_props(ENCODER_FILE, self.encoder.get_modelmeta().custom_metadata_map, self.meta)
        if device == "cuda" and CUDA_EP not in self.encoder.get_providers():
            raise InputError("device cuda: onnxruntime could not start the CUDA execution provider "
                             "(no GPU visible?): use device cpu")
        self.device = "cuda" if CUDA_EP in self.encoder.get_providers() else "cpu"
        graph = self.model_dir / MEMORY_READ_FILE
        self.memory: ort.InferenceSession | None = None    # memory_read.onnx's session (graph read only)
        if self.read_mode == "graph":
            self.memory = open_session(graph, providers, threads)
            props = self.memory.get_modelmeta().custom_metadata_map
        else:
            props = graph_props(graph)
        check_props(MEMORY_READ_FILE, props, self.meta)
        # the configuration the graph was built with (check_props: metadata.json's; check_expected:
        # the tracker's): what the fused read is called with
        self.attention = AttentionConfig(**json.loads(props["attention"]))
        self.input_size: tuple[int, int] = tuple(self.meta.input_size)
        self.precision = self.meta.precision
        self.keys: np.ndarray | None = None     # [S, C, h, w] float32, the slots' keys
        self.labels: np.ndarray | None = None   # [S, h, w] int64, the slots' label channels
        self.values: np.ndarray | None = None   # [S, L, h, w] float32 one-hot labels (fused read: formed once per write)
        self.fused: attention_c.FusedBank | None = None   # the fused read's bank over keys and values
        self.n_labels = 0

    # -- Backend protocol --------------------------------------------------------------------------
    def encode(self, bgr: np.ndarray) -> np.ndarray:
        """BGR uint8 ``[H, W, 3]`` at ``input_size`` -> key ``[C, h, w]`` float32."""
        h, w = self.input_size
        if bgr.shape != (h, w, 3) or bgr.dtype != np.uint8:
            raise InputError(f"frame is {bgr.shape} {bgr.dtype}, the model takes uint8 {h}x{w}x3 "
                             f"(BGR): resize frames to the model size (the Tracker does)")
        if self.lab_input is not None:
            return self.encoder.run(None, {self.lab_input: bgr_to_lab(bgr)[None]})[0][0]
        return self.encoder.run(None, {"frame": np.ascontiguousarray(bgr)[None]})[0][0]

    def encode_batch(self, frames: np.ndarray) -> list[np.ndarray]:
        """BGR uint8 ``[N, H, W, 3]`` at ``input_size`` -> N keys ``[C, h, w]`` float32: ``encoder.onnx``
        takes one frame (a fixed batch of 1), so one run per frame."""
        return [self.encode(bgr) for bgr in frames]

    def _read_mode(self, read: ReadMode, cuda: bool) -> Literal["fused", "graph"]:
        """The read ``read`` resolves to here (``cuda``: the sessions are given the CUDA EP, where
        "auto" keeps the graph); InputError / DependencyError for a fused read this model or host
        cannot run."""
        if read not in ("auto", "fused", "graph"):
            raise InputError(f"unknown memory read {read!r}: expected auto, fused or graph")
        if read == "graph" or (read == "auto" and cuda):
            return "graph"
        radius, reads, labels = self.meta.attention["radius"], self.meta.slots["reads"], self.meta.slots["max_labels"]
        if not attention_c.in_domain(radius, reads, labels):
            if read == "fused":
                raise InputError(f"read fused: the kernel takes radius <= {attention_c.MAX_RADIUS}, <= "
                                 f"{attention_c.MAX_FRAMES} reads and <= {attention_c.MAX_LABELS - 1} objects, the model "
                                 f"has radius {radius}, {reads} reads, {labels - 1} objects: use read graph")
            return "graph"
        reason = attention_c.available()
        if reason is None:
            return "fused"
        if read == "fused":
            raise DependencyError(f"read fused: {reason}; or use read graph")
        warnings.warn(f"onnxruntime backend: the memory read runs the slower ONNX graph ({reason})", stacklevel=3)
        return "graph"

    def fork(self) -> "OrtBackend":
        """The same sessions (shared), an empty bank of its own."""
        other = copy.copy(self)
        other.keys = other.labels = other.values = other.fused = None
        other.n_labels = 0
        return other

    def allocate(self, n_slots: int, key: np.ndarray, n_labels: int) -> None:
        """(Re)allocate the bank: ``n_slots`` keys like ``key`` and ``n_labels`` label channels."""
        slots, max_labels = self.meta.slots["n_slots"], self.meta.slots["max_labels"]
        if n_slots != slots:
            raise ModelError(f"the tracker asks for {n_slots} memory slots but the model was exported "
                             f"for {slots}: re-export with the tracker's memory schedule")
        if n_labels > max_labels:
            raise InputError(f"{n_labels - 1} objects to track but this model was exported for at most "
                             f"{max_labels - 1}: re-export with mast-export --max-objects {n_labels - 1}")
        self.keys = np.zeros((n_slots, *key.shape), np.float32)
        self.labels = np.zeros((n_slots, *key.shape[1:]), np.int64)
        fused = self.read_mode == "fused"
        self.values = np.zeros((n_slots, n_labels, *key.shape[1:]), np.float32) if fused else None
        self.fused = (attention_c.FusedBank(n_slots, self.attention, self.threads, pairs=self.read_precision == "bf16")
                      if fused else None)
        self.n_labels = n_labels

    def write(self, slot: int, key: np.ndarray, labels: np.ndarray) -> None:
        """Store ``key`` ``[C, h, w]`` and label channels ``labels`` ``[h, w]`` (int) in ``slot``."""
        self.keys[slot] = key
        self.labels[slot] = labels
        if self.fused is not None:
            self.values[slot] = attention_c.one_hot(self.labels[slot], self.n_labels)
            self.fused.write(slot, self.keys[slot], self.values[slot])

    def read(self, key: np.ndarray, slots: list[int], distances: list[int]) -> np.ndarray | None:
        """Label distribution ``[L, h, w]`` of the query ``key`` read from ``slots`` at ``distances``
        (None without slots: an anchor frame)."""
        if not slots and not distances:
            return None
        reads = self.meta.slots["reads"]
        if not slots or len(slots) > reads or len(slots) != len(distances) or min(distances) < 1:
            raise InputError(f"read needs 1..{reads} slots with distances >= 1 (the model reads at most "
                             f"{reads} per frame), got slots {slots} at distances {distances}")
        if self.read_mode == "fused":
            return self.fused.read(key, slots, distances)
        dist = np.zeros(len(self.keys), np.int64)
        dist[list(slots)] = distances
        probs = self.memory.run(None, {"query": key[None], "keys": self.keys, "labels": self.labels,
                                       "distances": dist})[0]
        return probs[: self.n_labels]

    def decode(self, probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Bilinear upsampling (align_corners=False) of ``probs`` ``[L, h, w]`` to ``size`` (H, W),
        argmax -> channel map uint8 ``[H, W]``."""
        return decode_probs(probs, size)

    def close(self) -> None:
        """Drop the bank (the sessions go with the backend)."""
        self.keys = self.labels = self.values = self.fused = None


def lab_input_model(path: Path) -> onnx.ModelProto | None:
    """``encoder.onnx`` at ``path`` without its Lab front: the same graph from the normalised Lab
    tensor ``[1, 3, H, W]`` float32 (the output of its ``/lab/`` nodes, OpenCV's table: equal to
    :func:`mast.core.lab.bgr_to_lab` to float rounding) to the key, its metadata kept. None when the
    graph has no such single tensor or does not parse (then the whole graph is opened, and refused
    with one line when it does not load: :func:`open_session`)."""
    try:
        model = onnx.load(str(path))
    except Exception:  # noqa: BLE001 - protobuf's own exception types; open_session says why
        return None
    front = {node.name for node in model.graph.node if node.name.startswith(LAB_SCOPE)}
    made_by = {out: node.name for node in model.graph.node for out in node.output}
    boundary = {name for node in model.graph.node if node.name not in front
                for name in node.input if made_by.get(name) in front}
    if len(boundary) != 1:
        return None
    _, height, width, _ = (d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)   # [1, H, W, 3]
    lab = onnx.helper.make_tensor_value_info(boundary.pop(), onnx.TensorProto.FLOAT, [1, 3, height, width])
    model.graph.value_info.append(lab)
    sub = onnx.utils.Extractor(model).extract_model([lab.name], [out.name for out in model.graph.output])
    del sub.metadata_props[:]
    sub.metadata_props.extend(model.metadata_props)
    return sub


def graph_props(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX file ``path``, read without an inference session; ModelError
    (one line) when the file does not parse."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own exception types for bad files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load {path} as ONNX: {reason}") from exc
    return {p.key: p.value for p in model.metadata_props}


def decode_probs(probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``[L, h, w]`` -> uint8 ``[H, W]``: OpenCV's INTER_LINEAR is half-pixel (align_corners=False)
    bilinear without antialiasing, as torch's ``interpolate(mode="bilinear")``."""
    h, w = size
    up = cv2.resize(np.ascontiguousarray(probs.transpose(1, 2, 0)), (w, h), interpolation=cv2.INTER_LINEAR)
    if up.ndim == 2:  # one channel: OpenCV drops the channel axis
        return np.zeros((h, w), np.uint8)
    return up.argmax(-1).astype(np.uint8)


def _check_read_precision(precision: str, read_mode: str) -> str:
    """``precision`` when the memory read can run in it, else InputError (one line)."""
    if precision == "fp32":
        return precision
    if precision != "bf16":
        raise InputError(f"onnxruntime reads the memory in fp32 or bf16, not {precision}: use --precision fp32 or bf16")
    if read_mode != "fused":
        raise InputError("--precision bf16 with onnxruntime is the fused CPU read's (bf16 dot products); this model "
                         "reads through memory_read.onnx (CUDA, or no C compiler): drop --precision")
    if (reason := attention_c.bf16_available()) is not None:
        raise InputError(f"--precision bf16 with onnxruntime reads the memory with bf16 dot products: {reason}; "
                         "drop --precision")
    return precision
