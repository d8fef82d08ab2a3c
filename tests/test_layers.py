"""One-way layers (docs/DESIGN.md, "Layers and their direction"), enforced with import-linter.

The contracts live in pyproject.toml (``[tool.importlinter]``); ``lint-imports`` runs the same
check from a shell. A package that imports from a layer above it (a cycle in the making), or a new
top-level package left out of the layers, fails here and so in CI.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    tomllib = pytest.importorskip("tomli")

importlinter_cli = pytest.importorskip("importlinter.cli", reason="import-linter is a dev dependency: pip install -e '.[dev]'")

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"


def _config() -> dict:
    return tomllib.loads(PYPROJECT.read_text())


def test_layer_contracts_are_kept(capsys):
    code = importlinter_cli.lint_imports(config_filename=str(PYPROJECT), no_cache=True, no_logo=True)
    report = capsys.readouterr().out
    assert code == 0, f"an import breaks the layers of docs/DESIGN.md:\n{report}"


def test_every_package_has_a_layer():
    linter = _config()["tool"]["importlinter"]
    assert linter["root_package"] == "mast"
    packages = {f"mast.{p.parent.name}" for p in (REPO / "mast").glob("*/__init__.py")}
    (layers,) = [c["layers"] for c in linter["contracts"] if c["type"] == "layers"]
    assert set(layers) == packages
