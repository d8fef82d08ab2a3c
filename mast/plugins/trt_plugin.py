"""The TensorRT plugin ``mast::RoiMemoryAttention``: a quickly deployable (Python) plugin whose
ahead-of-time implementation hands TensorRT the Triton kernel's PTX, so that a built engine runs
without Python, torch or Triton (docs/DESIGN.md "GPU path").

:func:`register_plugin` (once per process, before TensorRT's ONNX parser meets the node) registers

- the shapes and types: inputs ``query`` ``[1, C, h, w]``, ``keys`` ``[S, C, h, w]`` (fp32 or fp16,
  both the same), ``labels`` ``[S, h, w]`` int32, ``distances`` ``[S]`` int32; output ``probs``
  ``[n_labels, h, w]`` fp32 (:mod:`mast.plugins.onnx_schema`);
- the formats TensorRT may pick (fp32 or fp16 keys, linear layouts);
- the AOT implementation: the kernel compiled for the build GPU with the node's attributes as
  constexprs (radius, ROI threshold, dilation rule, labels; S and C from the fixed input shapes),
  one program per tile of query pixels, and ``h``, ``w`` as the int32 extra arguments.

Every TensorRT import goes through :func:`mast.plugins.gpu_env.tensorrt` (one availability check),
so this module imports without TensorRT. No ``from __future__ import annotations`` here:
``tensorrt.plugin`` checks the functions' annotations as types (not strings).
"""
from functools import cache

from mast.core.errors import ModelError
from mast.plugins.gpu_env import gpu_info, tensorrt
from mast.plugins.kernel_spec import KernelSpec
from mast.plugins.onnx_schema import PLUGIN_ID, NodeAttributes
from mast.plugins.ptx import compile_ptx

FORMATS = "FP32|FP16, FP32|FP16, INT32, INT32, FP32"   # query, keys, labels, distances -> probs


def _constant(expr, what: str) -> int:
    """The value of a shape expression fixed at export; ModelError when it is dynamic."""
    if not expr.is_constant:
        raise ModelError(f"{what} of the {PLUGIN_ID} inputs must be fixed at export (got a dynamic shape)")
    return int(expr.constant_value)


def kernel_spec(keys_shape, keys_is_fp16: bool, attrs: NodeAttributes) -> KernelSpec:
    """The kernel variant for the plugin's ``keys`` shape expressions and dtype."""
    n_slots, key_dim = _constant(keys_shape[0], "slots S"), _constant(keys_shape[1], "key channels C")
    return KernelSpec(n_slots, key_dim, attrs.n_labels, "fp16" if keys_is_fp16 else "fp32", "i32", attrs.attention)


@cache
def register_plugin() -> None:
    """Register ``mast::RoiMemoryAttention`` with TensorRT (idempotent); DependencyError without it."""
    trt, trtp = tensorrt()

    @trtp.register(PLUGIN_ID)
    def describe(query: trtp.TensorDesc, keys: trtp.TensorDesc, labels: trtp.TensorDesc, distances: trtp.TensorDesc,
                 radius: int, roi_threshold: int, dilation_step: int, max_dilation: int,
                 n_labels: int) -> trtp.TensorDesc:
        h, w = query.shape_expr[2], query.shape_expr[3]
        return trtp.from_shape_expr((n_labels, h, w), dtype=trt.float32)

    @trtp.autotune(PLUGIN_ID)
    def formats(query: trtp.TensorDesc, keys: trtp.TensorDesc, labels: trtp.TensorDesc, distances: trtp.TensorDesc,
                outputs: tuple[trtp.TensorDesc]) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(FORMATS)]

    @trtp.aot_impl(PLUGIN_ID)
    def aot(query: trtp.TensorDesc, keys: trtp.TensorDesc, labels: trtp.TensorDesc, distances: trtp.TensorDesc,
            radius: int, roi_threshold: int, dilation_step: int, max_dilation: int, n_labels: int,
            outputs: tuple[trtp.TensorDesc], tactic: int
            ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        attrs = NodeAttributes.from_dict({"radius": radius, "roi_threshold": roi_threshold, "dilation_step": dilation_step,
                                          "max_dilation": max_dilation, "n_labels": n_labels})
        spec = kernel_spec(keys.shape_expr, keys.dtype == trt.float16, attrs)
        kernel = compile_ptx(spec, gpu_info().arch)
        h, w = query.shape_expr[2], query.shape_expr[3]
        launch = trtp.KernelLaunchParams()
        launch.grid_x = trtp.cdiv(h, spec.tile[0]) * trtp.cdiv(w, spec.tile[1])   # KernelSpec.grid
        launch.block_x = kernel.block_threads
        launch.shared_mem = kernel.shared
        extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(h), trtp.SymInt32(w)])   # kernel_spec.EXTRA_ARGS
        return kernel.name, kernel.ptx, launch, extra
