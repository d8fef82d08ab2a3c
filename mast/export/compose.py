"""Assemble ``memory_read.onnx`` from traced pieces with ``If`` nodes (onnx only, no torch).

The traced :class:`mast.export.memory_graph.SlotRead` graphs (restricted window, ROI) become the
branches of one ``If`` per read pick, so each pick runs the branch its distance asks for and an
unread pick runs nothing; :class:`~mast.export.memory_graph.Finish` closes the graph.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MODEL_INPUTS = ("query", "keys", "labels", "distances")
STATE = ("peak", "acc")


@dataclass(frozen=True)
class Pieces:
    """The traced graphs: ``local`` / ``roi`` take (query, keys, labels, slot, distance, peak, acc)
    and return (peak, acc); ``finish`` takes (acc) and returns probs."""

    local: onnx.ModelProto
    roi: onnx.ModelProto
    finish: onnx.ModelProto


def inline(model: onnx.ModelProto, prefix: str, inputs: dict[str, str], outputs: dict[str, str],
           shared: dict[str, onnx.TensorProto], shared_prefix: str) -> list[onnx.NodeProto]:
    """The nodes of ``model``'s graph with every name prefixed by ``prefix``, its graph inputs read
    from the outer names ``inputs`` (graph input name -> outer name) and its outputs written to
    ``outputs`` (graph output name -> new name).

    Its initializers and ``Constant`` tensors go to ``shared`` under ``shared_prefix`` + name (the
    outer graph holds them once however often the piece is inlined; subgraphs read them from
    there)."""
    g = model.graph
    missing = [i.name for i in g.input if i.name not in inputs]
    if missing:
        raise ValueError(f"no outer value given for input(s) {missing} of the {prefix} piece")
    rename = {i.name: inputs[i.name] for i in g.input}
    for t in g.initializer:
        rename[t.name] = _share(t, shared_prefix + t.name, shared)
    nodes = []
    for n in g.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            raise ValueError(f"piece {prefix} has a nested graph in node {n.name}: not supported")
        if n.op_type == "Constant" and len(n.attribute) == 1 and n.attribute[0].name == "value":
            rename[n.output[0]] = _share(n.attribute[0].t, shared_prefix + n.output[0], shared)
            continue
        node = onnx.NodeProto()
        node.CopyFrom(n)
        node.name = prefix + n.name
        node.input[:] = [rename.get(x, x) if x else x for x in n.input]
        for k, x in enumerate(n.output):
            rename[x] = outputs.get(x, prefix + x) if x else x
            node.output[k] = rename[x]
        nodes.append(node)
    for o in g.output:  # an output that is an input or a constant needs a node of its own
        if rename.get(o.name) != outputs[o.name]:
            nodes.append(helper.make_node("Identity", [rename[o.name]], [outputs[o.name]], name=prefix + "out_" + o.name))
    return nodes


def _share(tensor: onnx.TensorProto, name: str, shared: dict[str, onnx.TensorProto]) -> str:
    """Put a copy of ``tensor`` named ``name`` into ``shared`` (once); returns the name."""
    if name not in shared:
        copy = onnx.TensorProto()
        copy.CopyFrom(tensor)
        copy.name = name
        shared[name] = copy
    return name


def _float_info(name: str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def _branch(name: str, nodes, outputs: list[str]) -> onnx.GraphProto:
    return helper.make_graph(nodes, name, [], [_float_info(o) for o in outputs])


def _pick_nodes(i: int, pieces: Pieces, state_in: list[str], state_out: list[str],
                shared: dict[str, onnx.TensorProto]) -> list[onnx.NodeProto]:
    """Fold pick ``i`` into the state: If(d > 0) { If(d > threshold) roi else local } else pass."""
    d, slot = f"pick{i}_distance", f"pick{i}_slot"
    nodes = [helper.make_node("Gather", ["sorted_distances", f"index{i}"], [d], axis=0, name=f"pick{i}_d"),
             helper.make_node("Gather", ["picked_slots", f"index{i}"], [slot], axis=0, name=f"pick{i}_s"),
             helper.make_node("Greater", [d, "zero"], [f"pick{i}_read"], name=f"pick{i}_read"),
             helper.make_node("Greater", [d, "roi_threshold"], [f"pick{i}_roi"], name=f"pick{i}_roi")]
    outer = {"query": "query", "keys": "keys", "labels": "labels", "slot": slot, "distance": d,
             **dict(zip(STATE, state_in))}
    branches = {}
    for kind in ("roi", "local"):
        out = [f"pick{i}_{kind}_{s}" for s in STATE]
        piece = getattr(pieces, kind)
        body = inline(piece, f"pick{i}_{kind}/", outer, dict(zip([o.name for o in piece.graph.output], out)),
                      shared, f"{kind}/")
        branches[kind] = _branch(f"pick{i}_{kind}", body, out)
    chosen = [f"pick{i}_read_{s}" for s in STATE]
    choose = helper.make_node("If", [f"pick{i}_roi"], chosen, name=f"pick{i}_branch",
                              then_branch=branches["roi"], else_branch=branches["local"])
    skip = [helper.make_node("Identity", [x], [f"pick{i}_skip_{s}"], name=f"pick{i}_skip_{s}")
            for x, s in zip(state_in, STATE)]
    nodes.append(helper.make_node(
        "If", [f"pick{i}_read"], state_out, name=f"pick{i}",
        then_branch=helper.make_graph([choose], f"pick{i}_read", [], [_float_info(c) for c in chosen]),
        else_branch=helper.make_graph(skip, f"pick{i}_skip", [], [_float_info(f"pick{i}_skip_{s}") for s in STATE])))
    return nodes


def memory_read_model(pieces: Pieces, reads: int, roi_threshold: int, initial_peak: np.ndarray,
                      input_shapes: dict[str, tuple[int, ...]], output_shape: tuple[int, ...],
                      opset: int, ir_version: int) -> onnx.ModelProto:
    """The whole ``memory_read.onnx``: TopK over the distances, one ``If`` per pick, then Finish.

    ``initial_peak``: ``[NT, tt]`` the empty state's running max; the empty ``acc`` is zeros
    ``[NT, tt, l + 1]``, l = the bank's largest label id + 1 (the label channels read are data).
    ``input_shapes``: shapes of ``query``, ``keys``, ``labels``, ``distances``; ``output_shape``:
    of ``probs``."""
    types = {"query": TensorProto.FLOAT, "keys": TensorProto.FLOAT, "labels": TensorProto.INT64,
             "distances": TensorProto.INT64}
    inputs = [helper.make_tensor_value_info(n, types[n], input_shapes[n]) for n in MODEL_INPUTS]
    consts = [numpy_helper.from_array(np.array([reads], np.int64), "reads"),
              numpy_helper.from_array(np.array(0, np.int64), "zero"),
              numpy_helper.from_array(np.array(roi_threshold, np.int64), "roi_threshold")]
    consts += [numpy_helper.from_array(np.array(i, np.int64), f"index{i}") for i in range(reads)]
    consts += [numpy_helper.from_array(initial_peak.astype(np.float32), "state0_peak"),
               numpy_helper.from_array(np.array([*initial_peak.shape, 2], np.int64), "acc0_shape_base"),
               numpy_helper.from_array(np.array([0, 0, 1], np.int64), "acc0_shape_mask")]
    nodes = [helper.make_node("TopK", ["distances", "reads"], ["sorted_distances", "picked_slots"],
                              axis=0, largest=1, sorted=1, name="pick_slots"),
             # acc0 = zeros [NT, tt, max(labels) + 2]
             helper.make_node("ReduceMax", ["labels"], ["labels_max"], keepdims=0, name="labels_max"),
             helper.make_node("Mul", ["acc0_shape_mask", "labels_max"], ["acc0_shape_add"], name="acc0_shape_add"),
             helper.make_node("Add", ["acc0_shape_base", "acc0_shape_add"], ["acc0_shape"], name="acc0_shape"),
             helper.make_node("ConstantOfShape", ["acc0_shape"], ["state0_acc"], name="acc0",
                              value=numpy_helper.from_array(np.zeros(1, np.float32)))]
    state = [f"state0_{s}" for s in STATE]
    shared: dict[str, onnx.TensorProto] = {}
    for i in range(reads):
        new = [f"state{i + 1}_{s}" for s in STATE]
        nodes += _pick_nodes(i, pieces, state, new, shared)
        state = new
    nodes += inline(pieces.finish, "finish/", {"acc": state[1]}, {pieces.finish.graph.output[0].name: "probs"},
                    shared, "finish/")
    graph = helper.make_graph(nodes, "mast_memory_read", inputs,
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, output_shape)],
                              initializer=consts + list(shared.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="mast-export")
    model.ir_version = ir_version
    return model
