"""The corrections a reviewer downloads from the review page, and the rules a row must meet to be applied.

``corrections.csv`` (header :data:`CORRECTIONS_HEADER`) lists, per reviewed photo, its path relative to the
folder `predict folder` read, the model's class and decision, the reviewer's label and the action
(``confirm``, ``relabel``, ``not_a_leaf``). :func:`validate_rows` checks every row before anything is copied
(unknown class or action, a path escaping the photo folder, a missing or unreadable photo, the same photo
twice) and says, per bad row, what is wrong and how to fix it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from agripatch.errors import DatasetError, ImageReadError
from agripatch.io.images import is_image_path, probe_image
from agripatch.io.text import read_dataset_text

if TYPE_CHECKING:
    from agripatch.data.splits import SplitRow

__all__ = ["ACTIONS", "CORRECTIONS_HEADER", "NOT_A_LEAF", "CorrectionRow", "CorrectionsError", "RowError",
           "known_classes", "label_of", "parse_corrections", "read_corrections", "sha256_and_size", "validate_rows"]

CORRECTIONS_HEADER: tuple[str, ...] = ("path", "predicted", "decision", "reviewed_label", "action")
ACTIONS: tuple[str, ...] = ("confirm", "relabel", "not_a_leaf")
NOT_A_LEAF = "not_a_leaf"
_CHUNK = 1 << 20


@dataclass(frozen=True)
class CorrectionRow:
    """One data row of a corrections CSV, as written (``line`` is its first line in the file).

    ``short`` is True when the row has fewer fields than the header (the missing ones read as "").
    """

    line: int
    path: str
    predicted: str
    decision: str
    reviewed_label: str
    action: str
    short: bool = False


@dataclass(frozen=True)
class RowError:
    """A refused row: the CSV file, its line, the photo path and what is wrong and how to fix it."""

    csv: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.csv}:{self.line}: {self.path!r}: {self.message}"


class CorrectionsError(DatasetError):
    """Rows of a corrections CSV were refused and nothing was copied; ``errors`` lists them."""

    def __init__(self, csv_path: str | Path, errors: Sequence[RowError]):
        self.errors = list(errors)
        lines = "\n".join(f"  {error}" for error in self.errors)
        super().__init__(
            f"{csv_path}: {len(self.errors)} row(s) refused, nothing was copied; fix them, "
            f"or pass --partial (partial=True) to add the good rows only:\n{lines}"
        )


@dataclass
class PlannedCopy:
    """A validated row: the source file, its label, its bytes' hash and size."""

    row: CorrectionRow
    source: Path
    label: str
    digest: str
    size: int


def read_corrections(path: str | Path) -> list[CorrectionRow]:
    """Read a corrections CSV (UTF-8, BOM allowed, extra columns ignored) into rows, in file order.

    A missing file or a header without the five columns is one DatasetError naming the file and the
    expected header; the rows themselves are checked by :func:`add_reviewed`.
    """
    path = Path(path)
    return parse_corrections(read_dataset_text(path, "corrections file", encoding="utf-8-sig"), str(path))


