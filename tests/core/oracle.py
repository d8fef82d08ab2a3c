"""The test oracle: the attention's specification, :mod:`mast.core.attention_spec` (kept under this
name for the tests that load it by path)."""
from __future__ import annotations

from mast.core.attention_spec import bilinear, specified_attention

oracle_attention = specified_attention

__all__ = ["bilinear", "oracle_attention"]
