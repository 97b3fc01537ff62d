"""`agripatch datasets check`: find what would silently hurt a training run, without changing a file.

Every listed image is fully decoded (the same reader training uses) and hashed, so the report names
unreadable files, exact duplicates inside a split, duplicates shared by two splits (test leakage),
empty class folders, symlink loops and classes missing from a split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agripatch.data.folder import check_dataset_root, scan_image_folder
from agripatch.data.splits import (
    SPLITS,
    SPLITS_CSV,
    SplitRow,
    read_splits_csv,
    split_dirs,
)
from agripatch.errors import ImageReadError
from agripatch.io.images import read_image

PROBLEM_KINDS = (
    "unreadable",
    "empty_class",
    "symlink_loop",
    "duplicate",
    "leak",
    "missing_class",
    "too_few_classes",
)


@dataclass
class Problem:
    """One finding that needs attention: its kind (see PROBLEM_KINDS), the paths at fault, a sentence."""

    kind: str
    paths: list[str]
    detail: str


@dataclass
class CheckReport:
    """Result of `check_dataset`: counts per split and class, problems, and informational lists."""

    root: str
    source: str  # "folder", "splits.csv" or "layout"
    classes: list[str]
    counts: dict[str, dict[str, int]]
    num_images: int
    problems: list[Problem] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  # non-image files: informational
    unlisted: list[str] = field(default_factory=list)  # images on disk absent from splits.csv

    @property
    def ok(self) -> bool:
        """True when no problem was found (ignored and unlisted files do not count)."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the whole report, with `ok` included."""
        out = asdict(self)
        out["ok"] = self.ok
        return out


ProgressFn = Callable[[int, int], None]


def check_dataset(root: str | Path, *, progress: ProgressFn | None = None, workers: int = 2) -> CheckReport:
    """Check a dataset (plain ImageFolder, splits.csv, or train/val/test layout); read-only.

    `progress(done, total)` is called after each image is decoded. A plain ImageFolder without
    splits.csv counts every image as 'train'.
    """
    root = check_dataset_root(root)
    found = _collect(root)
    rows = found.rows
    classes = sorted({row.label for row in rows})
    present = [s for s in SPLITS if any(row.split == s for row in rows)]
    counts = {s: {c: 0 for c in classes} for s in present}
    for row in rows:
        counts[row.split][row.label] += 1
    problems = list(found.problems)
    digests = _decode_and_hash(root, rows, problems, progress, workers)
    problems.extend(_duplicates(rows, digests))
    problems.extend(
        Problem("missing_class", [], f"class {name!r} has no images in split {split!r}")
        for split, per_class in counts.items()
        for name, n in per_class.items()
        if n == 0 and (split, name) not in found.empty
    )
    if len(classes) < 2:
        problems.append(Problem("too_few_classes", [], f"found {len(classes)} class(es); training needs at least 2"))
    return CheckReport(
        root=str(root),
        source=found.source,
        classes=classes,
        counts=counts,
        num_images=len(rows),
        problems=problems,
        ignored=found.ignored,
        unlisted=sorted(found.on_disk - {row.path for row in rows}) if found.source == SPLITS_CSV else [],
    )


@dataclass
class _Collected:
    """What the folder scan found before any decoding."""

    rows: list[SplitRow]
    source: str
    problems: list[Problem]
    ignored: list[str]
    on_disk: set[str]
    empty: set[tuple[str, str]]  # (split, class) with an empty class folder


