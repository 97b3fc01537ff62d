"""`datasets prepare`: turn a public dataset's download, in the layout its card describes, into an ImageFolder.

`prepare_dataset` reads that layout and builds `out/<class>/<file>` plus `out/splits.csv` (path,label,split),
keeping the official split where the dataset publishes one, so every experiment trains and tests on the same
images.
"""

from __future__ import annotations

import errno
import filecmp
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agripatch.errors import DatasetError
from agripatch.io.atomic import atomic_write_text

if TYPE_CHECKING:  # splits/folder import torch; load them only when prepare needs them
    from agripatch.data.splits import SplitRow

from agripatch.data.cards import MODES, SPLIT_NAMES, DatasetCard, load_card
from agripatch.data.converters import Item, converter_for, layout_error

_TMP_SUFFIX = ".agripatch-tmp"
_OUT_FILES = ("splits.csv", "class_names.json")


# ---------------------------------------------------------------------------------------- prepare


@dataclass(frozen=True)
class PrepareResult:
    """What `prepare_dataset` built: where, which classes, images per split, and how many files it wrote."""

    name: str
    out: Path
    splits_csv: Path
    classes: list[str]
    counts: dict[str, int]
    official: tuple[str, ...]  # splits taken from the published layout
    carved: tuple[str, ...]  # splits made by make_splits
    written: int
    skipped: int
    copied_instead_of_linked: int


def _resolve_names(items: list[Item]) -> list[Item]:
    """Give every item a unique `<label>/<name>`; a name shared by several published splits gets the split as prefix."""
    groups: dict[tuple[str, str], list[Item]] = {}
    for item in items:
        groups.setdefault((item.label, item.name), []).append(item)
    resolved: list[Item] = []
    for (label, name), group in groups.items():
        if len(group) == 1:
            resolved.append(group[0])
            continue
        origins = [i.origin for i in group]
        if "" in origins or len(set(origins)) != len(origins):
            sources = ", ".join(str(i.src) for i in group)
            raise DatasetError(f"two source images would both become {label}/{name}: {sources}")
        resolved += [Item(i.src, i.label, i.split, i.origin, f"{i.origin}_{i.name}") for i in group]
    final = {}
    for item in resolved:
        key = f"{item.label}/{item.name}"
        if key in final:
            raise DatasetError(f"two source images would both become {key}: {final[key].src} and {item.src}")
        final[key] = item
    return [final[k] for k in sorted(final)]


def _check_labels(card: DatasetCard, labels: set[str]) -> None:
    for label in labels:
        if label in (".", "..") or label.startswith(".") or "/" in label or "\\" in label or "\x00" in label:
            raise DatasetError(f"{card.name}: class name {label!r} cannot be a folder name")


def _check_out(out: Path, src: Path, planned: set[str], labels: set[str]) -> list[Path]:
    """Refuse an OUT that overlaps SRC or holds files `prepare` did not put there; return our stale temp files."""
    real_out, real_src = out.resolve(), src.resolve()
    if real_out == real_src or real_src in real_out.parents or real_out in real_src.parents:
        raise DatasetError(f"OUT {str(out)!r} and SRC {str(src)!r} overlap; choose an OUT outside the download")
    if not out.exists():
        return []
    if not out.is_dir():
        raise DatasetError(f"OUT {str(out)!r} exists and is not a folder")
    unrelated, stale = [], []
    for dirpath, dirnames, filenames in os.walk(out):
        here = Path(dirpath)
        rel_dir = here.relative_to(out)
        for d in list(dirnames):
            if rel_dir != Path(".") or d not in labels or (here / d).is_symlink():
                unrelated.append((rel_dir / d).as_posix() + "/")
                dirnames.remove(d)
        for f in filenames:
            rel = (rel_dir / f).as_posix()
            if rel in planned or rel in _OUT_FILES:
                continue
            if f.endswith(_TMP_SUFFIX) or (rel_dir == Path(".") and f.startswith(tuple(f".{n}." for n in _OUT_FILES))):
                stale.append(here / f)
                continue
            unrelated.append(rel)
    if unrelated:
        shown = ", ".join(sorted(unrelated)[:5]) + (f" ... and {len(unrelated) - 5} more" if len(unrelated) > 5 else "")
        raise DatasetError(
            f"OUT {str(out)!r} holds files that this `prepare` would not create: {shown}; "
            "use an empty folder, or one a previous prepare of the same dataset and download filled"
        )
    return stale


def _same_file(src: Path, dest: Path) -> bool:
    """True when `dest` already is `src` (same inode or link) or has identical bytes."""
    try:
        if os.path.samefile(src, dest):
            return True
        return dest.is_file() and src.stat().st_size == dest.stat().st_size and filecmp.cmp(src, dest, shallow=False)
    except OSError:
        return False


_LINK_FAILURES = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP}


