"""``RoiMemoryAttention`` as an onnxruntime Python custom op (onnxruntime-extensions), backed by the
reference :func:`mast.core.attention.roi_memory_attention`: runs ``mast_trt.onnx`` on CPU, so the
graph TensorRT builds from is checked without TensorRT (tests, export checks).

Registration is global to the process (onnxruntime-extensions keeps one Python function per op
type) and done once, by :func:`session_options`.
"""
from __future__ import annotations

from functools import cache

import numpy as np
import onnxruntime as ort

from mast.core.errors import DependencyError
from mast.plugins.onnx_schema import ATTRIBUTES, DOMAIN, OP_TYPE, NodeAttributes


def reference_read(query: np.ndarray, keys: np.ndarray, labels: np.ndarray, distances: np.ndarray,
                   attrs: NodeAttributes) -> np.ndarray:
    """The node's output ``[n_labels, h, w]`` float32 from its inputs (shapes in
    :mod:`mast.plugins.onnx_schema`); zeros when no slot is read."""
    import torch  # noqa: PLC0415 - the reference is torch; the module imports without it

    from mast.core.attention import roi_memory_attention  # noqa: PLC0415

    used = [i for i, d in enumerate(distances.tolist()) if d > 0]
    h, w = query.shape[-2:]
    if not used:
        return np.zeros((attrs.n_labels, h, w), np.float32)
    channels = torch.arange(attrs.n_labels)[:, None, None]
    values = [(torch.from_numpy(labels[i].astype(np.int64))[None] == channels).float() for i in used]
    probs = roi_memory_attention(torch.from_numpy(query[0]).float(), [torch.from_numpy(keys[i]).float() for i in used],
                                 values, [int(distances[i]) for i in used], attrs.attention)
    return probs.numpy().astype(np.float32)


@cache
def _register() -> None:
    try:
        from onnxruntime_extensions import PyCustomOpDef, onnx_op  # noqa: PLC0415 - optional (dev extra)
    except ImportError as exc:
        raise DependencyError("running mast_trt.onnx in onnxruntime needs onnxruntime-extensions: "
                              "pip install 'mast-tracker[dev]'") from exc

    @onnx_op(op_type=OP_TYPE, domain=DOMAIN,
             inputs=[PyCustomOpDef.dt_float, PyCustomOpDef.dt_float, PyCustomOpDef.dt_int32, PyCustomOpDef.dt_int32],
             outputs=[PyCustomOpDef.dt_float], attrs={name: PyCustomOpDef.dt_int64 for name in ATTRIBUTES})
    def roi_memory_attention_op(query, keys, labels, distances, **attrs):
        return reference_read(query, keys, labels, distances, NodeAttributes.from_dict(attrs))


def session_options() -> ort.SessionOptions:
    """Session options with the custom op library loaded (the op registered on first use)."""
    _register()
    from onnxruntime_extensions import get_library_path  # noqa: PLC0415

    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    options.log_severity_level = 3
    return options
