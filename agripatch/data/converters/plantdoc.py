"""PlantDoc: published train/ and test/ class folders; val is carved from train."""

from __future__ import annotations

from pathlib import Path

from agripatch.data.cards import DatasetCard
from agripatch.data.converters.layout import Plan, class_folders, items_of, layout_error
from agripatch.data.converters.registry import register_converter


@register_converter("plantdoc")
def plantdoc(card: DatasetCard, src: Path) -> Plan:
    """Where every image of a plantdoc download at ``src`` goes (the layout is the module\'s and the card\'s)."""
    train, test = class_folders(src / "train"), class_folders(src / "test")
    if not train or not test:
        missing = " and ".join(s for s, f in (("train/", train), ("test/", test)) if not f)
        raise layout_error(card, src, f"no class folders with images in {missing}")
    return Plan(items_of(train, None, "train") + items_of(test, "test", "test"), carve=("val",))
