"""Compile the ROI attention kernel ahead of time to PTX (no GPU needed), for the TensorRT plugin.

Triton 3.6 appends two hidden pointer parameters (a global scratch and a profile scratch buffer)
to every kernel after the declared ones. TensorRT's AOT launcher passes only the declared
arguments (inputs, int32 extra arguments, outputs), so :func:`compile_ptx` checks that the kernel
needs neither buffer (both scratch sizes 0, neither parameter read in the body) and removes the two
trailing ``.param`` entries: the entry point then takes exactly the arguments TensorRT passes.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from mast.core.errors import DependencyError
from mast.plugins.kernel_spec import ARGS, KERNEL_NAME, KernelSpec

HIDDEN_PARAMS = 2  # Triton 3.6: global scratch, profile scratch
PTX_PARAM = re.compile(r"\.param\s+\.(?P<type>[us]\d+)(?:\s+\.ptr\s+\.global\s+\.align\s+\d+)?\s+(?P<name>\w+)")
WARP_SIZE = 32


@dataclass(frozen=True)
class PtxKernel:
    """A compiled kernel as TensorRT takes it.

    name:      the PTX entry point.
    ptx:       PTX text (hidden scratch parameters removed).
    params:    the entry point's parameters as (PTX type, name), in order.
    num_warps: threads per block / 32.
    shared:    dynamic shared memory bytes per block.
    """

    name: str
    ptx: str
    params: tuple[tuple[str, str], ...]
    num_warps: int
    shared: int

    @property
    def block_threads(self) -> int:
        return self.num_warps * WARP_SIZE


def _entry(ptx: str, name: str) -> re.Match:
    """The match of entry point ``name``'s header; group ``params`` is its parameter list."""
    match = re.search(rf"\.entry\s+{re.escape(name)}\s*\((?P<params>[^)]*)\)", ptx)
    if match is None:
        raise ValueError(f"no entry point {name} in the PTX")
    return match


def entry_params(ptx: str, name: str) -> list[tuple[str, str]]:
    """The ``.param`` list (PTX type, name) of entry point ``name`` in ``ptx``."""
    return [(m["type"], m["name"]) for m in PTX_PARAM.finditer(_entry(ptx, name)["params"])]


def strip_hidden_params(ptx: str, name: str, n_declared: int) -> str:
    """``ptx`` with the parameters of ``name`` after the first ``n_declared`` removed; ValueError if
    the kernel reads any of them."""
    header = _entry(ptx, name)
    params = list(PTX_PARAM.finditer(header["params"]))
    hidden = [m["name"] for m in params[n_declared:]]
    used = [p for p in hidden if re.search(rf"\b{p}\b", ptx[header.end():])]
    if used:
        raise ValueError(f"kernel {name} reads its hidden parameter(s) {used}: they cannot be dropped")
    if not hidden:
        return ptx
    cut = header.start("params") + params[n_declared - 1].end()
    return ptx[:cut] + "\n" + ptx[header.end("params"):]


def compile_ptx(spec: KernelSpec, arch: int = 90) -> PtxKernel:
    """PTX of the kernel for ``spec`` and compute capability ``arch`` (e.g. 90 for sm_90)."""
    try:
        import triton  # noqa: PLC0415 - optional dependency
        from triton.backends.compiler import GPUTarget  # noqa: PLC0415
        from triton.compiler import ASTSource  # noqa: PLC0415
        from triton.runtime.jit import JITFunction  # noqa: PLC0415
    except ImportError as exc:
        raise DependencyError(f"compiling the ROI attention kernel needs Triton ({exc}): "
                              "pip install 'mast-tracker[gpu]'") from exc
    from mast.plugins.roi_kernel import roi_attention_kernel  # noqa: PLC0415 - imports triton

    if not isinstance(roi_attention_kernel, JITFunction):
        raise DependencyError("the ROI attention kernel was loaded under TRITON_INTERPRET=1 and cannot be "
                              "compiled: unset TRITON_INTERPRET")
    compiled = triton.compile(ASTSource(roi_attention_kernel, spec.signature(), spec.constexprs()),
                              target=GPUTarget("cuda", arch, WARP_SIZE), options={"num_warps": spec.num_warps})
    meta = compiled.metadata
    if meta.global_scratch_size or meta.profile_scratch_size:
        raise ValueError(f"kernel {meta.name} needs scratch memory (global {meta.global_scratch_size} B, "
                         f"profile {meta.profile_scratch_size} B), which TensorRT's launcher does not pass")
    if meta.name != KERNEL_NAME:
        raise ValueError(f"compiled entry point is {meta.name}, expected {KERNEL_NAME}")
    ptx = strip_hidden_params(compiled.asm["ptx"], meta.name, len(ARGS))
    return PtxKernel(meta.name, ptx, tuple(entry_params(ptx, meta.name)), meta.num_warps, meta.shared)
