"""Train/val/test splits: make them (stratified, seeded), store them as CSV, or find them on disk.

A dataset's splits come from `root/splits.csv` when present, else from a `root/train|val|test/<class>/`
layout. Paths in a split row are POSIX paths relative to the dataset root.
"""

from __future__ import annotations

import csv
import io
import math
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from agripatch.data.folder import FolderIndex, check_dataset_root, scan_image_folder
from agripatch.errors import DatasetError
from agripatch.io.atomic import atomic_write_text
from agripatch.io.text import read_dataset_text

SPLITS: tuple[str, ...] = ("train", "val", "test")
SPLITS_CSV = "splits.csv"
_HEADER = ["path", "label", "split"]
_SPLIT_DIR_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class SplitRow:
    """One image of a split dataset: POSIX path relative to the root, class name, split name."""

    path: str
    label: str
    split: str


def make_splits(index: FolderIndex, val: float = 0.1, test: float = 0.1, seed: int = 0) -> list[SplitRow]:
    """Split every class separately into train/val/test with exact, reproducible counts.

    Per class of n images: n_val = round(n * val), n_test = round(n * test) (halves round up); if that
    leaves no training image, one is taken back from the larger of val/test (val on ties), so every
    class keeps >= 1 train image. Files are sorted then shuffled with a generator seeded by (seed, class
    name), so adding a class or re-scanning never reshuffles the other classes. Rows sorted by path.
    """
    _check_fraction("val", val)
    _check_fraction("test", test)
    if val + test >= 1:
        raise DatasetError(f"val + test must be < 1 to leave training images, got val={val} + test={test}")
    rows: list[SplitRow] = []
    for name, shuffled in _shuffled_classes(index, seed):
        n_val, n_test = split_counts(len(shuffled), val, test)
        for rank, path in enumerate(shuffled):
            split = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            rows.append(SplitRow(path, name, split))
    return sorted(rows, key=lambda r: r.path)


def make_fold_splits(index: FolderIndex, folds: int, fold: int, val: float = 0.1, seed: int = 0) -> list[SplitRow]:
    """Fold ``fold`` of a stratified ``folds``-fold cross-validation: that fold is the test split, and a
    stratified ``val`` fraction of the rest picks best epochs and exit thresholds, so across the folds every
    image is tested exactly once by a model that never chose anything on it.

    Per class, files are shuffled as `make_splits` shuffles them (seeded by (seed, class name)) and dealt
    round-robin into the folds, so fold sizes differ by at most one image per class; the same seed gives
    the same folds for every ``fold``. Rows sorted by path.
    """
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise DatasetError(f"folds must be an integer >= 2, got {folds!r}")
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < folds:
        raise DatasetError(f"fold must be an integer in 0..{folds - 1}, got {fold!r}")
    _check_fraction("val", val)
    rows: list[SplitRow] = []
    for name, shuffled in _shuffled_classes(index, seed):
        if len(shuffled) < folds:
            raise DatasetError(f"class {name!r} has {len(shuffled)} images, fewer than the {folds} folds: "
                               f"add images or use fewer folds")
        rows += [SplitRow(path, name, "test") for path in shuffled[fold::folds]]
        rest = [path for rank, path in enumerate(shuffled) if rank % folds != fold]
        n_val = min(math.floor(len(rest) * val + 0.5), len(rest) - 1)
        rows += [SplitRow(path, name, "val" if k < n_val else "train") for k, path in enumerate(rest)]
    return sorted(rows, key=lambda r: r.path)


def _shuffled_classes(index: FolderIndex, seed: int) -> list[tuple[str, list[str]]]:
    """(class name, its POSIX paths sorted then shuffled by a generator seeded by (seed, class name)) per class,
    in label order: the one shuffle every split is cut from, so a class's order never depends on the others."""
    if not index.samples:
        raise DatasetError(f"dataset {str(index.root)!r} has no images to split")
    per_class: dict[int, list[str]] = {}
    for path, label in index.samples:
        per_class.setdefault(label, []).append(Path(path).as_posix())
    shuffled = []
    for label, paths in sorted(per_class.items()):
        name, paths = index.classes[label], sorted(paths)
        order = np.random.default_rng([seed, zlib.crc32(name.encode("utf-8"))]).permutation(len(paths))
        shuffled.append((name, [paths[i] for i in order]))
    return shuffled


def split_counts(n: int, val: float, test: float) -> tuple[int, int]:
    """(n_val, n_test) for a class of `n` images, leaving at least one for training."""
    n_val = math.floor(n * val + 0.5)
    n_test = math.floor(n * test + 0.5)
    while n - n_val - n_test < 1:
        if n_test > n_val:
            n_test -= 1
        else:
            n_val -= 1
    return n_val, n_test


