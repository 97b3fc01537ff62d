"""Reviewed photos back into training: copy the rows of a review page's ``corrections.csv`` into a dataset.

The review page of ``agripatch predict folder`` lets a person confirm a diagnosis, pick another class or
mark a photo "not a leaf", and downloads ``corrections.csv`` (header ``path,predicted,decision,
reviewed_label,action``; see :data:`agripatch.data.corrections.CORRECTIONS_HEADER`). :func:`add_reviewed`
copies each reviewed photo to ``to_root/<class>/<file>`` of an ImageFolder dataset, so the next
``agripatch train --data to_root`` learns from it. :func:`add_reviewed_from_db` does the same with the decisions
a team made on ``agripatch review serve`` (its database; photos its reviewers disagree on, unsettled, left out).

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

import os
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from agripatch.data.corrections import (
    NOT_A_LEAF,
    CorrectionRow,
    CorrectionsError,
    RowError,
    known_classes,
    read_corrections,
    sha256_and_size,
    validate_rows,
)
from agripatch.errors import DatasetError
from agripatch.io.atomic import atomic_path

if TYPE_CHECKING:
    from agripatch.data.review_store import OutputEntry

__all__ = ["AddedPhoto", "DuplicatePhoto", "ReviewedResult", "add_reviewed", "add_reviewed_from_db", "add_reviewed_rows"]


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
    left_out: list[str] = field(default_factory=list)  # review database: photos whose reviewers disagree

    @property
    def ok(self) -> bool:
        """True when no row was refused."""
        return not self.errors

    def added_per_class(self) -> dict[str, int]:
        """Number of photos added per class, classes sorted by name."""
        return dict(sorted(Counter(photo.label for photo in self.added).items()))


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
    return add_reviewed_rows(read_corrections(csv_path), str(csv_path), photos_dir, to_root, partial=partial,
                             classes=classes, not_a_leaf_dir=not_a_leaf_dir)


def add_reviewed_from_db(
    db: str | Path,
    to_root: str | Path,
    *,
    output: str | Path | None = None,
    photos_dir: str | Path | None = None,
    partial: bool = False,
    classes: Sequence[str] | None = None,
    not_a_leaf_dir: str | Path | None = None,
) -> ReviewedResult:
    """Copy the agreed and settled decisions of a review server's database into ``to_root``, by the CSV's rules.

    ``output`` picks the served output folder when the database holds several; ``photos_dir`` overrides the photo
    folder it recorded. The model's classes recorded with the output count as known. Photos whose reviewers
    disagree and which nobody settled are left out, listed in ``result.left_out``.
    """
    from agripatch.data.review_store import ReviewStore

    store = ReviewStore.open(db)
    try:
        entry = _pick_output(store.outputs(), output, db)
        rows, conflicts = store.final_rows(entry.id)
    finally:
        store.close()
    result = add_reviewed_rows(rows, f"{db} [{entry.folder}] decision", photos_dir or entry.photos, to_root,
                               partial=partial, classes=[*entry.classes, *(classes or ())],
                               not_a_leaf_dir=not_a_leaf_dir)
    result.left_out = conflicts
    return result


def _pick_output(entries: Sequence[OutputEntry], output: str | Path | None, db: str | Path) -> OutputEntry:
    """The database's one output, or the one served from ``output``; DatasetError listing them otherwise."""
    listed = "; ".join(entry.folder for entry in entries)
    if output is None:
        if len(entries) == 1:
            return entries[0]
        if not entries:
            raise DatasetError(f"review database {str(db)!r} holds no review yet; serve an output with "
                               "`agripatch review serve OUT` and decide on some photos first")
        raise DatasetError(f"review database {str(db)!r} holds {len(entries)} outputs ({listed}); pick one with --output OUT")
    wanted = str(Path(output).expanduser().resolve())
    for entry in entries:
        if entry.folder == wanted:
            return entry
    raise DatasetError(f"review database {str(db)!r} has no decisions for {wanted!r}; it holds: {listed or 'nothing'}")


