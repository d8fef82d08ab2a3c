"""Console-script entry points of the tracking tools (``mast-run``, ``mast-serve``, ``mast-eval``,
``mast-bench``): each sets the OpenMP defaults of :mod:`mast.core.openmp` (before torch loads),
then imports and runs its tool. Importing this module loads nothing heavy and changes nothing."""
from __future__ import annotations

import importlib

from mast.core.openmp import openmp_defaults


def _tool(module: str) -> None:
    openmp_defaults()
    importlib.import_module(module).main()


def run() -> None:
    """``mast-run``."""
    _tool("mast.runtime.run")


def serve() -> None:
    """``mast-serve``."""
    _tool("mast.runtime.serve")


def evaluate() -> None:
    """``mast-eval``."""
    _tool("mast.evaluation.cli")


def bench() -> None:
    """``mast-bench``."""
    _tool("mast.runtime.bench")
