"""The TensorRT backend (torch-free): ``mast.engine`` from ``mast-export --engine``, run with the
TensorRT runtime and NVIDIA's ``cuda-bindings`` (pycuda does not build on our machines).

The engine holds the encoder and the memory read (the ``mast::RoiMemoryAttention`` plugin): one
execution takes the frame and the bank and gives the frame's key and its label distribution. The
bank stays on the GPU: keys ``[S, C, h, w]`` fp32, label maps ``[S, h, w]`` int32 and distances
``[S]`` int32, allocated once; writing a slot copies the key device-to-device and uploads the label
map. Frames, distances and distributions go through pinned host buffers on one stream: per frame
one upload of the frame (and of the written label map) and one download of the distribution.

One execution per frame, in the order the tracker calls (:class:`~mast.runtime.backend.Backend`):
``encode`` uploads the frame and returns a handle (:class:`FrameKey`; the key itself is computed on
the GPU and stays there), ``read`` runs the engine (with no slot read for an anchor frame),
``write`` stores the key the run left in the ``key`` output.
"""
from __future__ import annotations

import ctypes
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mast.core.config import ModelConfig
from mast.core.engine_metadata import ENGINE_FILE, EngineMetadata, check_engine, read_engine_metadata
from mast.core.errors import InputError, ModelError
from mast.core.metadata import ModelMetadata, check_expected, read_metadata
from mast.plugins.gpu_env import check, cudart, require_tensorrt_gpu, tensorrt
from mast.runtime.ort_backend import decode_probs

INPUTS = ("frame", "keys", "labels", "distances")
OUTPUTS = ("key", "probs")
SERVE_REFUSED = ("the tensorrt backend runs one stream per engine context (its key is computed when it reads the "
                 "frame): serve many streams with --backend torch or onnxruntime")


@dataclass(frozen=True)
class FrameKey:
    """Handle of an encoded frame: its place in the stream (its key is in the backend's ``key``
    output buffer once ``read`` has run the engine on it)."""

    index: int


class _Pinned:
    """A page-locked host array (``cudaMallocHost``) seen as numpy."""

    def __init__(self, shape: tuple[int, ...], dtype) -> None:
        self.array_dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(shape)) * self.array_dtype.itemsize
        (self.ptr,) = check(cudart().cudaMallocHost(self.nbytes))
        raw = (ctypes.c_uint8 * self.nbytes).from_address(int(self.ptr))
        self.array = np.frombuffer(raw, np.uint8).view(self.array_dtype).reshape(shape)

    def free(self) -> None:
        check(cudart().cudaFreeHost(self.ptr))


