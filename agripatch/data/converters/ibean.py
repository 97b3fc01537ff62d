"""iBean (Makerere AI Lab): train/, validation/ and test/ class folders, each split kept as published."""

from __future__ import annotations

from pathlib import Path

from agripatch.data.cards import DatasetCard
from agripatch.data.converters.layout import Item, Plan, class_folders, items_of, layout_error
from agripatch.data.converters.registry import register_converter


@register_converter("ibean")
def ibean(card: DatasetCard, src: Path) -> Plan:
    """Where every image of a ibean download at ``src`` goes (the layout is the module\'s and the card\'s)."""
    train = class_folders(src / "train")
    if not train:
        raise layout_error(card, src, "no class folders with images in train/")
    items: list[Item] = []
    carve = []
    for published, split in (("validation", "val"), ("test", "test")):
        folders = class_folders(src / published)
        if folders:
            items += items_of(folders, split, published)
        elif (src / published).exists():
            raise layout_error(card, src, f"{published}/ holds no class folders with images")
        else:
            carve.append(split)
    items += items_of(train, None if carve else "train", "train")
    return Plan(items, carve=tuple(carve))
