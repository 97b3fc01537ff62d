"""`datasets prepare`: turn a public dataset's download, in the layout its card describes, into an ImageFolder.

`prepare_dataset` reads that layout and builds `out/<class>/<file>` plus `out/splits.csv` (path,label,split),
keeping the official split where the dataset publishes one, so every experiment trains and tests on the same
images.
"""

from __future__ import annotations

import csv
import errno
import filecmp
import json
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agripatch.errors import DatasetError
from agripatch.io.atomic import atomic_write_text
from agripatch.io.images import is_image_path

if TYPE_CHECKING:  # splits/folder import torch; load them only when prepare needs them
    from agripatch.data.splits import SplitRow

from agripatch.data.cards import MODES, SPLIT_NAMES, DatasetCard, load_card

_TMP_SUFFIX = ".agripatch-tmp"
_OUT_FILES = ("splits.csv", "class_names.json")


# ------------------------------------------------------------------------------------- converters


@dataclass(frozen=True)
class _Item:
    """One image to place: `src` goes to `out/<label>/<name>`; split None means `make_splits` assigns it."""

    src: Path
    label: str
    split: str | None
    origin: str  # the published split folder it came from ("" when the layout has none)
    name: str


@dataclass
class _Plan:
    items: list[_Item]
    carve: tuple[str, ...]  # splits that make_splits carves from the items whose split is None
    class_names: dict[str, str] | None = None


def _describe(src: Path, limit: int = 12) -> str:
    """What is at `src`, for error messages: its top-level entries, folders marked with '/'."""
    if not src.exists():
        return "nothing: the path does not exist"
    if not src.is_dir():
        return "a file, not a folder"
    entries = sorted(src.iterdir())
    if not entries:
        return "an empty folder"
    shown = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
    more = f" ... and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(shown) + more


def _layout_error(card: DatasetCard, src: Path, problem: str) -> DatasetError:
    layout = "\n".join("    " + line for line in card.raw_layout.rstrip().splitlines())
    return DatasetError(
        f"{card.name}: {problem}\nexpected the published layout:\n{layout}\nfound in {str(src)!r}: {_describe(src)}"
    )


def _is_image(path: Path) -> bool:
    return is_image_path(path) and path.is_file()


def _class_folders(root: Path) -> dict[str, list[Path]]:
    """`root/<class>/<image>`: class name -> its images (sorted), for the sub-folders that hold images directly."""
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            images = sorted(p for p in child.iterdir() if _is_image(p))
            if images:
                found[child.name] = images
    return found


def _items(folders: dict[str, list[Path]], split: str | None, origin: str) -> list[_Item]:
    return [_Item(p, label, split, origin, p.name) for label, paths in folders.items() for p in paths]


def _plantvillage(card: DatasetCard, src: Path) -> _Plan:
    root = next((r for r in (src / "color", src / "raw" / "color") if r.is_dir()), src)
    folders = _class_folders(root)
    if not folders:
        raise _layout_error(card, src, f"no class folder with images directly inside {str(root)!r}")
    return _Plan(_items(folders, None, ""), carve=("val", "test"))


def _plantdoc(card: DatasetCard, src: Path) -> _Plan:
    train, test = _class_folders(src / "train"), _class_folders(src / "test")
    if not train or not test:
        missing = " and ".join(s for s, f in (("train/", train), ("test/", test)) if not f)
        raise _layout_error(card, src, f"no class folders with images in {missing}")
    return _Plan(_items(train, None, "train") + _items(test, "test", "test"), carve=("val",))


def _ibean(card: DatasetCard, src: Path) -> _Plan:
    train = _class_folders(src / "train")
    if not train:
        raise _layout_error(card, src, "no class folders with images in train/")
    items: list[_Item] = []
    carve = []
    for published, split in (("validation", "val"), ("test", "test")):
        folders = _class_folders(src / published)
        if folders:
            items += _items(folders, split, published)
        elif (src / published).exists():
            raise _layout_error(card, src, f"{published}/ holds no class folders with images")
        else:
            carve.append(split)
    items += _items(train, None if carve else "train", "train")
    return _Plan(items, carve=tuple(carve))


def _folder_name(disease: str) -> str:
    """Filesystem-safe class folder for a cassava label: the abbreviation in parentheses, else a slug."""
    match = re.search(r"\(([A-Za-z0-9]+)\)", disease)
    if match:
        return match.group(1).lower()
    return re.sub(r"[^a-z0-9]+", "_", disease.lower()).strip("_") or "unnamed"


def _cassava(card: DatasetCard, src: Path) -> _Plan:
    table, mapping, images = src / "train.csv", src / "label_num_to_disease_map.json", src / "train_images"
    absent = [p.name for p in (table, mapping, images) if not p.exists()]
    if absent:
        raise _layout_error(card, src, f"missing {', '.join(absent)}")
    try:
        diseases = json.loads(mapping.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cassava: cannot read {str(mapping)!r}: {exc}") from exc
    if not isinstance(diseases, dict) or not all(isinstance(v, str) for v in diseases.values()):
        raise DatasetError(f"cassava: {str(mapping)!r} must map label numbers to names, like {{\"0\": \"...\"}}")
    folders = {str(k): _folder_name(v) for k, v in diseases.items()}
    if len(set(folders.values())) != len(folders):
        raise DatasetError(f"cassava: disease names in {str(mapping)!r} give clashing folder names {folders}")
    items: list[_Item] = []
    missing: list[str] = []
    seen: set[str] = set()
    with table.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"image_id", "label"} <= set(reader.fieldnames):
            raise _layout_error(card, src, f"train.csv has columns {reader.fieldnames}, not image_id,label")
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
                items.append(_Item(path, folders[label], None, "", image_id))
            else:
                missing.append(image_id)
    if missing:
        raise _layout_error(
            card, src, f"train.csv names {len(missing)} image(s) not in train_images/, e.g. {', '.join(missing[:5])}"
        )
    if not items:
        raise _layout_error(card, src, "train.csv lists no images")
    return _Plan(items, carve=("val", "test"))


