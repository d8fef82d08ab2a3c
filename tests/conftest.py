"""Shared fixtures: where the real data lives (``../shared`` beside the repository, or $MAST_SHARED)."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _shared_dir() -> Path:
    return Path(os.environ.get("MAST_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder (data, parity fixture); tests that need it skip with the reason when absent."""
    path = _shared_dir()
    if not (path / "data").is_dir():
        pytest.skip(f"shared data not found at {path} (set MAST_SHARED to the folder holding data/ and parity/)")
    return path


@pytest.fixture(scope="session")
def data_dir(shared_dir: Path) -> Path:
    return shared_dir / "data"


@pytest.fixture(scope="session")
def parity_dir(shared_dir: Path) -> Path:
    path = shared_dir / "parity"
    if not (path / "reference").is_dir():
        pytest.skip(f"parity fixture not found at {path}")
    return path


@pytest.fixture(scope="session")
def parity_weights(parity_dir: Path, tmp_path_factory) -> Path:
    """Official-format weights made by the parity fixture's own script (deterministic, a colour
    similarity kernel: they track real clips, unlike random weights)."""
    import torch

    spec = importlib.util.spec_from_file_location("make_parity_weights", parity_dir / "make_parity_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    state, _ = module.make()
    path = tmp_path_factory.mktemp("parity") / "weights.pt"
    torch.save({"state_dict": state}, path)
    return path
