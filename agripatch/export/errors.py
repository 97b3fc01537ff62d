"""Errors of `agripatch export` (the CLI prints them as one line)."""

from __future__ import annotations

from agripatch.errors import AgripatchError

__all__ = ["ExportError"]


class ExportError(AgripatchError):
    """An export cannot be made as asked (unknown format, existing output folder, failed conversion, ...)."""