def _check_fraction(name: str, value: float) -> None:
    """A split fraction must be a real number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise DatasetError(f"{name} fraction must be a number with 0 <= {name} < 1, got {value!r}")


def write_splits_csv(rows: Iterable[SplitRow], path: str | Path) -> Path:
    """Write rows as CSV (header path,label,split; sorted by path) atomically."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(_HEADER)
    for row in sorted(rows, key=lambda r: r.path):
        writer.writerow([row.path, row.label, row.split])
    return atomic_write_text(path, buf.getvalue())


def read_splits_csv(path: str | Path) -> list[SplitRow]:
    """Read a split CSV; DatasetError naming the file and line on any malformed row."""
    path = Path(path)
    text = read_dataset_text(path, "split file")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header != _HEADER:
        raise DatasetError(f"{path}:1: header must be {','.join(_HEADER)}, got {','.join(header or [])!r}")
    rows: list[SplitRow] = []
    seen: dict[str, int] = {}
    for record in reader:
        line = reader.line_num
        if not record:
            continue
        if len(record) != 3:
            raise DatasetError(f"{path}:{line}: expected 3 columns (path,label,split), got {len(record)}")
        rel, label, split = record
        _check_row(path, line, rel, label, split)
        if rel in seen:
            raise DatasetError(f"{path}:{line}: {rel!r} is already listed on line {seen[rel]}")
        seen[rel] = line
        rows.append(SplitRow(rel, label, split))
    if not rows:
        raise DatasetError(f"split file {str(path)!r} lists no images")
    return rows


def _check_row(path: Path, line: int, rel: str, label: str, split: str) -> None:
    """Validate one CSV row: relative path inside the root, a label, a known split."""
    if not rel or not label:
        raise DatasetError(f"{path}:{line}: empty path or label")
    pure = PurePosixPath(rel)
    if pure.is_absolute() or ".." in pure.parts or "\\" in rel:
        raise DatasetError(f"{path}:{line}: path {rel!r} must be a POSIX path relative to the dataset root")
    if split not in SPLITS:
        raise DatasetError(f"{path}:{line}: unknown split {split!r}; use one of {', '.join(SPLITS)}")


def find_split_layout(root: str | Path) -> list[SplitRow] | None:
    """Rows for a `root/train|val|test/<class>/...` layout, or None when `root` is not laid out so.

    `valid` and `validation` count as `val` (names compared case-insensitively). The layout needs a
    `train` folder and no other non-hidden sub-folder, so a class called "train" is not mistaken for it.
    """
    root = check_dataset_root(root)
    found = split_dirs(root)
    if found is None:
        return None
    rows: list[SplitRow] = []
    for split, dirname in found.items():
        index = scan_image_folder(root / dirname)
        for rel, label in index.samples:
            rows.append(SplitRow(f"{dirname}/{rel.as_posix()}", index.classes[label], split))
    return sorted(rows, key=lambda r: r.path)


def split_dirs(root: Path) -> dict[str, str] | None:
    """Map split name -> folder name for a split layout under `root`; None when it is not one."""
    subdirs = [p.name for p in sorted(root.iterdir()) if not p.name.startswith(".") and p.is_dir()]
    if not subdirs or any(name.lower() not in _SPLIT_DIR_NAMES for name in subdirs):
        return None
    found: dict[str, str] = {}
    for name in subdirs:
        split = _SPLIT_DIR_NAMES[name.lower()]
        if split in found:
            raise DatasetError(f"{str(root)!r} has both {found[split]!r} and {name!r}: keep one {split} folder")
        found[split] = name
    if "train" not in found:
        return None
    return {split: found[split] for split in SPLITS if split in found}


def load_splits(root: str | Path) -> list[SplitRow]:
    """The dataset's splits: `root/splits.csv`, else the train/val/test layout, else DatasetError."""
    root = check_dataset_root(root)
    csv_path = root / SPLITS_CSV
    if csv_path.is_file():
        return read_splits_csv(csv_path)
    rows = find_split_layout(root)
    if rows is not None:
        return rows
    raise DatasetError(
        f"{str(root)!r} has no {SPLITS_CSV} and no train/val/test folders; "
        f"run `agripatch datasets split {root}` to create the splits"
    )


def classes_of(rows: Iterable[SplitRow]) -> list[str]:
    """Sorted distinct class names of the rows: the label order of a model trained on them."""
    return sorted({row.label for row in rows})


def samples_for(rows: Iterable[SplitRow], split: str, classes: Sequence[str]) -> list[tuple[str, int]]:
    """(path, label index) for the rows of `split`, labels indexed in `classes`, for ImageDataset."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    lookup = {name: i for i, name in enumerate(classes)}
    out: list[tuple[str, int]] = []
    for row in rows:
        if row.split != split:
            continue
        if row.label not in lookup:
            raise DatasetError(f"{row.path!r} has class {row.label!r}, which is not in the class map {list(classes)}")
        out.append((row.path, lookup[row.label]))
    return out
