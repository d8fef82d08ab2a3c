"""The ONNX node that carries ``mast::RoiMemoryAttention`` (torch-free).

TensorRT's ONNX parser maps a node to a plugin by its ``op_type`` and its ``plugin_namespace``
attribute (``plugin_version`` picks the version, ``aot = 1`` the ahead-of-time implementation);
the domain ``ai.onnx.contrib`` is the one onnxruntime-extensions runs Python custom ops from, so
the same graph also runs in onnxruntime (:mod:`mast.plugins.ort_custom_op`).

Inputs (:mod:`mast.plugins.roi_kernel`): ``query`` ``[1, C, h, w]`` float, ``keys`` ``[S, C, h, w]``
float (the query's dtype), ``labels`` ``[S, h, w]`` int32, ``distances`` ``[S]`` int32 (<= 0: slot
not read). Output: ``probs`` ``[n_labels, h, w]`` float32. Attributes: the attention
configuration and ``n_labels``, fixed at export.
"""
from __future__ import annotations

from dataclasses import dataclass

import onnx
from onnx import helper

from mast.core.config import AttentionConfig

OP_TYPE = "RoiMemoryAttention"
DOMAIN = "ai.onnx.contrib"
DOMAIN_VERSION = 1
PLUGIN_NAMESPACE = "mast"
PLUGIN_VERSION = "1"
PLUGIN_ID = f"{PLUGIN_NAMESPACE}::{OP_TYPE}"
# the plugin's own attributes (what ``mast.plugins.trt_plugin`` registers), in order
ATTRIBUTES = ("radius", "roi_threshold", "dilation_step", "max_dilation", "n_labels")


@dataclass(frozen=True)
class NodeAttributes:
    """The plugin attributes of one node: the attention configuration and the label channels."""

    attention: AttentionConfig
    n_labels: int

    def as_dict(self) -> dict[str, int]:
        a = self.attention
        return {"radius": a.radius, "roi_threshold": a.roi_threshold, "dilation_step": a.dilation_step,
                "max_dilation": a.max_dilation, "n_labels": self.n_labels}

    @classmethod
    def from_dict(cls, attrs: dict[str, int]) -> NodeAttributes:
        cfg = AttentionConfig(radius=int(attrs["radius"]), roi_threshold=int(attrs["roi_threshold"]),
                              dilation_step=int(attrs["dilation_step"]), max_dilation=int(attrs["max_dilation"]))
        return cls(cfg, int(attrs["n_labels"]))


def attention_node(inputs: list[str], output: str, attrs: NodeAttributes, name: str = "roi_memory_attention",
                   aot: bool = True) -> onnx.NodeProto:
    """The custom node reading ``inputs`` (query, keys, labels, distances) into ``output``."""
    return helper.make_node(OP_TYPE, inputs, [output], name=name, domain=DOMAIN, plugin_namespace=PLUGIN_NAMESPACE,
                            plugin_version=PLUGIN_VERSION, aot=int(aot), **attrs.as_dict())


def opset_import() -> onnx.OperatorSetIdProto:
    """The opset import a model holding :func:`attention_node` needs."""
    return helper.make_opsetid(DOMAIN, DOMAIN_VERSION)
