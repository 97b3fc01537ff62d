"""The converter registry: one function per dataset card that reads its published download into a :class:`Plan`
(like timm's ``@register_model``: a converter module registers itself by name)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agripatch.data.cards import DatasetCard
from agripatch.data.converters.layout import Plan

__all__ = ["CONVERTERS", "Converter", "register_converter"]

Converter = Callable[[DatasetCard, Path], Plan]

#: card name -> converter, filled by :func:`register_converter` as the converter modules load.
CONVERTERS: dict[str, Converter] = {}


def register_converter(name: str) -> Callable[[Converter], Converter]:
    """Register ``fn`` as the converter of the dataset card ``name`` (one per card; a second is a bug)."""

    def add(fn: Converter) -> Converter:
        if name in CONVERTERS:
            raise ValueError(f"a converter for {name!r} is already registered")
        CONVERTERS[name] = fn
        return fn

    return add
