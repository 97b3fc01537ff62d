"""Dataset converters, one module per dataset card: each reads a public download in the layout its card describes
and plans where every image goes (:mod:`agripatch.data.prepare` places them).

    from agripatch.data.converters import converter_for
    plan = converter_for("ibean")(card, Path("downloads/ibean"))
"""

from __future__ import annotations

from agripatch.data.converters import cassava, ibean, imagenet, plantdoc, plantvillage  # noqa: F401 - they register
from agripatch.data.converters.layout import Item, Plan, layout_error
from agripatch.data.converters.registry import CONVERTERS, Converter, register_converter

__all__ = ["CONVERTERS", "Converter", "Item", "Plan", "converter_for", "layout_error", "register_converter"]


def converter_for(name: str) -> Converter:
    """The converter of dataset card ``name`` (KeyError naming the known ones otherwise)."""
    try:
        return CONVERTERS[name]
    except KeyError:
        raise KeyError(f"no converter for dataset {name!r}; known: {', '.join(sorted(CONVERTERS))}") from None
