"""``mast_trt.onnx``: the graph TensorRT builds the engine from, checked without TensorRT: ONNX
checker, shape inference, and a run in onnxruntime with the plugin node as a Python custom op
(backed by the reference attention) against ``encoder.onnx`` + ``memory_read.onnx``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mast.core.model import key_encoder
from mast.core.metadata import ENCODER_FILE, MEMORY_READ_FILE, METADATA_FILE, TRT_ONNX_FILE, file_hash
from mast.export.onnx_export import ExportConfig, write_models
from mast.plugins.onnx_schema import DOMAIN, OP_TYPE
from mast.plugins.ort_custom_op import session_options

CFG = ExportConfig(height=48, width=72, max_objects=3)   # keys 64 x 12 x 18, 7 slots, 4 labels


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trt") / "model"
    write_models(out, key_encoder("random"), CFG, "random", "random-seed-0")
    return out


@pytest.fixture(scope="module")
def trt_onnx(export_dir: Path) -> onnx.ModelProto:
    return onnx.load(str(export_dir / TRT_ONNX_FILE))


def test_checker_and_plugin_node(trt_onnx, export_dir):
    onnx.checker.check_model(trt_onnx, full_check=True)
    nodes = [n for n in trt_onnx.graph.node if n.op_type == OP_TYPE]
    assert len(nodes) == 1 and nodes[0].domain == DOMAIN
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in nodes[0].attribute}
    assert attrs == {"plugin_namespace": b"mast", "plugin_version": b"1", "aot": 1, "radius": 12,
                     "roi_threshold": 15, "dilation_step": 15, "max_dilation": 4, "n_labels": 4}
    assert {(o.domain, o.version) for o in trt_onnx.opset_import} >= {("", CFG.opset), (DOMAIN, 1)}
    meta = json.loads((export_dir / METADATA_FILE).read_text())
    assert meta["files"][TRT_ONNX_FILE] == file_hash(export_dir / TRT_ONNX_FILE)


def test_shape_inference(trt_onnx):
    inferred = onnx.shape_inference.infer_shapes(trt_onnx, check_type=True, strict_mode=True)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.input, *inferred.graph.output]}
    assert shapes == {"frame": [1, 48, 72, 3], "keys": [7, 64, 12, 18], "labels": [7, 12, 18], "distances": [7],
                      "key": [1, 64, 12, 18], "probs": [4, 12, 18]}


@pytest.mark.parametrize("distances", [[1, 3, 5, 0, 0, 0, 0], [0, 50, 0, 17, 1, 0, 4], [20, 0, 0, 0, 0, 0, 0]])
def test_runs_in_onnxruntime_as_memory_read(export_dir, distances):
    cpu = ["CPUExecutionProvider"]
    trt = ort.InferenceSession(str(export_dir / TRT_ONNX_FILE), session_options(), providers=cpu)
    enc = ort.InferenceSession(str(export_dir / ENCODER_FILE), providers=cpu)
    read = ort.InferenceSession(str(export_dir / MEMORY_READ_FILE), providers=cpu)
    rng = np.random.default_rng(sum(distances))
    frame = rng.integers(0, 256, (1, 48, 72, 3), dtype=np.uint8)
    key = enc.run(None, {"frame": frame})[0]
    keys = (key + 0.5 * rng.standard_normal((7, *key.shape[1:]))).astype(np.float32)
    labels = rng.integers(0, 4, (7, 12, 18)).astype(np.int32)
    dist = np.array(distances, np.int32)
    got_key, got = trt.run(None, {"frame": frame, "keys": keys, "labels": labels, "distances": dist})
    want = read.run(None, {"query": key, "keys": keys, "labels": labels.astype(np.int64),
                           "distances": dist.astype(np.int64)})[0]
    np.testing.assert_array_equal(got_key, key)
    assert got.shape == want.shape == (4, 12, 18)
    np.testing.assert_allclose(got, want, atol=1e-4, rtol=0)
