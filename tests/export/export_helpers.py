"""Helpers for the export tests (a module of its own: `from conftest import ...` would find another folder's)."""

from __future__ import annotations

import pytest


def needs_onnx() -> None:
    """Skip a test when the [onnx] extra is not installed."""
    for module in ("onnx", "onnxruntime", "onnxscript"):
        pytest.importorskip(module, reason=f"{module} not installed: pip install 'agripatch[onnx]'")