def _collect(root: Path) -> _Collected:
    """Scan the folders (one per split in a layout), then pick rows from splits.csv, layout or folder."""
    layout = split_dirs(root) or {}
    parts = [(split, f"{name}/") for split, name in layout.items()] or [("train", "")]
    found = _Collected([], "folder", [], [], set(), set())
    for split, prefix in parts:
        index = scan_image_folder(root / prefix)
        for rel, label in index.samples:
            found.rows.append(SplitRow(prefix + rel.as_posix(), index.classes[label], split))
        for name in index.empty_classes:
            found.empty.add((split, name))
            found.problems.append(
                Problem("empty_class", [prefix + name], f"class folder {prefix + name!r} has no images")
            )
        for loop in index.loops:
            found.problems.append(
                Problem("symlink_loop", [prefix + loop.as_posix()], "symlink leads back into its own folder; skipped")
            )
        found.ignored.extend(prefix + p.as_posix() for p in index.ignored)
    found.on_disk = {row.path for row in found.rows}
    found.ignored = sorted(p for p in found.ignored if p != SPLITS_CSV)
    if (root / SPLITS_CSV).is_file():
        found.rows, found.source = read_splits_csv(root / SPLITS_CSV), SPLITS_CSV
    elif layout:
        found.source = "layout"
    found.rows.sort(key=lambda r: r.path)
    return found


def _decode_and_hash(
    root: Path, rows: list[SplitRow], problems: list[Problem], progress: ProgressFn | None, workers: int
) -> dict[str, str]:
    """Fully decode every row's image (threads) and return sha256 per readable path."""

    def work(row: SplitRow) -> tuple[str, str | None, str | None]:
        path = root / row.path
        try:
            read_image(path)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except ImageReadError as exc:
            return row.path, None, exc.reason
        except OSError as exc:
            return row.path, None, f"cannot read the file ({exc.strerror or exc})"
        return row.path, digest, None

    digests: dict[str, str] = {}
    total = len(rows)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, (rel, digest, reason) in enumerate(pool.map(work, rows), start=1):
            if digest is None:
                problems.append(Problem("unreadable", [rel], reason or "unreadable"))
            else:
                digests[rel] = digest
            if progress is not None:
                progress(done, total)
    return digests


def _duplicates(rows: list[SplitRow], digests: dict[str, str]) -> list[Problem]:
    """Groups of byte-identical images: 'leak' when they span splits, else 'duplicate'."""
    split_of = {row.path: row.split for row in rows}
    groups: dict[str, list[str]] = {}
    for path, digest in digests.items():
        groups.setdefault(digest, []).append(path)
    problems = []
    for paths in sorted((sorted(g) for g in groups.values() if len(g) > 1), key=lambda g: g[0]):
        splits = sorted({split_of[p] for p in paths}, key=SPLITS.index)
        if len(splits) > 1:
            problems.append(Problem("leak", paths, f"identical images in {' and '.join(splits)} (evaluation leakage)"))
        else:
            problems.append(Problem("duplicate", paths, f"{len(paths)} identical images in {splits[0]}"))
    return problems


def render_report(report: CheckReport, console: Console) -> None:
    """Print the counts table (class x split) and every problem with the paths at fault."""
    splits = list(report.counts)
    table = Table(title=escape(f"{report.root} ({report.source})"))
    table.add_column("class")
    for split in splits:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for name in report.classes:
        per = [report.counts[s].get(name, 0) for s in splits]
        table.add_row(escape(name), *map(str, per), str(sum(per)))
    totals = [sum(report.counts[s].values()) for s in splits]
    table.add_row("[bold]total[/bold]", *map(str, totals), str(report.num_images))
    console.print(table)
    if report.ignored:
        console.print(f"[dim]{len(report.ignored)} non-image file(s) ignored, e.g. {escape(report.ignored[0])}[/dim]")
    if report.unlisted:
        console.print(
            f"[yellow]{len(report.unlisted)} image(s) on disk are not in {SPLITS_CSV}, "
            f"e.g. {escape(report.unlisted[0])}[/yellow]"
        )
    if report.ok:
        console.print("[green]no problems found[/green]")
        return
    console.print(f"[red]{len(report.problems)} problem(s):[/red]")
    for problem in report.problems:
        where = f": {', '.join(problem.paths)}" if problem.paths else ""
        console.print(f"  [bold]{problem.kind}[/bold] " + escape(problem.detail + where), highlight=False)
