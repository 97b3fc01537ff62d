"""Reviewed photos back into training: copy the rows of a review page's ``corrections.csv`` into a dataset.

The review page of ``agripatch predict folder`` lets a person confirm a diagnosis, pick another class or
mark a photo "not a leaf", and downloads ``corrections.csv`` (header ``path,predicted,decision,
reviewed_label,action``; see :data:`agripatch.predict.review.CORRECTIONS_HEADER`). :func:`add_reviewed`
copies each reviewed photo to ``to_root/<class>/<file>`` of an ImageFolder dataset, so the next
``agripatch train --data to_root`` learns from it.

Rules, all so that a dataset can only grow by what the reviewer meant:

* Photos are COPIED, never moved: each lands in a temporary file beside its destination and is then
  renamed, so a crash never leaves half a photo under a real name.
* Every row is validated before anything is copied. A bad row (unknown class, unknown action, a path
  escaping the photo folder, a missing or unreadable photo, the same photo twice) is one error naming
  its line, path and fix; with any error nothing is copied unless ``partial=True``, which copies the
  good rows and reports the bad ones.
* A photo whose bytes (sha256) are already anywhere under ``to_root`` is a duplicate and is not copied
  again: re-running the same CSV changes nothing. A different photo with a taken file name gets a short
  hash suffix.
* ``not_a_leaf`` rows join no class; they are counted, and copied to ``not_a_leaf_dir`` when given.
* When ``to_root/splits.csv`` exists, the added files are appended to it as split ``train``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from agripatch.errors import DatasetError, ImageReadError
from agripatch.io.atomic import atomic_path
from agripatch.io.images import is_image_path, probe_image

if TYPE_CHECKING:
    from agripatch.data.splits import SplitRow

__all__ = [
    "ACTIONS",
    "CORRECTIONS_HEADER",
    "NOT_A_LEAF",
    "AddedPhoto",
    "CorrectionRow",
    "CorrectionsError",
    "DuplicatePhoto",
    "ReviewedResult",
    "RowError",
    "add_reviewed",
    "read_corrections",
]

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


@dataclass(frozen=True)
class AddedPhoto:
    """A photo copied into the dataset: its CSV path, its new path relative to ``to_root``, its class."""

    source: str
    dest: str
    label: str


@dataclass(frozen=True)
class DuplicatePhoto:
    """A photo not copied because the same bytes are already at ``existing`` (relative to its folder)."""

    source: str
    existing: str
    label: str

    @property
    def other_class(self) -> bool:
        """True when the existing copy sits in another class folder than the review says: worth a look."""
        if self.label == NOT_A_LEAF:
            return False
        return PurePosixPath(self.existing).parts[:1] != (self.label,)


@dataclass
class ReviewedResult:
    """What :func:`add_reviewed` did: added photos, duplicates skipped, not-a-leaf rows, refused rows."""

    added: list[AddedPhoto] = field(default_factory=list)
    duplicates: list[DuplicatePhoto] = field(default_factory=list)
    not_a_leaf: int = 0
    not_a_leaf_copied: list[AddedPhoto] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    splits_csv: Path | None = None
    splits_added: int = 0

    @property
    def ok(self) -> bool:
        """True when no row was refused."""
        return not self.errors

    def added_per_class(self) -> dict[str, int]:
        """Number of photos added per class, classes sorted by name."""
        return dict(sorted(Counter(photo.label for photo in self.added).items()))


class CorrectionsError(DatasetError):
    """Rows of a corrections CSV were refused and nothing was copied; ``errors`` lists them."""

    def __init__(self, csv_path: Path, errors: Sequence[RowError]):
        self.errors = list(errors)
        lines = "\n".join(f"  {error}" for error in self.errors)
        super().__init__(
            f"{csv_path}: {len(self.errors)} row(s) refused, nothing was copied; fix them, "
            f"or pass --partial (partial=True) to add the good rows only:\n{lines}"
        )


@dataclass
class _Plan:
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
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise DatasetError(f"corrections file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read corrections file {str(path)!r}: {exc}") from None
    reader = csv.reader(io.StringIO(text, newline=""))
    header = next(reader, None)
    expected = ",".join(CORRECTIONS_HEADER)
    if header is None:
        raise DatasetError(f"corrections file {str(path)!r} is empty; expected the header {expected}")
    missing = [name for name in CORRECTIONS_HEADER if name not in header]
    if missing:
        raise DatasetError(
            f"corrections file {str(path)!r} lacks the column(s) {', '.join(missing)}: expected the header "
            f"{expected} (as written by the review page's \"Download corrections CSV\"), got {','.join(header)!r}"
        )
    where = {name: header.index(name) for name in CORRECTIONS_HEADER}
    rows: list[CorrectionRow] = []
    line = reader.line_num + 1
    for record in reader:
        start, line = line, reader.line_num + 1
        if not any(cell.strip() for cell in record):
            continue
        short = len(record) < len(header)
        record = record + [""] * (len(header) - len(record))
        rows.append(CorrectionRow(start, *(record[where[name]] for name in CORRECTIONS_HEADER), short=short))
    return rows


def add_reviewed(
    corrections_csv: str | Path,
    photos_dir: str | Path,
    to_root: str | Path,
    *,
    partial: bool = False,
    classes: Sequence[str] | None = None,
    not_a_leaf_dir: str | Path | None = None,
) -> ReviewedResult:
    """Copy the reviewed photos of ``corrections_csv`` into the ImageFolder dataset ``to_root``.

    ``photos_dir`` is the folder that ``predict folder`` read (the CSV's paths are relative to it).
    Known classes are the class folders already in ``to_root`` (and the labels of its splits.csv) plus
    ``classes`` (the model's, say);
    ``to_root`` and class folders are created as photos are copied into them. Raises
    :class:`CorrectionsError` (a DatasetError listing every bad row) when any row is bad and
    ``partial`` is False, having copied nothing; with ``partial=True`` the good rows are applied and
    the bad ones are in ``result.errors``. See the module docstring for the rules.
    """
    csv_path = Path(corrections_csv)
    photos = Path(photos_dir)
    root = Path(to_root)
    rows = read_corrections(csv_path)
    if not photos.is_dir():
        raise DatasetError(f"photo folder {str(photos)!r} does not exist or is not a folder; pass the folder "
                           "that `agripatch predict folder` read (the CSV's paths are relative to it)")
    splits_path = root / "splits.csv"
    split_rows = None
    if splits_path.is_file():
        from agripatch.data.splits import read_splits_csv

        split_rows = read_splits_csv(splits_path)  # a broken file stops us before anything is copied
    known = _known_classes(root, classes, split_rows)
    leaf_dir = _check_not_a_leaf_dir(not_a_leaf_dir, root)

    errors: list[RowError] = []
    plans: list[_Plan] = []
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
        plans.append(_Plan(row, source, label, "", 0))
    kept = []
    for plan in plans:  # two paths naming one file (through a link) are the same photo twice
        lines = by_source[plan.source]
        if len(lines) > 1:
            problem = (f"the same photo (through a link) is listed on lines {', '.join(map(str, lines))}: "
                       "keep one row per photo")
            errors.append(RowError(str(csv_path), plan.row.line, plan.row.path, problem))
            continue
        try:
            plan.digest, plan.size = _sha256(plan.source)
        except OSError as exc:
            errors.append(RowError(str(csv_path), plan.row.line, plan.row.path,
                                   f"cannot read the photo ({exc.strerror or exc}); check its permissions"))
            continue
        kept.append(plan)
    plans = kept
    errors.sort(key=lambda error: error.line)
    if errors and not partial:
        raise CorrectionsError(csv_path, errors)

    result = ReviewedResult(errors=errors)
    result.not_a_leaf = sum(plan.label == NOT_A_LEAF for plan in plans)
    class_plans = [plan for plan in plans if plan.label != NOT_A_LEAF]
    leaf_plans = [plan for plan in plans if plan.label == NOT_A_LEAF] if leaf_dir is not None else []

    listed = {row.path for row in split_rows} if split_rows is not None else set()

    new_splits: list[tuple[str, str]] = []
    for folder, todo, into_class in ((root, class_plans, True), (leaf_dir, leaf_plans, False)):
        if not todo or folder is None:
            continue
        existing = _hashes_under(folder, {plan.size for plan in todo})
        taken = {name.casefold() for name in listed} if into_class else set()
        for plan in todo:
            if plan.digest in existing:
                where = existing[plan.digest]
                result.duplicates.append(DuplicatePhoto(plan.row.path, where, plan.label))
                if into_class and split_rows is not None and where not in listed \
                        and PurePosixPath(where).parts[:1] == (plan.label,):
                    new_splits.append((where, plan.label))  # copied by an interrupted run: list it now
                    listed.add(where)
                continue
            subdir = plan.label if into_class else ""
            dest = _free_name(folder, subdir, PurePosixPath(plan.row.path).name, plan.digest, taken)
            _copy_atomic(plan.source, folder / dest)
            existing[plan.digest] = dest
            taken.add(dest.casefold())
            photo = AddedPhoto(plan.row.path, dest, plan.label)
            if into_class:
                result.added.append(photo)
                if split_rows is not None:
                    new_splits.append((dest, plan.label))
                    listed.add(dest)
            else:
                result.not_a_leaf_copied.append(photo)

    if split_rows is not None and new_splits:
        from agripatch.data.splits import SplitRow, write_splits_csv

        write_splits_csv([*split_rows, *(SplitRow(path, label, "train") for path, label in new_splits)], splits_path)
        result.splits_csv = splits_path
        result.splits_added = len(new_splits)
    return result


def _known_classes(root: Path, classes: Sequence[str] | None, split_rows: Sequence[SplitRow] | None) -> set[str]:
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


def _check_not_a_leaf_dir(folder: str | Path | None, root: Path) -> Path | None:
    """The not-a-leaf folder, refused inside ``to_root`` where it would become a class."""
    if folder is None:
        return None
    folder = Path(folder)
    resolved, root_resolved = folder.resolve(), root.resolve()
    if resolved == root_resolved or root_resolved in resolved.parents:
        raise DatasetError(f"not-a-leaf folder {str(folder)!r} is inside the dataset {str(root)!r}, where it would "
                           "be trained as a class; pick a folder outside it")
    return folder


def _check_row(row: CorrectionRow, photos: Path, photos_real: Path,
               known: set[str]) -> tuple[str | None, Path | None, str | None]:
    """(problem, resolved source, label) of one row: a problem sentence with its fix, or the source and label."""
    if row.short:
        return "the row has fewer fields than the header; re-download the CSV from the review page", None, None
    action = row.action.strip().lower()
    if action not in ACTIONS:
        return f"unknown action {row.action!r}; use one of {', '.join(ACTIONS)}", None, None
    reviewed = row.reviewed_label
    if action == "confirm":
        if reviewed and reviewed != row.predicted:
            return (f"action confirm but reviewed_label {reviewed!r} differs from predicted {row.predicted!r}; "
                    "use action relabel to change the class"), None, None
        label = row.predicted
    elif action == "relabel":
        if not reviewed:
            return "action relabel needs a reviewed_label (the right class)", None, None
        label = reviewed
    else:
        if reviewed not in ("", NOT_A_LEAF):
            return (f"action not_a_leaf but reviewed_label is {reviewed!r}; use {NOT_A_LEAF} "
                    "(or action relabel for a class)"), None, None
        label = NOT_A_LEAF
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


def _sha256(path: Path) -> tuple[str, int]:
    """Hex sha256 and size of a file's bytes."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _hashes_under(folder: Path, sizes: Iterable[int]) -> dict[str, str]:
    """sha256 -> POSIX path (relative to ``folder``) of every file under it whose size is in ``sizes``.

    Only same-size files can hold the same bytes, so a big dataset costs a stat per file, not a read.
    Hidden files and folders are skipped (the atomic writer's temporary files are hidden); symlinked
    folders are followed once each.
    """
    wanted = set(sizes)
    found: dict[str, str] = {}
    if not folder.is_dir():
        return found
    seen: set[tuple[int, int]] = set()
    for current, dirs, files in os.walk(folder, followlinks=True):
        stat = os.stat(current)
        if (stat.st_dev, stat.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(current) / name
            try:
                if path.stat().st_size not in wanted or not path.is_file():
                    continue
                digest, _ = _sha256(path)
            except OSError:
                continue
            found.setdefault(digest, path.relative_to(folder).as_posix())
    return found


def _free_name(folder: Path, subdir: str, name: str, digest: str, taken: set[str]) -> str:
    """``subdir/name`` if free, else ``subdir/<stem>-<hash prefix><suffix>``: a POSIX path relative to folder."""
    stem, suffix = Path(name).stem, Path(name).suffix
    candidates = [name] + [f"{stem}-{digest[:n]}{suffix}" for n in (8, 16, 64)]
    for candidate in candidates:
        rel = f"{subdir}/{candidate}" if subdir else candidate
        if rel.casefold() not in taken and not os.path.lexists(folder / rel):
            return rel
    raise DatasetError(f"cannot find a free file name for {name!r} in {str(folder / subdir)!r}")


def _copy_atomic(source: Path, dest: Path) -> None:
    """Copy bytes to a temporary file beside ``dest``, fsync, then rename it into place."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
