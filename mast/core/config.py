"""Configuration dataclasses shared by every stage (no torch import)."""
from __future__ import annotations

from dataclasses import dataclass, field
from numbers import Integral
from typing import Literal

from mast.core.errors import InputError

Precision = Literal["fp32", "bf16", "fp16"]
"""The torch backend's encoder precision (its weights and activations; keys leave the encoder as float32, or as float16
into a half bank on the Triton path). bf16: fast on CPUs with AVX-512/AMX bf16; fp16: CUDA (slow on CPU)."""

ExportPrecision = Literal["fp32", "fp16"]
"""The precisions of the TensorRT engine (and of the float encoders below)."""

EncoderPrecision = Literal["fp32", "fp16", "int8"]
"""The precisions of an exported ``encoder.onnx``: its convolutions in fp32, fp16, or int8 (static QDQ
quantisation of the MobileNetV2 blocks, onnxruntime; ``mast_trt.onnx`` then stays float)."""

EXP_FLOOR = -80.0
"""Shifted scores (score - running max) are floored here before ``exp``: below about -87, exp()
leaves float32's normal range and vectorised exps (CPU, onnxruntime) take a slow path (-inf
included). A floored candidate weighs e^-80 (1.8e-35) of the peak instead of less, which no float32
sum can show; the specification itself has no floor."""

REACH = 48
"""The attention window's reach in working-frame pixels: radius R = REACH / stride (the paper's R = 12
at stride 4; R = 6 at stride 8 reaches as far with a quarter of the candidates)."""

MAX_RADIUS = 31
"""The largest attention radius a tracker takes: the fused CPU kernel's bound (``MAXCOLS`` in
attention_kernel.c: window rows of at most 64 floats), 63 x 63 candidates."""


def check_radius(radius: int) -> int:
    """``radius`` when it is an attention radius a tracker takes (1 .. :data:`MAX_RADIUS` key pixels),
    else a one-line InputError. The radius is a speed option: the read's work grows with
    (2R + 1)^2; at 240x427 and key stride 4, R = 6 reaches as far in the scene as the paper's R = 12
    on 480p frames (docs/RESULTS.md, "Window radius")."""
    if isinstance(radius, bool) or not isinstance(radius, Integral) or not 1 <= radius <= MAX_RADIUS:
        raise InputError(f"attention radius {radius!r}: expected a whole number of key pixels from 1 to {MAX_RADIUS} "
                         f"(default {REACH // 4} at key stride 4, {REACH // 8} at stride 8)")
    return int(radius)


NO_SCORE = -3.0e38
"""The running maximum before any candidate is seen: finite (unlike -inf) so that
``exp(NO_SCORE - NO_SCORE)`` stays defined for a pixel no candidate has reached yet."""


@dataclass(frozen=True)
class AttentionConfig:
    """ROI memory attention (docs/DESIGN.md, per-frame step 5).

    radius:        window radius R in feature pixels; the window is (2R+1)^2 candidates.
    roi_threshold: a memory frame at distance d > roi_threshold uses ROI localisation.
    dilation_step: dilation of the coarse search: min(max_dilation, d // dilation_step + 1).
    max_dilation:  upper bound of that dilation.
    tile:          query tile side (feature pixels) of the chunked CPU implementation; each
                   tile is matched against its (tile + 2R)^2 key neighbourhood as one matmul.
    band_tiles:    tile rows processed at once (bounds peak memory).
    """

    radius: int = 12
    roi_threshold: int = 15
    dilation_step: int = 15
    max_dilation: int = 4
    tile: int = 8
    band_tiles: int = 2

    def dilation(self, distance):
        """Coarse-search dilation for a memory frame ``distance`` frames back (ROI branch only): an
        int for an int, elementwise for an integer tensor or array of distances."""
        gamma = distance // self.dilation_step + 1
        return min(self.max_dilation, gamma) if isinstance(gamma, int) else gamma.clip(max=self.max_dilation)

    def uses_roi(self, distance):
        """True when a memory frame this far back is matched through ROI localisation (elementwise
        for a tensor or array)."""
        return distance > self.roi_threshold


@dataclass(frozen=True)
class MemoryConfig:
    """Memory schedule and ring-buffer layout (docs/DESIGN.md, per-frame step 4, "Streaming runtime").

    long_term:  frame indices (relative to the anchor frame) kept for the whole stream.
    short_term: distances back from the predicted frame t that are read (t-1, t-3, t-5).
    ring_size:  slots of the short-term ring (the last ``ring_size`` frames).
    """

    long_term: tuple[int, ...] = (0, 5)
    short_term: tuple[int, ...] = (1, 3, 5)
    ring_size: int = 5

    @property
    def n_slots(self) -> int:
        """Total slots of the bank: long-term slots first, then the ring."""
        return len(self.long_term) + self.ring_size


@dataclass(frozen=True)
class ModelConfig:
    """Encoder geometry: keys have ``key_dim`` channels at 1/``stride`` of the frame size.

    label_offset: where in each ``stride x stride`` cell the memory reads a mask's label
                  (``mast.core.labels``): 1 (default) keeps the labels where the prediction is put
                  back; 0 is the published code (``PUBLISHED_LABEL_OFFSET``), whose masks drift
                  1.5 px per frame; what the parity tests use.

    A model's stride comes from its checkpoint or export (the compact encoder's ``stride``):
    :meth:`for_stride` gives the configuration that goes with it.
    """

    key_dim: int = 64
    stride: int = 4
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    label_offset: int = 1

    @classmethod
    def for_stride(cls, stride: int = 4, label_offset: int | None = None, radius: int | None = None,
                   **fields) -> ModelConfig:
        """The configuration of a model whose keys are at 1/``stride`` of the frame: attention radius
        ``REACH // stride`` unless ``radius`` is given (12 at stride 4, 6 at stride 8: the same reach
        in pixels; a smaller radius is the speed option of :func:`check_radius`; the ROI branch's
        threshold and dilation stay :class:`AttentionConfig`'s), label offset ``(stride - 1) // 2``
        unless given: half a pixel before the cell centre ``(stride - 1) / 2`` where step 6 puts the
        key pixel back (1 at stride 4, 3 at stride 8; docs/DESIGN.md step 3). ``fields``: the other
        fields (``key_dim``, ``memory``)."""
        if stride < 1 or REACH % stride:
            raise InputError(f"key stride {stride}: expected a divisor of {REACH} (4 or 8)")
        radius = REACH // stride if radius is None else check_radius(radius)
        return cls(stride=stride, attention=AttentionConfig(radius=radius),
                   label_offset=(stride - 1) // 2 if label_offset is None else label_offset, **fields)

    def __post_init__(self) -> None:
        if not 0 <= self.label_offset < self.stride:
            raise InputError(f"label_offset={self.label_offset}: expected 0..{self.stride - 1} "
                             f"(a pixel of the {self.stride}x{self.stride} cell; 0 = the published code)")