_WNID = re.compile(r"^n\d{8}$")


def _imagenet(card: DatasetCard, src: Path) -> _Plan:
    kaggle = src / "ILSVRC" / "Data" / "CLS-LOC"
    base = kaggle if (kaggle / "train").is_dir() else src
    train = _class_folders(base / "train")
    if not train:
        raise _layout_error(card, src, "no class folders with images in train/")
    bad = [c for c in train if not _WNID.match(c)]
    if bad:
        raise _layout_error(card, src, f"train/ folders are not WordNet ids (n + 8 digits): {', '.join(bad[:5])}")
    items = _items(train, "train", "train")
    val_dir = base / "val"
    val = _class_folders(val_dir)
    if val:
        items += _items(val, "val", "val")
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
    return _Plan(items, carve=(), class_names=names)


def _imagenet_flat_val(card: DatasetCard, src: Path, base: Path, val_dir: Path) -> list[_Item]:
    solution = next((p for p in (src / "LOC_val_solution.csv", base / "LOC_val_solution.csv") if p.is_file()), None)
    flat = {p.stem: p for p in sorted(val_dir.iterdir()) if _is_image(p)} if val_dir.is_dir() else {}
    if not flat or solution is None:
        problem = "flat val/ without LOC_val_solution.csv" if flat else "val/ has neither class folders nor flat images"
        raise _layout_error(card, src, problem)
    items, missing = [], []
    with solution.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"ImageId", "PredictionString"} <= set(reader.fieldnames):
            wanted = "ImageId,PredictionString"
            raise _layout_error(card, src, f"{solution.name} has columns {reader.fieldnames}, not {wanted}")
        for line, row in enumerate(reader, start=2):
            image_id, tokens = (row["ImageId"] or "").strip(), (row["PredictionString"] or "").split()
            if not tokens or not _WNID.match(tokens[0]):
                raise DatasetError(f"imagenet: {solution.name} line {line}: PredictionString must start with a wnid")
            if image_id in flat:
                path = flat[image_id]
                items.append(_Item(path, tokens[0], "val", "val", path.name))
            else:
                missing.append(image_id)
    if missing:
        raise _layout_error(
            card, src, f"{solution.name} names {len(missing)} image(s) not in val/, e.g. {', '.join(missing[:5])}"
        )
    return items


_CONVERTERS: dict[str, Callable[[DatasetCard, Path], _Plan]] = {
    "plantvillage": _plantvillage,
    "plantdoc": _plantdoc,
    "cassava": _cassava,
    "ibean": _ibean,
    "imagenet": _imagenet,
}


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


def _resolve_names(items: list[_Item]) -> list[_Item]:
    """Give every item a unique `<label>/<name>`; a name shared by several published splits gets the split as prefix."""
    groups: dict[tuple[str, str], list[_Item]] = {}
    for item in items:
        groups.setdefault((item.label, item.name), []).append(item)
    resolved: list[_Item] = []
    for (label, name), group in groups.items():
        if len(group) == 1:
            resolved.append(group[0])
            continue
        origins = [i.origin for i in group]
        if "" in origins or len(set(origins)) != len(origins):
            sources = ", ".join(str(i.src) for i in group)
            raise DatasetError(f"two source images would both become {label}/{name}: {sources}")
        resolved += [_Item(i.src, i.label, i.split, i.origin, f"{i.origin}_{i.name}") for i in group]
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


def _carve(out: Path, items: list[_Item], carve: tuple[str, ...], val: float, test: float, seed: int) -> list[SplitRow]:
    """Stratified, seeded split of the items the layout leaves unsplit (make_splits over just those images)."""
    from agripatch.data.folder import FolderIndex
    from agripatch.data.splits import make_splits

    classes = sorted({i.label for i in items})
    index_of = {c: k for k, c in enumerate(classes)}
    samples = [(Path(i.label) / i.name, index_of[i.label]) for i in items]
    index = FolderIndex(root=out, classes=classes, samples=samples, empty_classes=[], ignored=[], loops=[])
    return make_splits(index, val=val if "val" in carve else 0.0, test=test if "test" in carve else 0.0, seed=seed)


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
    if mode not in MODES:
        raise DatasetError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    for key, fraction in (("val", val), ("test", test)):
        if not 0.0 <= fraction < 1.0:
            raise DatasetError(f"{key} fraction must be in [0, 1), got {fraction}")
    if val + test >= 1.0:
        raise DatasetError(f"val + test must be < 1 to leave training images, got {val} + {test}")
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise _layout_error(card, src, "SRC is not a folder")
    plan = _CONVERTERS[name](card, src)
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
    fallbacks = 0
    for done, item in enumerate(todo, start=1):
        dest = out / item.label / item.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        fallbacks += _place(item.src, dest, mode)
        if progress is not None:
            progress(len(items) - len(todo) + done, len(items))
    if not todo and progress is not None:
        progress(len(items), len(items))
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
