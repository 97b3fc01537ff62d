"""PlantVillage (Mohanty et al.): class folders under color/ (or raw/color/); val and test are carved."""

from __future__ import annotations

from pathlib import Path

from agripatch.data.cards import DatasetCard
from agripatch.data.converters.layout import Plan, class_folders, items_of, layout_error
from agripatch.data.converters.registry import register_converter


@register_converter("plantvillage")
def plantvillage(card: DatasetCard, src: Path) -> Plan:
    """Where every image of a plantvillage download at ``src`` goes (the layout is the module\'s and the card\'s)."""
    root = next((r for r in (src / "color", src / "raw" / "color") if r.is_dir()), src)
    folders = class_folders(root)
    if not folders:
        raise layout_error(card, src, f"no class folder with images directly inside {str(root)!r}")
    return Plan(items_of(folders, None, ""), carve=("val", "test"))
