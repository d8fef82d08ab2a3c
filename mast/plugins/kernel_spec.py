"""What the ROI attention kernel is compiled for: its constexprs, argument list and launch grid
(torch-free, Triton-free: shared by the torch launcher, the PTX compiler and the TensorRT plugin).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mast.core.config import AttentionConfig

KERNEL_NAME = "roi_attention_kernel"
KeyDtype = Literal["fp32", "fp16"]
LabelDtype = Literal["i32", "i64"]

# the kernel's runtime arguments, in order: inputs, int32 extra arguments, output
INPUTS = ("query_ptr", "keys_ptr", "labels_ptr", "distances_ptr")
EXTRA_ARGS = ("height", "width")
OUTPUTS = ("out_ptr",)
ARGS = INPUTS + EXTRA_ARGS + OUTPUTS


def next_pow2(n: int) -> int:
    """Smallest power of two >= ``n`` (>= 1)."""
    return 1 << max(0, (n - 1).bit_length())


def dot_block(n: int) -> int:
    """A ``tl.dot`` dimension holding ``n``: a power of two >= 16."""
    return max(16, next_pow2(n))


@dataclass(frozen=True)
class KernelSpec:
    """One compiled variant of :func:`mast.plugins.roi_kernel.roi_attention_kernel`.

    n_slots:    bank slots S.
    key_dim:    key channels C.
    n_labels:   label channels L of the output (1 .. 256).
    key_dtype:  dtype of the query and the bank's keys (fp32 accumulation either way).
    label_dtype: dtype of the label-id maps.
    attention:  radius, ROI threshold and dilation rule (baked in as constexprs).
    tile:       (rows, columns) of query pixels per program, powers of two, at least 16 pixels.
    num_warps:  warps per program. 8x8 pixels on 8 warps: no register spills for 16 labels on
                sm_90, ~0.5 KiB for 256 (``ptxas -v``, tested; 4 warps or 128-pixel tiles
                spill KiBs); not yet timed on a GPU.
    """

    n_slots: int = 7
    key_dim: int = 64
    n_labels: int = 16
    key_dtype: KeyDtype = "fp32"
    label_dtype: LabelDtype = "i32"
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    tile: tuple[int, int] = (8, 8)
    num_warps: int = 8

    @property
    def block_p(self) -> int:
        """Query pixels per program."""
        return self.tile[0] * self.tile[1]

    def constexprs(self) -> dict[str, int]:
        """The kernel's constexpr arguments (name -> value)."""
        a = self.attention
        return {"S": self.n_slots, "C": self.key_dim, "L": self.n_labels, "RADIUS": a.radius, "ROI_THRESHOLD": a.roi_threshold,
                "DILATION_STEP": a.dilation_step, "MAX_DILATION": a.max_dilation, "TILE_H": self.tile[0],
                "TILE_W": self.tile[1], "BLOCK_C": dot_block(self.key_dim), "BLOCK_L": dot_block(self.n_labels),
                "BLOCK_N": dot_block(self.tile[1] + 2 * a.radius), "DOT_FP16": int(self.key_dtype == "fp16")}

    def signature(self) -> dict[str, str]:
        """Triton signature of every argument (runtime arguments typed, constexprs marked)."""
        key = f"*{self.key_dtype}"
        types = {"query_ptr": key, "keys_ptr": key, "labels_ptr": f"*{self.label_dtype}",
                 "distances_ptr": "*i32", "height": "i32", "width": "i32", "out_ptr": "*fp32"}
        return {**types, **{name: "constexpr" for name in self.constexprs()}}

    def grid(self, height: int, width: int) -> tuple[int, int, int]:
        """Programs of one launch over an ``height x width`` feature map: one per tile."""
        return -(-height // self.tile[0]) * -(-width // self.tile[1]), 1, 1
