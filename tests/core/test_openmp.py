"""The OpenMP defaults of the tracking tools: set before torch loads, never over a user's value."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from mast.core.openmp import OPENMP_DEFAULTS, openmp_defaults


def test_defaults_fill_only_unset_variables(monkeypatch):
    for name in OPENMP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "123")
    openmp_defaults()
    assert os.environ["GOMP_SPINCOUNT"] == "123"
    assert all(os.environ[name] for name in OPENMP_DEFAULTS)


@pytest.mark.parametrize("tool", ["mast.runtime.run", "mast.runtime.serve", "mast.runtime.bench",
                                  "mast.evaluation.cli"])
def test_the_tools_set_them_before_torch_is_imported(tool):
    """Each tracking tool's main (its console script, and ``python -m``) with --help in a fresh
    interpreter: the defaults are set while torch is not loaded, and the environment holds them."""
    code = ("import os, sys\n"
            "import mast.core.openmp as o\n"
            "real = o.openmp_defaults\n"
            "def check():\n"
            "    assert 'torch' not in sys.modules, 'torch loaded before the OpenMP defaults'\n"
            "    real()\n"
            f"import {tool} as tool\n"
            "tool.openmp_defaults = check\n"
            "try:\n"
            "    tool.main(['--help'])\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(os.environ['GOMP_SPINCOUNT'])\n")
    env = {k: v for k, v in os.environ.items() if k not in OPENMP_DEFAULTS}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == OPENMP_DEFAULTS["GOMP_SPINCOUNT"]
