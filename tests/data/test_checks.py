"""Tests for agripatch.data.checks: every planted problem is found, nothing on disk changes."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from agripatch.data.checks import (
    PROBLEM_KINDS,
    CheckReport,
    Problem,
    check_dataset,
    render_report,
)
from agripatch.data.splits import SplitRow, write_splits_csv
from agripatch.errors import DatasetError


def _img(path: Path, seed: int) -> Path:
    """A tiny random JPEG (distinct bytes per seed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, "JPEG")
    return path


def _snapshot(root: Path) -> dict[str, tuple[int, bytes]]:
    """lstat mtime and bytes of every regular file under root (links not followed)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder) / name
            if not path.is_symlink():
                out[str(path)] = (path.lstat().st_mtime_ns, path.read_bytes())
    return out


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A train/val layout with one of each problem."""
    root = tmp_path / "ds"
    _img(root / "train/healthy/h1.jpg", 1)
    _img(root / "train/healthy/h2.jpg", 2)
    shutil.copy(root / "train/healthy/h2.jpg", root / "train/healthy/h2 copy.jpg")  # duplicate
    _img(root / "train/rust/r1.jpg", 3)
    _img(root / "train/blight/b1.jpg", 4)
    data = _img(root / "train/rust/cut.jpg", 5).read_bytes()
    (root / "train/rust/cut.jpg").write_bytes(data[: len(data) // 2])  # truncated
    (root / "train/rust/zero.jpg").write_bytes(b"")
    (root / "train/rust/notes.txt").write_text("informational only")
    (root / "train/empty_cls").mkdir()
    os.symlink("..", root / "train/healthy/loop")
    _img(root / "val/healthy/v1.jpg", 6)
    (root / "val/rust").mkdir()
    shutil.copy(root / "train/rust/r1.jpg", root / "val/rust/leak.jpg")  # leak across splits
    return root


def _by_kind(report: CheckReport) -> dict[str, list[Problem]]:
    out: dict[str, list[Problem]] = {}
    for p in report.problems:
        out.setdefault(p.kind, []).append(p)
    return out


def test_flags_every_planted_problem(planted: Path) -> None:
    before = _snapshot(planted)
    report = check_dataset(planted)
    assert _snapshot(planted) == before  # read-only

    assert report.source == "layout"
    assert report.classes == ["blight", "healthy", "rust"]
    assert report.counts == {
        "train": {"blight": 1, "healthy": 3, "rust": 3},
        "val": {"blight": 0, "healthy": 1, "rust": 1},
    }
    assert report.num_images == 9
    assert not report.ok
    kinds = _by_kind(report)
    assert set(kinds) == {"unreadable", "empty_class", "symlink_loop", "duplicate", "leak", "missing_class"}
    assert set(kinds) <= set(PROBLEM_KINDS)
    unreadable = {p.paths[0]: p.detail for p in kinds["unreadable"]}
    assert set(unreadable) == {"train/rust/cut.jpg", "train/rust/zero.jpg"}
    assert "truncated" in unreadable["train/rust/cut.jpg"]
    assert "empty" in unreadable["train/rust/zero.jpg"]
    assert [p.paths for p in kinds["empty_class"]] == [["train/empty_cls"]]
    assert [p.paths for p in kinds["symlink_loop"]] == [["train/healthy/loop"]]
    assert [p.paths for p in kinds["duplicate"]] == [["train/healthy/h2 copy.jpg", "train/healthy/h2.jpg"]]
    assert [p.paths for p in kinds["leak"]] == [["train/rust/r1.jpg", "val/rust/leak.jpg"]]
    assert "train and val" in kinds["leak"][0].detail
    assert len(kinds["missing_class"]) == 1
    assert "'blight'" in kinds["missing_class"][0].detail and "'val'" in kinds["missing_class"][0].detail
    assert report.ignored == ["train/rust/notes.txt"]


def test_report_is_json_safe(planted: Path) -> None:
    report = check_dataset(planted)
    payload = json.loads(json.dumps(report.to_dict()))
    assert payload["ok"] is False
    assert payload["num_images"] == 9
    assert len(payload["problems"]) == len(report.problems)
    assert set(payload["problems"][0]) == {"kind", "paths", "detail"}


def test_clean_plain_folder_with_progress(tmp_path: Path) -> None:
    for i in range(3):
        _img(tmp_path / "a" / f"{i}.jpg", i)
        _img(tmp_path / "b" / f"{i}.png", 10 + i)
    (tmp_path / "labels.csv").write_text("informational")
    calls: list[tuple[int, int]] = []
    report = check_dataset(tmp_path, progress=lambda done, total: calls.append((done, total)))
    assert report.ok
    assert report.source == "folder"
    assert report.counts == {"train": {"a": 3, "b": 3}}
    assert report.ignored == ["labels.csv"]
    assert calls == [(i, 6) for i in range(1, 7)]


def test_splits_csv_source(tmp_path: Path) -> None:
    _img(tmp_path / "a" / "1.jpg", 1)
    _img(tmp_path / "a" / "2.jpg", 2)
    _img(tmp_path / "b" / "3.jpg", 3)
    _img(tmp_path / "b" / "new.jpg", 4)
    write_splits_csv(
        [SplitRow("a/1.jpg", "a", "train"), SplitRow("b/3.jpg", "b", "train"),
         SplitRow("a/2.jpg", "a", "test"), SplitRow("b/gone.jpg", "b", "test")],
        tmp_path / "splits.csv",
    )
    report = check_dataset(tmp_path)
    assert report.source == "splits.csv"
    assert report.counts == {"train": {"a": 1, "b": 1}, "test": {"a": 1, "b": 1}}
    assert report.unlisted == ["b/new.jpg"]
    assert report.ignored == []  # splits.csv itself is expected, not clutter
    assert [(p.kind, p.paths) for p in report.problems] == [("unreadable", ["b/gone.jpg"])]
    assert "does not exist" in report.problems[0].detail


def test_single_class_is_a_problem(tmp_path: Path) -> None:
    _img(tmp_path / "only" / "1.jpg", 1)
    report = check_dataset(tmp_path)
    assert [p.kind for p in report.problems] == ["too_few_classes"]


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        check_dataset(tmp_path / "none")


def test_render_report_names_every_path(planted: Path) -> None:
    os.symlink("..", planted / "train/rust/[bold]odd")  # markup-like names print literally
    report = check_dataset(planted)
    console = Console(record=True, width=200, color_system=None)
    render_report(report, console)
    text = console.export_text()
    for name in ("blight", "healthy", "rust", "train", "val", "total"):
        assert name in text
    for problem in report.problems:
        for path in problem.paths:
            assert path in text
    assert "[bold]odd" in text
    assert "1 non-image file(s) ignored" in text


def test_render_clean_report(tmp_path: Path) -> None:
    _img(tmp_path / "a" / "1.jpg", 1)
    _img(tmp_path / "b" / "1.jpg", 2)
    console = Console(record=True, width=120, color_system=None)
    render_report(check_dataset(tmp_path), console)
    assert "no problems found" in console.export_text()


def test_ibean_train_is_clean(shared_data: Path) -> None:
    report = check_dataset(shared_data / "ibean" / "train")
    assert report.classes == ["angular_leaf_spot", "bean_rust", "healthy"]
    assert report.num_images == 1167
    assert report.counts == {"train": {"angular_leaf_spot": 389, "bean_rust": 393, "healthy": 385}}
    assert report.ok, report.problems
