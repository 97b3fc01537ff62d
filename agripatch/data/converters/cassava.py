"""Cassava leaf disease (Kaggle 2020): train.csv (image_id,label), the label-name map and train_images/."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from agripatch.data.cards import DatasetCard
from agripatch.data.converters.layout import Item, Plan, layout_error
from agripatch.data.converters.registry import register_converter
from agripatch.errors import DatasetError


def _folder_name(disease: str) -> str:
    """Filesystem-safe class folder for a cassava label: the abbreviation in parentheses, else a slug."""
    match = re.search(r"\(([A-Za-z0-9]+)\)", disease)
    if match:
        return match.group(1).lower()
    return re.sub(r"[^a-z0-9]+", "_", disease.lower()).strip("_") or "unnamed"


@register_converter("cassava")
def cassava(card: DatasetCard, src: Path) -> Plan:
    """Where every image of a cassava download at ``src`` goes (the layout is the module\'s and the card\'s)."""
    table, mapping, images = src / "train.csv", src / "label_num_to_disease_map.json", src / "train_images"
    absent = [p.name for p in (table, mapping, images) if not p.exists()]
    if absent:
        raise layout_error(card, src, f"missing {', '.join(absent)}")
    try:
        diseases = json.loads(mapping.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cassava: cannot read {str(mapping)!r}: {exc}") from exc
    if not isinstance(diseases, dict) or not all(isinstance(v, str) for v in diseases.values()):
        raise DatasetError(f"cassava: {str(mapping)!r} must map label numbers to names, like {{\"0\": \"...\"}}")
    folders = {str(k): _folder_name(v) for k, v in diseases.items()}
    if len(set(folders.values())) != len(folders):
        raise DatasetError(f"cassava: disease names in {str(mapping)!r} give clashing folder names {folders}")
    items: list[Item] = []
    missing: list[str] = []
    seen: set[str] = set()
    with table.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"image_id", "label"} <= set(reader.fieldnames):
            raise layout_error(card, src, f"train.csv has columns {reader.fieldnames}, not image_id,label")
        for line, row in enumerate(reader, start=2):
            image_id, label = (row["image_id"] or "").strip(), (row["label"] or "").strip()
            if not image_id or Path(image_id).name != image_id or image_id.startswith("."):
                raise DatasetError(f"cassava: train.csv line {line}: bad image_id {image_id!r}")
            if label not in folders:
                raise DatasetError(
                    f"cassava: train.csv line {line}: label {label!r} is not in {mapping.name} ({', '.join(folders)})"
                )
            if image_id in seen:
                raise DatasetError(f"cassava: train.csv line {line}: image {image_id!r} is listed twice")
            seen.add(image_id)
            path = images / image_id
            if path.is_file():
                items.append(Item(path, folders[label], None, "", image_id))
            else:
                missing.append(image_id)
    if missing:
        raise layout_error(
            card, src, f"train.csv names {len(missing)} image(s) not in train_images/, e.g. {', '.join(missing[:5])}"
        )
    if not items:
        raise layout_error(card, src, "train.csv lists no images")
    return Plan(items, carve=("val", "test"))
