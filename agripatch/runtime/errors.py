"""Errors of the ONNX runtime and its optional dependencies (torch-free)."""

from __future__ import annotations

import importlib
from types import ModuleType

from agripatch.errors import AgripatchError

__all__ = ["ExportFolderError", "MissingDependencyError", "ONNX_INSTALL", "require"]

#: How to get the ONNX packages (the end of the missing-package message).
ONNX_INSTALL = "run: pip install 'agripatch[onnx]'"


class MissingDependencyError(AgripatchError):
    """An optional package a command needs is not installed; the message says which pip install to run."""


class ExportFolderError(AgripatchError):
    """A folder is not a usable `agripatch export` folder (no cascade.json, wrong format, missing graph)."""


def require(module: str, what: str, install: str = ONNX_INSTALL) -> ModuleType:
    """Import an optional dependency, or raise :class:`MissingDependencyError` naming the pip install that fixes it.

    ``what`` says who needs it (e.g. "the onnxruntime backend") and ``install`` how to get it, so the one-line
    message is actionable.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingDependencyError(f"{what} needs the Python package {module!r}, which is not installed "
                                     f"({error}); {install}") from None