class _Device:
    """A device buffer of ``nbytes`` (``cudaMalloc``), zeroed."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = nbytes
        (self.ptr,) = check(cudart().cudaMalloc(nbytes))
        check(cudart().cudaMemset(self.ptr, 0, nbytes))

    def free(self) -> None:
        check(cudart().cudaFree(self.ptr))


class TrtBackend:
    """:class:`~mast.runtime.backend.Backend` on a TensorRT engine (see the module docstring).

    model_dir: a folder written by ``mast-export --engine`` (``mast.engine``, ``engine.json``,
               ``metadata.json``). device: cuda (the only one).
    config:    what the tracker runs; the export must agree (ModelError naming the field).
    size:      (H, W) the caller expects, checked against the engine's input size when given.
    """

    name = "tensorrt"

    def __init__(self, model_dir: str | Path, device: str = "cuda", config: ModelConfig = ModelConfig(),
                 size: tuple[int, int] | None = None) -> None:
        if device != "cuda":
            raise InputError(f"the tensorrt backend runs on device cuda only, not {device}")
        gpu = require_tensorrt_gpu()
        trt, rt = tensorrt().trt, cudart()
        self.model_dir = Path(model_dir)
        self.meta: ModelMetadata = read_metadata(self.model_dir)
        check_expected(self.meta, config, size)
        self.engine_meta: EngineMetadata = read_engine_metadata(self.model_dir)
        check_engine(self.engine_meta, self.meta, trt.__version__, gpu.name, gpu.compute_capability)
        self.device, self.precision = "cuda", self.engine_meta.precision
        self.input_size: tuple[int, int] = tuple(self.meta.input_size)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine((self.model_dir / ENGINE_FILE).read_bytes())
        if self._engine is None:
            raise ModelError(f"TensorRT {trt.__version__} cannot load {self.model_dir / ENGINE_FILE}: rebuild it "
                             "with mast-export --engine")
        self._context = self._engine.create_execution_context()
        (self._stream,) = check(rt.cudaStreamCreate())
        self._buffers: dict[str, _Device] = {}
        for name in INPUTS + OUTPUTS:
            shape = tuple(self._engine.get_tensor_shape(name))
            dtype = np.dtype(trt.nptype(self._engine.get_tensor_dtype(name)))
            self._buffers[name] = _Device(int(np.prod(shape)) * dtype.itemsize)
            self._context.set_tensor_address(name, int(self._buffers[name].ptr))
        s, c = self.meta.slots["n_slots"], self.meta.key_dim
        fh, fw = self.meta.feature_size
        self._slot_key_bytes, self._slot_label_bytes = c * fh * fw * 4, fh * fw * 4
        self._frame = _Pinned((*self.input_size, 3), np.uint8)
        self._distances = _Pinned((s,), np.int32)
        self._labels = _Pinned((fh, fw), np.int32)
        self._probs = _Pinned((self.meta.slots["max_labels"], fh, fw), np.float32)
        self._latest = -1   # index of the last frame encoded
        self._run = -1      # index of the last frame the engine ran on
        self.n_labels = 0

    # -- engine execution -------------------------------------------------------------------------
    def _copy(self, dst, src, nbytes: int, kind: str) -> None:
        rt = cudart()
        check(rt.cudaMemcpyAsync(dst, src, nbytes, getattr(rt.cudaMemcpyKind, kind), self._stream))

    def _execute(self, distances: np.ndarray) -> None:
        """Upload ``distances`` and run the engine on the uploaded frame and the bank."""
        self._distances.array[:] = distances
        self._copy(self._buffers["distances"].ptr, self._distances.ptr, self._distances.nbytes, "cudaMemcpyHostToDevice")
        if not self._context.execute_async_v3(int(self._stream)):
            raise ModelError("TensorRT failed to run the engine (see its log above)")

    def _sync(self) -> None:
        check(cudart().cudaStreamSynchronize(self._stream))

    def run_raw(self, frame: np.ndarray, keys: np.ndarray, labels: np.ndarray,
                distances: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One execution on host arrays (the parity check): frame ``[H, W, 3]`` uint8, keys
        ``[S, C, h, w]`` fp32, labels ``[S, h, w]`` int32, distances ``[S]`` int32 -> the frame's key
        ``[C, h, w]`` and distribution ``[max_labels, h, w]``."""
        self._frame.array[:] = frame
        self._copy(self._buffers["frame"].ptr, self._frame.ptr, self._frame.nbytes, "cudaMemcpyHostToDevice")
        for name, host in (("keys", np.ascontiguousarray(keys, np.float32)), ("labels", np.ascontiguousarray(labels, np.int32))):
            self._copy(self._buffers[name].ptr, host.ctypes.data, host.nbytes, "cudaMemcpyHostToDevice")
            self._sync()   # the pageable source must outlive the copy
        self._execute(distances)
        key = np.empty((self.meta.key_dim, *self.meta.feature_size), np.float32)
        self._copy(key.ctypes.data, self._buffers["key"].ptr, key.nbytes, "cudaMemcpyDeviceToHost")
        self._copy(self._probs.ptr, self._buffers["probs"].ptr, self._probs.nbytes, "cudaMemcpyDeviceToHost")
        self._sync()
        return key, self._probs.array.copy()

    # -- Backend protocol ---------------------------------------------------------------------------
    def encode(self, bgr: np.ndarray) -> FrameKey:
        """Upload BGR uint8 ``[H, W, 3]`` (the engine's input size); the key is computed by ``read``."""
        h, w = self.input_size
        if bgr.shape != (h, w, 3) or bgr.dtype != np.uint8:
            raise InputError(f"frame is {bgr.shape} {bgr.dtype}, the engine takes uint8 {h}x{w}x3 (BGR): resize "
                             "frames to the model size (the Tracker does)")
        self._sync()   # the previous frame's upload has left the pinned buffer
        self._frame.array[:] = bgr
        self._copy(self._buffers["frame"].ptr, self._frame.ptr, self._frame.nbytes, "cudaMemcpyHostToDevice")
        self._latest += 1
        return FrameKey(self._latest)

    def encode_batch(self, frames: np.ndarray) -> list[FrameKey]:
        """Refused: the engine computes a key when it reads the frame (one frame at a time)."""
        raise InputError(SERVE_REFUSED)

    def fork(self) -> "TrtBackend":
        """Refused: the bank is the engine context's device buffers (one stream per backend)."""
        raise InputError(SERVE_REFUSED)

    def allocate(self, n_slots: int, key: FrameKey, n_labels: int) -> None:
        """Empty the bank (allocated once, at the export's size) for ``n_labels`` label channels."""
        slots, max_labels = self.meta.slots["n_slots"], self.meta.slots["max_labels"]
        if n_slots != slots:
            raise ModelError(f"the tracker asks for {n_slots} memory slots but the engine was built for {slots}: "
                             "re-export with the tracker's memory schedule")
        if n_labels > max_labels:
            raise InputError(f"{n_labels - 1} objects to track but this model was exported for at most "
                             f"{max_labels - 1}: re-export with mast-export --max-objects {n_labels - 1}")
        for name in ("keys", "labels"):
            check(cudart().cudaMemsetAsync(self._buffers[name].ptr, 0, self._buffers[name].nbytes, self._stream))
        self.n_labels = n_labels

    def write(self, slot: int, key: FrameKey, labels: np.ndarray) -> None:
        """Store the latest frame's key (device to device, left by its ``read``) and its label map
        ``[h, w]`` in ``slot``."""
        self._check_latest(key)
        if self._run != key.index:
            raise InputError("the tensorrt backend computes a frame's key when it reads the frame: call read "
                             "(with no slots for an anchor frame) before write")
        self._sync()   # the previous label upload has left the pinned buffer
        self._labels.array[:] = labels
        offset = slot * self._slot_label_bytes
        self._copy(int(self._buffers["labels"].ptr) + offset, self._labels.ptr, self._slot_label_bytes,
                   "cudaMemcpyHostToDevice")
        self._copy(int(self._buffers["keys"].ptr) + slot * self._slot_key_bytes, self._buffers["key"].ptr,
                   self._slot_key_bytes, "cudaMemcpyDeviceToDevice")

    def read(self, key: FrameKey, slots: list[int], distances: list[int]) -> np.ndarray | None:
        """Run the engine on the latest frame (its one execution): its distribution ``[L, h, w]`` read
        from ``slots``; without slots (an anchor frame) only its key is computed and None returned."""
        self._check_latest(key)
        if len(slots) != len(distances) or (slots and min(distances) < 1):
            raise InputError(f"read needs slots with distances >= 1, got slots {slots} at distances {distances}")
        dist = np.zeros(self.meta.slots["n_slots"], np.int32)
        dist[list(slots)] = distances
        self._execute(dist)
        self._run = key.index
        if not slots:
            return None
        self._copy(self._probs.ptr, self._buffers["probs"].ptr, self._probs.nbytes, "cudaMemcpyDeviceToHost")
        self._sync()
        return self._probs.array[: self.n_labels].copy()

    def decode(self, probs: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """Bilinear upsampling (align_corners=False) to ``size``, argmax -> channel map uint8 ``[H, W]``."""
        return decode_probs(probs, size)

    def close(self) -> None:
        """Free the device and pinned buffers and the stream (the backend is unusable afterwards)."""
        self._sync()
        for buffer in [*self._buffers.values(), self._frame, self._distances, self._labels, self._probs]:
            buffer.free()
        self._buffers = {}
        check(cudart().cudaStreamDestroy(self._stream))

    def _check_latest(self, key: FrameKey) -> None:
        if key.index != self._latest:
            raise InputError("the tensorrt backend keeps only the latest frame's key: read or write a frame "
                             "before encoding the next one")
