"""Data shipped inside the package: the training recipes (``recipes/*.yaml``), the dataset cards
(``datasets/*.yaml``), the shipped symptom map (``symptom_maps/``) and the review page's stylesheet and script (``review/``). They are package data, so an editable and a wheel install find them the same way."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["resource_dir"]


def resource_dir(name: str) -> Path:
    """The folder of shipped resources ``name`` (``recipes``, ``datasets`` or ``review``) inside the installed package."""
    return Path(str(files(__name__) / name))
