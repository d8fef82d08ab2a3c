"""Shared fixtures: where the real data lives (``../shared`` beside the repository, or $MAST_SHARED)."""
from __future__ import annotations

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
