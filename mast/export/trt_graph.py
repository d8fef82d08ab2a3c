"""``mast_trt.onnx``: the encoder and the memory read in one graph, the attention as the custom node
``RoiMemoryAttention`` that TensorRT's ONNX parser maps to the ``mast::RoiMemoryAttention`` plugin
(onnx only, no torch).

Inputs:  ``frame`` uint8 ``[1, H, W, 3]`` (BGR), ``keys`` ``[S, C, h, w]`` float32, ``labels``
``[S, h, w]`` int32, ``distances`` ``[S]`` int32 (<= 0: slot not read; every slot with d > 0 is read).
Outputs: ``key`` ``[1, C, h, w]`` float32 (the frame's key, to store in the bank) and ``probs``
``[L, h, w]`` float32 (its label distribution read from the bank).
"""
from __future__ import annotations

import onnx
from onnx import TensorProto, helper

from mast.export.memory_graph import ReadSpec
from mast.plugins.onnx_schema import NodeAttributes, attention_node, opset_import

BANK_INPUTS = ("keys", "labels", "distances")
ENCODER_OUTPUT = "key"


def trt_model(encoder: onnx.ModelProto, spec: ReadSpec) -> onnx.ModelProto:
    """``encoder`` (``frame`` -> ``key``, from :func:`mast.export.onnx_export.encoder_model`) with the
    bank inputs and the plugin node appended."""
    model = onnx.ModelProto()
    model.CopyFrom(encoder)
    g = model.graph
    if [o.name for o in g.output] != [ENCODER_OUTPUT]:
        raise ValueError(f"encoder graph outputs {[o.name for o in g.output]}, expected ['{ENCODER_OUTPUT}']")
    s, c, h, w = spec.n_slots, spec.key_dim, spec.height, spec.width
    g.input.extend([helper.make_tensor_value_info("keys", TensorProto.FLOAT, (s, c, h, w)),
                    helper.make_tensor_value_info("labels", TensorProto.INT32, (s, h, w)),
                    helper.make_tensor_value_info("distances", TensorProto.INT32, (s,))])
    g.node.append(attention_node([ENCODER_OUTPUT, *BANK_INPUTS], "probs", NodeAttributes(spec.attention, spec.max_labels)))
    g.output.append(helper.make_tensor_value_info("probs", TensorProto.FLOAT, (spec.max_labels, h, w)))
    g.name = "mast_trt"
    model.opset_import.append(opset_import())
    return model
