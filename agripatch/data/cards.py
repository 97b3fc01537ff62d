"""Dataset cards: what each public dataset is (source, licence, citation, classes, sizes, raw layout).

A card (``agripatch/resources/datasets/<name>.yaml``) is read and validated here;
:mod:`agripatch.data.prepare` turns a download in the card's raw layout into an ImageFolder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from agripatch.errors import DatasetError

if TYPE_CHECKING:  # splits/folder import torch; load them only when prepare needs them
    pass

MODES = ("hardlink", "symlink", "copy")
SPLIT_NAMES = ("train", "val", "test")
NUM_IMAGES_KEYS = (*SPLIT_NAMES, "total")


# ----------------------------------------------------------------------------------------- cards


@dataclass(frozen=True)
class DatasetCard:
    """One dataset's facts: provenance, licence, classes, sizes and the raw layout `prepare` reads."""

    name: str
    title: str
    source: str
    licence: str
    citation: str
    description: str
    num_classes: int
    num_images: dict[str, int | None]
    image_size: str
    raw_layout: str
    official_splits: dict[str, str]
    notes: str
    classes: list[str] | None = None
    class_names_from: str | None = None
    mean: list[float] | None = None
    std: list[float] | None = None


def _is_str(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_rgb(v: Any) -> bool:
    return v is None or (
        isinstance(v, list) and len(v) == 3 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    )


# key -> (check, what the check wants); keys after `notes` in DatasetCard are optional.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "name": (_is_str, "a non-empty string"),
    "title": (_is_str, "a non-empty string"),
    "source": (_is_str, "a non-empty string (URL)"),
    "licence": (_is_str, "a non-empty string"),
    "citation": (_is_str, "a non-empty string"),
    "description": (_is_str, "a non-empty string"),
    "num_classes": (lambda v: _is_count(v) and v > 0, "a positive integer"),
    "num_images": (
        lambda v: isinstance(v, dict)
        and all(k in NUM_IMAGES_KEYS and (x is None or _is_count(x)) for k, x in v.items()),
        f"a mapping from {', '.join(NUM_IMAGES_KEYS)} to an integer or null",
    ),
    "image_size": (_is_str, "a non-empty string such as 256x256 or 'variable'"),
    "raw_layout": (_is_str, "a non-empty string (literal block)"),
    "official_splits": (
        lambda v: isinstance(v, dict) and all(_is_str(k) and x in SPLIT_NAMES for k, x in v.items()),
        f"a mapping from a published split name to one of {', '.join(SPLIT_NAMES)} ({{}} when none)",
    ),
    "notes": (_is_str, "a non-empty string"),
    "classes": (
        lambda v: v is None or (isinstance(v, list) and all(_is_str(c) for c in v)),
        "a list of class names, or null",
    ),
    "class_names_from": (lambda v: v is None or _is_str(v), "a string or null"),
    "mean": (_is_rgb, "a list of 3 numbers or null"),
    "std": (_is_rgb, "a list of 3 numbers or null"),
}
_OPTIONAL = frozenset({"classes", "class_names_from", "mean", "std"})


def read_card(path: str | Path) -> DatasetCard:
    """Parse and validate one card file; every problem is a DatasetError naming the key and the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f"cannot read dataset card {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise DatasetError(f"dataset card {str(path)!r} must be a YAML mapping of keys, got {type(data).__name__}")
    unknown = sorted(str(k) for k in data if k not in _CHECKS)
    if unknown:
        raise DatasetError(
            f"dataset card {str(path)!r}: unknown key {unknown[0]!r}"
            + (f" (and {', '.join(map(repr, unknown[1:]))})" if unknown[1:] else "")
            + f"; allowed keys: {', '.join(_CHECKS)}"
        )
    missing = [k for k in _CHECKS if k not in data and k not in _OPTIONAL]
    if missing:
        raise DatasetError(f"dataset card {str(path)!r}: missing key {missing[0]!r} (required: {', '.join(missing)})")
    for key, value in data.items():
        check, wanted = _CHECKS[key]
        if not check(value):
            raise DatasetError(
                f"dataset card {str(path)!r}: key {key!r} must be {wanted}, got {type(value).__name__} {value!r:.80}"
            )
    if data["name"] != path.stem:
        raise DatasetError(f"dataset card {str(path)!r}: key 'name' is {data['name']!r} but the file is {path.name!r}")
    classes = data.get("classes")
    if classes is not None and len(classes) != data["num_classes"]:
        raise DatasetError(
            f"dataset card {str(path)!r}: key 'classes' lists {len(classes)} names "
            f"but num_classes is {data['num_classes']}"
        )
    if (data.get("mean") is None) != (data.get("std") is None):
        raise DatasetError(f"dataset card {str(path)!r}: keys 'mean' and 'std' must both be given or both be null")
    return DatasetCard(**{f.name: data.get(f.name) for f in fields(DatasetCard)})


def cards_dir() -> Path:
    """Folder of the dataset cards shipped inside the package (``agripatch/resources/datasets``)."""
    from agripatch.resources import resource_dir

    folder = resource_dir("datasets")
    if not folder.is_dir() or not any(folder.glob("*.yaml")):
        raise DatasetError(f"no dataset cards found in {str(folder)!r}; the agripatch installation is incomplete")
    return folder


def card_names() -> list[str]:
    """Names of every card, sorted."""
    return sorted(p.stem for p in cards_dir().glob("*.yaml"))


def load_card(name: str) -> DatasetCard:
    """Load and validate the card called `name`; an unknown name is a DatasetError listing the known ones."""
    known = card_names()
    if name not in known:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(known)}")
    return read_card(cards_dir() / f"{name}.yaml")


def list_cards() -> list[DatasetCard]:
    """Every card, validated, sorted by name."""
    return [load_card(n) for n in card_names()]