def parse_corrections(text: str, name: str) -> list[CorrectionRow]:
    """The rows of a corrections CSV's text (``name`` says where it came from in errors: a file, an upload).

    The same reader for a file on disk and a CSV uploaded into the review server, so both accept and refuse
    the same headers.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff"), newline=""))
    header = next(reader, None)
    expected = ",".join(CORRECTIONS_HEADER)
    if header is None:
        raise DatasetError(f"corrections file {name!r} is empty; expected the header {expected}")
    missing = [column for column in CORRECTIONS_HEADER if column not in header]
    if missing:
        raise DatasetError(
            f"corrections file {name!r} lacks the column(s) {', '.join(missing)}: expected the header "
            f"{expected} (as written by the review page's \"Download corrections CSV\"), got {','.join(header)!r}"
        )
    where = {column: header.index(column) for column in CORRECTIONS_HEADER}
    rows: list[CorrectionRow] = []
    line = reader.line_num + 1
    for record in reader:
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in record):
            continue
        short = len(record) < len(header)
        record = record + [""] * (len(header) - len(record))
        rows.append(CorrectionRow(start, *(record[where[column]] for column in CORRECTIONS_HEADER), short=short))
    return rows


def validate_rows(rows: Sequence[CorrectionRow], csv_path: str | Path, photos: Path,
                  known: set[str]) -> tuple[list[PlannedCopy], list[RowError]]:
    """The rows that may be applied (with their source file, label and hash) and the refused ones, by line
    (``csv_path`` names where the rows came from: a CSV file, or a review database and its output)."""
    errors: list[RowError] = []
    plans: list[PlannedCopy] = []
    photos_real = photos.resolve()
    by_path: dict[str, list[int]] = {}
    for row in rows:
        if row.path:
            by_path.setdefault(PurePosixPath(row.path).as_posix(), []).append(row.line)
    by_source: dict[Path, list[int]] = {}
    for row in rows:
        lines = by_path.get(PurePosixPath(row.path).as_posix(), []) if row.path else []
        if len(lines) > 1:
            problem = f"the same photo is listed on lines {', '.join(map(str, lines))}: keep one row per photo"
            errors.append(RowError(str(csv_path), row.line, row.path, problem))
            continue
        problem, source, label = _check_row(row, photos, photos_real, known)
        if problem is not None:
            errors.append(RowError(str(csv_path), row.line, row.path, problem))
            continue
        assert source is not None and label is not None
        by_source.setdefault(source, []).append(row.line)
        plans.append(PlannedCopy(row, source, label, "", 0))
    kept = []
    for plan in plans:  # two paths naming one file (through a link) are the same photo twice
        lines = by_source[plan.source]
        if len(lines) > 1:
            problem = (f"the same photo (through a link) is listed on lines {', '.join(map(str, lines))}: "
                       "keep one row per photo")
            errors.append(RowError(str(csv_path), plan.row.line, plan.row.path, problem))
            continue
        try:
            plan.digest, plan.size = sha256_and_size(plan.source)
        except OSError as exc:
            errors.append(RowError(str(csv_path), plan.row.line, plan.row.path,
                                   f"cannot read the photo ({exc.strerror or exc}); check its permissions"))
            continue
        kept.append(plan)
    errors.sort(key=lambda error: error.line)
    return kept, errors


def known_classes(root: Path, classes: Sequence[str] | None, split_rows: Sequence[SplitRow] | None) -> set[str]:
    """The dataset's classes plus ``classes``; DatasetError when that is nothing or root is unusable.

    The dataset's classes are its class folders (empty ones count: that is how a user adds a new class)
    and the labels of its splits.csv; in a train/val/test layout only the latter.
    """
    if root.exists() and not root.is_dir():
        raise DatasetError(f"dataset path {str(root)!r} is not a folder")
    folders: set[str] = set()
    if root.is_dir():
        from agripatch.data.splits import split_dirs

        layout = split_dirs(root) is not None
        if layout and split_rows is None:
            raise DatasetError(
                f"{str(root)!r} has a train/val/test layout, not root/<class>/ folders; run "
                f"`agripatch datasets split {root}` first (it writes that layout to splits.csv, and reviewed photos "
                f"are then added as root/<class>/<file>, split train), or pass {str(root / 'train')!r} as the dataset"
            )
        if not layout:
            folders = {entry.name for entry in os.scandir(root) if entry.is_dir() and not entry.name.startswith(".")}
        if split_rows is not None:
            folders |= {row.label for row in split_rows}
    known = folders | set(classes or ())
    if not known:
        raise DatasetError(
            f"no known classes: {str(root)!r} has no class folders and no model classes were given; create one "
            f"folder per class in it (e.g. {str(root / 'healthy')!r}) or pass the model (--model RUN/model.pt) "
            "whose classes the reviewed labels are"
        )
    return known


def label_of(row: CorrectionRow) -> tuple[str | None, str | None]:
    """(problem, label) of a row's action and labels alone: the class (or ``not_a_leaf``) it asks for, or what is
    wrong with it and how to fix it. One rule for a CSV on disk, an upload to the review server and its database."""
    if row.short:
        return "the row has fewer fields than the header; re-download the CSV from the review page", None
    action = row.action.strip().lower()
    if action not in ACTIONS:
        return f"unknown action {row.action!r}; use one of {', '.join(ACTIONS)}", None
    reviewed = row.reviewed_label
    if action == "confirm":
        if reviewed and reviewed != row.predicted:
            return (f"action confirm but reviewed_label {reviewed!r} differs from predicted {row.predicted!r}; "
                    "use action relabel to change the class"), None
        return None, row.predicted
    if action == "relabel":
        if not reviewed:
            return "action relabel needs a reviewed_label (the right class)", None
        return None, reviewed
    if reviewed not in ("", NOT_A_LEAF):
        return (f"action not_a_leaf but reviewed_label is {reviewed!r}; use {NOT_A_LEAF} "
                "(or action relabel for a class)"), None
    return None, NOT_A_LEAF


def _check_row(row: CorrectionRow, photos: Path, photos_real: Path,
               known: set[str]) -> tuple[str | None, Path | None, str | None]:
    """(problem, resolved source, label) of one row: a problem sentence with its fix, or the source and label."""
    problem, label = label_of(row)
    if problem is not None or label is None:
        return problem, None, None
    if label != NOT_A_LEAF:
        if label not in known:
            return (f"unknown class {label!r}; known classes are {', '.join(sorted(known))}: create the folder "
                    "for a new class in the dataset first, or pass the model whose class it is"), None, None
        if not _folder_name_ok(label):
            return (f"class {label!r} cannot be a folder name (it holds a slash or backslash, or starts with '.'); "
                    "rename the class"), None, None
    rel = row.path
    if not rel:
        return "empty path", None, None
    if PurePosixPath(rel).is_absolute() or Path(rel).is_absolute() or Path(rel).drive:
        return "absolute path; paths must be relative to the photo folder (as the review page writes them)", None, None
    if ".." in PurePosixPath(rel).parts or ".." in Path(rel).parts:
        return "path goes up with '..' out of the photo folder; use the path the review page wrote", None, None
    if not is_image_path(rel):
        return "not an image file name (an image extension, not a hidden file)", None, None
    source = photos / rel
    try:
        resolved = source.resolve(strict=True)
    except (OSError, RuntimeError):
        return (f"photo not found in {str(photos)!r}; pass the folder that `predict folder` read "
                "(--photos) or remove the row"), None, None
    if resolved != photos_real and photos_real not in resolved.parents:
        return f"path resolves outside the photo folder (to {str(resolved)!r}, via a link); refusing to copy it", None, None
    if not resolved.is_file():
        return "not a regular file", None, None
    try:
        probe_image(resolved)
    except ImageReadError as exc:
        return f"{exc.reason}; remove the row or replace the photo", None, None
    return None, resolved, label


def _folder_name_ok(name: str) -> bool:
    """A class name usable as one folder name on every platform we write."""
    return bool(name) and name not in (".", "..") and not any(c in name for c in "/\\\0") and not name.startswith(".")


def sha256_and_size(path: Path) -> tuple[str, int]:
    """Hex sha256 and size of a file's bytes."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
