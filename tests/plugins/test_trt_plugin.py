"""The TensorRT plugin's glue without TensorRT: registered through a stand-in ``tensorrt.plugin``
that records the decorated functions, then checked against the rules TensorRT applies (argument
schema) and called with fixed shape expressions (kernel variant, launch grid, extra arguments)."""
from __future__ import annotations

import importlib.util
import inspect
import types
from dataclasses import dataclass

import pytest

from mast.core.errors import DependencyError, ModelError
from mast.plugins import trt_plugin
from mast.plugins.gpu_env import GpuInfo, TensorRT
from mast.plugins.kernel_spec import EXTRA_ARGS, KernelSpec
from mast.plugins.onnx_schema import ATTRIBUTES, PLUGIN_ID
from mast.plugins.ptx import PtxKernel

INPUTS = ["query", "keys", "labels", "distances"]


@dataclass(frozen=True)
class Dim:
    """A shape expression: a constant, or symbolic (``value`` None)."""

    value: int | None

    @property
    def is_constant(self) -> bool:
        return self.value is not None

    @property
    def constant_value(self) -> int:
        return self.value

    def __mul__(self, other: Dim) -> Dim:
        return Dim(self.value * other.value)


@dataclass
class Desc:
    shape_expr: tuple
    dtype: str


class LaunchParams:
    grid_x = block_x = shared_mem = None


def _fake_tensorrt() -> tuple[TensorRT, dict]:
    registry: dict = {}

    def decorator(kind):
        def take(plugin_id):
            def record(fn):
                registry[(kind, plugin_id)] = fn
                return fn
            return record
        return take

    trtp = types.SimpleNamespace(
        TensorDesc=Desc, AutoTuneCombination=lambda types_: ("combination", types_),
        KernelLaunchParams=LaunchParams, SymIntExprs=types.SimpleNamespace(from_tuple=tuple),
        SymInt32=lambda e: ("i32", e.value), cdiv=lambda a, b: -(-a.value // b),
        from_shape_expr=lambda shape, dtype: ("desc", shape, dtype),
        register=decorator("register"), autotune=decorator("autotune"), aot_impl=decorator("aot_impl"))
    trt = types.SimpleNamespace(float32="float32", float16="float16")
    return TensorRT(trt, trtp), registry


@pytest.fixture
def registered(monkeypatch):
    fake, registry = _fake_tensorrt()
    compiled: list[KernelSpec] = []

    def compile_stub(spec, arch):
        compiled.append((spec, arch))
        return PtxKernel("roi_attention_kernel", "// ptx", (), spec.num_warps, 512)

    monkeypatch.setattr(trt_plugin, "tensorrt", lambda: fake)
    monkeypatch.setattr(trt_plugin, "gpu_info", lambda: GpuInfo("NVIDIA H100", (9, 0)))
    monkeypatch.setattr(trt_plugin, "compile_ptx", compile_stub)
    trt_plugin.register_plugin.cache_clear()
    trt_plugin.register_plugin()
    yield registry, compiled
    trt_plugin.register_plugin.cache_clear()


def test_schemas_are_what_tensorrt_expects(registered):
    registry, _ = registered
    params = {kind: list(inspect.signature(fn).parameters) for (kind, pid), fn in registry.items() if pid == PLUGIN_ID}
    assert params["register"] == INPUTS + list(ATTRIBUTES)
    assert params["autotune"] == INPUTS + ["outputs"]
    assert params["aot_impl"] == INPUTS + list(ATTRIBUTES) + ["outputs", "tactic"]
    annotations = inspect.signature(registry[("register", PLUGIN_ID)]).parameters
    assert all(annotations[n].annotation is int for n in ATTRIBUTES)   # resolved types, not strings


def _call_aot(registry, keys_dtype="float16", slots=Dim(7)):
    query = Desc((Dim(1), Dim(64), Dim(120), Dim(214)), keys_dtype)
    keys = Desc((slots, Dim(64), Dim(120), Dim(214)), keys_dtype)
    labels, distances = Desc((), "int32"), Desc((), "int32")
    return registry[("aot_impl", PLUGIN_ID)](query, keys, labels, distances, 12, 15, 15, 4, 16, (), 0)


def test_aot_impl_hands_over_the_kernel(registered):
    registry, compiled = registered
    name, ptx, launch, extra = _call_aot(registry)
    spec, arch = compiled[-1]
    assert (name, ptx, arch) == ("roi_attention_kernel", "// ptx", 90)
    assert (spec.n_slots, spec.key_dim, spec.n_labels, spec.key_dtype, spec.label_dtype) == (7, 64, 16, "fp16", "i32")
    assert spec.attention.radius == 12 and spec.attention.max_dilation == 4
    assert launch.grid_x == -(-120 // spec.tile[0]) * -(-214 // spec.tile[1]) and launch.block_x == 32 * spec.num_warps and launch.shared_mem == 512
    assert len(extra) == len(EXTRA_ARGS) and extra == (("i32", 120), ("i32", 214))


def test_output_shape_and_formats(registered):
    registry, _ = registered
    query = Desc((Dim(1), Dim(64), Dim(30), Dim(54)), "float32")
    assert registry[("register", PLUGIN_ID)](query, query, None, None, 12, 15, 15, 4, 5) == \
        ("desc", (5, Dim(30), Dim(54)), "float32")
    assert registry[("autotune", PLUGIN_ID)](query, query, None, None, ()) == \
        [("combination", "FP32|FP16, FP32|FP16, INT32, INT32, FP32")]


def test_dynamic_bank_shape_is_refused(registered):
    registry, _ = registered
    with pytest.raises(ModelError, match="must be fixed at export"):
        _call_aot(registry, slots=Dim(None))


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_without_tensorrt_register_is_one_line():
    trt_plugin.register_plugin.cache_clear()
    with pytest.raises(DependencyError, match="pip install 'mast-tracker\\[gpu\\]'"):
        trt_plugin.register_plugin()