def _place(src: Path, dest: Path, mode: str) -> bool:
    """Put `src` at `dest` (link or copy to a temp name, then rename); True when a hardlink fell back to a copy.

    The rename never writes through `dest`, so a `dest` hardlinked to a SRC file leaves that file unchanged.
    """
    tmp = dest.with_name(f".{dest.name}{_TMP_SUFFIX}")
    tmp.unlink(missing_ok=True)
    fell_back = False
    try:
        if mode == "symlink":
            os.symlink(src.absolute(), tmp)
        elif mode == "hardlink":
            try:
                os.link(src, tmp)
            except OSError as exc:
                if exc.errno not in _LINK_FAILURES:
                    raise
                shutil.copy2(src, tmp)
                fell_back = True
        else:
            shutil.copy2(src, tmp)
        os.replace(tmp, dest)
    finally:
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
    return fell_back


def _carve(out: Path, items: list[Item], carve: tuple[str, ...], val: float, test: float, seed: int) -> list[SplitRow]:
    """Stratified, seeded split of the items the layout leaves unsplit (make_splits over just those images)."""
    from agripatch.data.folder import FolderIndex
    from agripatch.data.splits import make_splits

    classes = sorted({i.label for i in items})
    index_of = {c: k for k, c in enumerate(classes)}
    samples = [(Path(i.label) / i.name, index_of[i.label]) for i in items]
    index = FolderIndex(root=out, classes=classes, samples=samples, empty_classes=[], ignored=[], loops=[])
    return make_splits(index, val=val if "val" in carve else 0.0, test=test if "test" in carve else 0.0, seed=seed)


def _place_all(items: list[Item], todo: list[Item], out: Path, mode: str,
               progress: Callable[[int, int], None] | None) -> int:
    """Place the images still to do (``items`` counts for the progress); returns how many were copied because a
    link was impossible."""
    fallbacks = 0
    for done, item in enumerate(todo, start=1):
        dest = out / item.label / item.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        fallbacks += _place(item.src, dest, mode)
        if progress is not None:
            progress(len(items) - len(todo) + done, len(items))
    if not todo and progress is not None:
        progress(len(items), len(items))
    return fallbacks


def _check_options(mode: str, val: float, test: float) -> None:
    """Refuse a placement mode or split fractions that cannot work, before anything is read or written."""
    if mode not in MODES:
        raise DatasetError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    for key, fraction in (("val", val), ("test", test)):
        if not 0.0 <= fraction < 1.0:
            raise DatasetError(f"{key} fraction must be in [0, 1), got {fraction}")
    if val + test >= 1.0:
        raise DatasetError(f"val + test must be < 1 to leave training images, got {val} + {test}")


def prepare_dataset(
    name: str,
    src: str | Path,
    out: str | Path,
    *,
    mode: str = "hardlink",
    seed: int = 0,
    val: float = 0.1,
    test: float = 0.1,
    progress: Callable[[int, int], None] | None = None,
) -> PrepareResult:
    """Turn the published download at SRC into `OUT/<class>/<file>` plus `OUT/splits.csv`.

    The official split is kept where the dataset has one; missing splits are carved by `make_splits`
    (stratified, `seed`ed, `val`/`test` fractions). SRC is only read. Files already in OUT with the
    same content are skipped, so a re-run (or a run after an interruption) is cheap; splits.csv is
    written last and atomically, and removed first whenever a file must be (re)written, so its
    presence means OUT is complete. `progress(done, total)` is called once per image.
    """
    card = load_card(name)
    _check_options(mode, val, test)
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise layout_error(card, src, "SRC is not a folder")
    plan = converter_for(name)(card, src)
    items = _resolve_names(plan.items)
    labels = {i.label for i in items}
    _check_labels(card, labels)
    planned = {f"{i.label}/{i.name}" for i in items}
    for path in _check_out(out, src, planned, labels):
        path.unlink()

    todo = [i for i in items if not _same_file(i.src, out / i.label / i.name)]
    csv_path = out / "splits.csv"
    if todo:
        csv_path.unlink(missing_ok=True)
    fallbacks = _place_all(items, todo, out, mode, progress)
    if plan.class_names is not None:
        atomic_write_text(out / "class_names.json", json.dumps(plan.class_names, indent=1, sort_keys=True) + "\n")

    from agripatch.data.splits import SplitRow, write_splits_csv

    rows = [SplitRow(path=f"{i.label}/{i.name}", label=i.label, split=i.split) for i in items if i.split is not None]
    unsplit = [i for i in items if i.split is None]
    if unsplit:
        rows += _carve(out, unsplit, plan.carve, val, test, seed)
    rows.sort(key=lambda r: r.path)
    write_splits_csv(rows, csv_path)
    counts = {s: sum(r.split == s for r in rows) for s in SPLIT_NAMES}
    published = {card.official_splits.get(i.origin) for i in items}
    official = tuple(s for s in SPLIT_NAMES if s in published)
    return PrepareResult(
        name=name,
        out=out,
        splits_csv=csv_path,
        classes=sorted(labels),
        counts=counts,
        official=official,
        carved=tuple(s for s in plan.carve if unsplit),
        written=len(todo),
        skipped=len(items) - len(todo),
        copied_instead_of_linked=fallbacks,
    )
