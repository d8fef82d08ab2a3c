"""The Triton kernel runs on the GPU when torch sees one, else on CPU tensors under Triton's
interpreter: ``TRITON_INTERPRET=1`` must be set before ``mast.plugins.roi_kernel`` is imported
(``triton.jit`` reads it when it decorates)."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def device() -> torch.device:
    """Where the kernel's tensors live: cuda when available, else cpu (interpreter)."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
