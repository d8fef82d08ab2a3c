"""AOT compilation of the kernel to PTX for sm_90 on a machine without a GPU: the entry point and
the parameter list that the TensorRT plugin's launcher passes (inputs, int32 extras, output).

Compiled in a child process without ``TRITON_INTERPRET`` (the kernel must be a real ``triton.jit``
function there; this test session may run it under the interpreter)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mast.plugins.kernel_spec import ARGS, EXTRA_ARGS, INPUTS, KERNEL_NAME, OUTPUTS
from mast.plugins.ptx import HIDDEN_PARAMS, entry_params, strip_hidden_params

CHILD = r"""
import json, re, subprocess, sys, tempfile
from pathlib import Path
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from mast.core.config import AttentionConfig
from mast.plugins.kernel_spec import KernelSpec
from mast.plugins.ptx import compile_ptx, entry_params
from mast.plugins.roi_kernel import roi_attention_kernel

out = []
for spec in (KernelSpec(), KernelSpec(key_dtype="fp16", n_labels=256, attention=AttentionConfig(radius=6))):
    raw = triton.compile(ASTSource(roi_attention_kernel, spec.signature(), spec.constexprs()),
                         target=GPUTarget("cuda", 90, 32), options={"num_warps": spec.num_warps})
    k = compile_ptx(spec, 90)
    ptxas = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "ptxas"
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "k.ptx").write_text(k.ptx)
        run = subprocess.run([str(ptxas), "-v", "-arch=sm_90a", str(Path(d) / "k.ptx"), "-o", str(Path(d) / "k.cubin")],
                             capture_output=True, text=True)
    spills = [int(n) for n in re.findall(r"(\d+) bytes spill stores", run.stderr)]
    out.append({"raw_params": entry_params(raw.asm["ptx"], raw.metadata.name), "name": k.name,
                "params": k.params, "target": k.ptx.split(".target")[1].split()[0], "ptxas": run.returncode,
                "ptxas_err": run.stderr[-500:], "threads": k.block_threads, "warps": spec.num_warps, "shared": k.shared,
                "labels": spec.n_labels, "spills": spills})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def compiled() -> list[dict]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, "-c", CHILD], check=False, capture_output=True, text=True, env=env, timeout=300,
                         cwd=Path(__file__).parent)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_entry_point_and_params(compiled):
    expected = [("u64", f"{KERNEL_NAME}_param_{i}") for i in range(len(INPUTS))]
    expected += [("u32", f"{KERNEL_NAME}_param_{len(INPUTS) + i}") for i in range(len(EXTRA_ARGS))]
    expected += [("u64", f"{KERNEL_NAME}_param_{len(INPUTS) + len(EXTRA_ARGS)}")] * len(OUTPUTS)
    for k in compiled:
        assert k["name"] == KERNEL_NAME
        assert [tuple(p) for p in k["params"]] == expected
        assert k["target"] == "sm_90a"
        assert k["threads"] == 32 * k["warps"] and k["shared"] >= 0


def test_triton_appends_two_hidden_pointers(compiled):
    """The fact the plugin works around: Triton's own PTX has two extra u64 parameters at the end."""
    for k in compiled:
        raw = [tuple(p) for p in k["raw_params"]]
        assert len(raw) == len(ARGS) + HIDDEN_PARAMS
        assert [t for t, _ in raw[len(ARGS):]] == ["u64"] * HIDDEN_PARAMS


def test_stripped_ptx_assembles(compiled):
    for k in compiled:
        assert k["ptxas"] == 0, k["ptxas_err"]


def test_kernel_register_spills(compiled):
    """On sm_90 the default variant (16 labels) keeps everything in registers; the largest (256
    labels, fp16) spills less than 1 KiB a thread."""
    for k in compiled:
        limit = 0 if k["labels"] == 16 else 1024
        assert k["spills"] and max(k["spills"]) <= limit, (k["labels"], k["ptxas_err"])


PTX = """
.visible .entry kern(
\t.param .u64 .ptr .global .align 1 kern_param_0,
\t.param .u32 kern_param_1,
\t.param .u64 .ptr .global .align 1 kern_param_2,
\t.param .u64 .ptr .global .align 1 kern_param_3
)
{
\tld.param.u64 %rd1, [kern_param_0];
\tld.param.u32 %r1, [kern_param_1];
\tBODY
}
"""


def test_strip_hidden_params_unit():
    ptx = PTX.replace("BODY", "ret;")
    stripped = strip_hidden_params(ptx, "kern", 2)
    assert entry_params(stripped, "kern") == [("u64", "kern_param_0"), ("u32", "kern_param_1")]
    assert stripped.count("ld.param") == 2


def test_strip_refuses_a_used_hidden_param():
    ptx = PTX.replace("BODY", "ld.param.u64 %rd2, [kern_param_2];")
    with pytest.raises(ValueError, match="kern_param_2"):
        strip_hidden_params(ptx, "kern", 2)