def add_reviewed_rows(
    rows: Sequence[CorrectionRow],
    source: str,
    photos_dir: str | Path,
    to_root: str | Path,
    *,
    partial: bool = False,
    classes: Sequence[str] | None = None,
    not_a_leaf_dir: str | Path | None = None,
) -> ReviewedResult:
    """Copy reviewed ``rows`` (from a CSV or the review database; ``source`` names it in errors) into ``to_root``:
    the one place the rules of the module docstring are applied."""
    photos = Path(photos_dir)
    root = Path(to_root)
    if not photos.is_dir():
        raise DatasetError(f"photo folder {str(photos)!r} does not exist or is not a folder; pass the folder "
                           "that `agripatch predict folder` read (the reviewed paths are relative to it)")
    splits_path = root / "splits.csv"
    split_rows = None
    if splits_path.is_file():
        from agripatch.data.splits import read_splits_csv

        split_rows = read_splits_csv(splits_path)  # a broken file stops us before anything is copied
    known = known_classes(root, classes, split_rows)
    leaf_dir = _check_not_a_leaf_dir(not_a_leaf_dir, root)

    plans, errors = validate_rows(rows, source, photos, known)  # as given: a URL must not be folded like a path
    if errors and not partial:
        raise CorrectionsError(source, errors)
    result = ReviewedResult(errors=errors)
    result.not_a_leaf = sum(plan.label == NOT_A_LEAF for plan in plans)
    class_plans = [plan for plan in plans if plan.label != NOT_A_LEAF]
    leaf_plans = [plan for plan in plans if plan.label == NOT_A_LEAF] if leaf_dir is not None else []

    listed = {row.path for row in split_rows} if split_rows is not None else set()

    new_splits: list[tuple[str, str]] = []
    for folder, todo, into_class in ((root, class_plans, True), (leaf_dir, leaf_plans, False)):
        if todo and folder is not None:
            new_splits += _copy_plans(folder, todo, into_class, listed, split_rows is not None, result)

    if split_rows is not None and new_splits:
        from agripatch.data.splits import SplitRow, write_splits_csv

        write_splits_csv([*split_rows, *(SplitRow(path, label, "train") for path, label in new_splits)], splits_path)
        result.splits_csv = splits_path
        result.splits_added = len(new_splits)
    return result


def _copy_plans(folder: Path, todo: list, into_class: bool, listed: set[str], track_splits: bool,
                result: ReviewedResult) -> list[tuple[str, str]]:
    """Copy the planned photos into ``folder`` (under their class when ``into_class``), skipping any whose content
    is already there; returns the (path, label) rows splits.csv gains (``track_splits``), ``listed`` grows."""
    new_splits: list[tuple[str, str]] = []
    existing = _hashes_under(folder, {plan.size for plan in todo})
    taken = {name.casefold() for name in listed} if into_class else set()
    for plan in todo:
        if plan.digest in existing:
            where = existing[plan.digest]
            result.duplicates.append(DuplicatePhoto(plan.row.path, where, plan.label))
            if into_class and track_splits and where not in listed and PurePosixPath(where).parts[:1] == (plan.label,):
                new_splits.append((where, plan.label))  # copied by an interrupted run: list it now
                listed.add(where)
            continue
        subdir = plan.label if into_class else ""
        dest = _free_name(folder, subdir, PurePosixPath(plan.row.path).name, plan.digest, taken)
        _copy_atomic(plan.source, folder / dest)
        existing[plan.digest] = dest
        taken.add(dest.casefold())
        photo = AddedPhoto(plan.row.path, dest, plan.label)
        if not into_class:
            result.not_a_leaf_copied.append(photo)
            continue
        result.added.append(photo)
        if track_splits:
            new_splits.append((dest, plan.label))
            listed.add(dest)
    return new_splits


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
                digest, _ = sha256_and_size(path)
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
