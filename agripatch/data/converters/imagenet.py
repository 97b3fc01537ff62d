"""ImageNet-1k (ILSVRC 2012, or Kaggle's CLS-LOC layout): train/ wnid folders, val/ as folders or flat with
LOC_val_solution.csv, and LOC_synset_mapping.txt for human class names."""

from __future__ import annotations

import csv
import re
from pathlib import Path

from agripatch.data.cards import DatasetCard
from agripatch.data.converters.layout import Item, Plan, class_folders, is_image, items_of, layout_error
from agripatch.data.converters.registry import register_converter
from agripatch.errors import DatasetError


_WNID = re.compile(r"^n\d{8}$")


@register_converter("imagenet")
def imagenet(card: DatasetCard, src: Path) -> Plan:
    """Where every image of a imagenet download at ``src`` goes (the layout is the module\'s and the card\'s)."""
    kaggle = src / "ILSVRC" / "Data" / "CLS-LOC"
    base = kaggle if (kaggle / "train").is_dir() else src
    train = class_folders(base / "train")
    if not train:
        raise layout_error(card, src, "no class folders with images in train/")
    bad = [c for c in train if not _WNID.match(c)]
    if bad:
        raise layout_error(card, src, f"train/ folders are not WordNet ids (n + 8 digits): {', '.join(bad[:5])}")
    items = items_of(train, "train", "train")
    val_dir = base / "val"
    val = class_folders(val_dir)
    if val:
        items += items_of(val, "val", "val")
    else:
        items += _imagenet_flat_val(card, src, base, val_dir)
    names = None
    mapping = next((p for p in (src / "LOC_synset_mapping.txt", base / "LOC_synset_mapping.txt") if p.is_file()), None)
    if mapping is not None:
        names = {}
        for line in mapping.read_text(encoding="utf-8").splitlines():
            wnid, _, human = line.strip().partition(" ")
            if wnid:
                names[wnid] = human.strip()
    return Plan(items, carve=(), class_names=names)


def _imagenet_flat_val(card: DatasetCard, src: Path, base: Path, val_dir: Path) -> list[Item]:
    solution = next((p for p in (src / "LOC_val_solution.csv", base / "LOC_val_solution.csv") if p.is_file()), None)
    flat = {p.stem: p for p in sorted(val_dir.iterdir()) if is_image(p)} if val_dir.is_dir() else {}
    if not flat or solution is None:
        problem = "flat val/ without LOC_val_solution.csv" if flat else "val/ has neither class folders nor flat images"
        raise layout_error(card, src, problem)
    items, missing = [], []
    with solution.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            wanted = "ImageId,PredictionString"
            raise layout_error(card, src, f"{solution.name} has columns {reader.fieldnames}, not {wanted}")
        for line, row in enumerate(reader, start=2):
            image_id, tokens = (row["ImageId"] or "").strip(), (row["PredictionString"] or "").split()
            if not tokens or not _WNID.match(tokens[0]):
                raise DatasetError(f"imagenet: {solution.name} line {line}: PredictionString must start with a wnid")
            if image_id in flat:
                path = flat[image_id]
                items.append(Item(path, tokens[0], "val", "val", path.name))
            else:
                missing.append(image_id)
    if missing:
        raise layout_error(
            card, src, f"{solution.name} names {len(missing)} image(s) not in val/, e.g. {', '.join(missing[:5])}"
        )
    return items
