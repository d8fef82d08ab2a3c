"""The OpenMP defaults of the tracking tools: set before torch loads, never over a user's value."""
from __future__ import annotations

import subprocess
import sys

from mast.core.openmp import OPENMP_DEFAULTS, openmp_defaults


def test_defaults_fill_only_unset_variables(monkeypatch):
    for name in OPENMP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GOMP_SPINCOUNT", "123")
    openmp_defaults()
    import os
    assert os.environ["GOMP_SPINCOUNT"] == "123"
    assert all(os.environ[name] for name in OPENMP_DEFAULTS)


def test_the_tools_set_them_before_torch_is_imported():
    """mast-bench's entry point (mast.launch.bench) with --help: torch is not yet imported when the
    defaults are set, and the tool sees them."""
    code = ("import os, sys\n"
            "import mast.core.openmp as o\n"
            "real = o.openmp_defaults\n"
            "def check():\n"
            "    assert 'torch' not in sys.modules, 'torch loaded before the OpenMP defaults'\n"
            "    real()\n"
            "import mast.launch as l\n"
            "l.openmp_defaults = check\n"
            "sys.argv = ['mast-bench', '--help']\n"
            "try:\n"
            "    l.bench()\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(os.environ['GOMP_SPINCOUNT'])\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "GOMP_SPINCOUNT"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == OPENMP_DEFAULTS["GOMP_SPINCOUNT"]
