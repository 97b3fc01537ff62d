"""Tests for agripatch.data.splits: stratified seeded splits, CSV round trip, on-disk layouts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agripatch.data.folder import FolderIndex
from agripatch.data.splits import (
    SPLITS,
    SplitRow,
    classes_of,
    find_split_layout,
    load_splits,
    make_fold_splits,
    make_splits,
    read_splits_csv,
    samples_for,
    split_counts,
    write_splits_csv,
)
from agripatch.errors import DatasetError


def _index(sizes: dict[str, int]) -> FolderIndex:
    """A FolderIndex with `sizes[class]` fake samples per class (make_splits never opens files)."""
    classes = sorted(sizes)
    samples = [(Path(f"{name}/{i:04d}.jpg"), label) for label, name in enumerate(classes) for i in range(sizes[name])]
    return FolderIndex(root=Path("/data"), classes=classes, samples=samples)


def _counts(rows: list[SplitRow]) -> Counter[tuple[str, str]]:
    return Counter((row.label, row.split) for row in rows)


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(path)


def test_make_splits_exact_counts_ibean_sizes() -> None:
    rows = make_splits(_index({"angular_leaf_spot": 389, "bean_rust": 393, "healthy": 385}))
    counts = _counts(rows)
    assert [counts[("angular_leaf_spot", s)] for s in SPLITS] == [311, 39, 39]
    assert [counts[("bean_rust", s)] for s in SPLITS] == [315, 39, 39]
    assert [counts[("healthy", s)] for s in SPLITS] == [307, 39, 39]
    assert len(rows) == 1167
    assert len({r.path for r in rows}) == 1167
    assert [r.path for r in rows] == sorted(r.path for r in rows)


def test_make_splits_paths_and_labels_consistent() -> None:
    index = _index({"a": 10, "b": 7})
    rows = make_splits(index, val=0.2, test=0.3)
    assert {r.path for r in rows} == {p.as_posix() for p, _ in index.samples}
    assert all(r.path.startswith(r.label + "/") for r in rows)
    assert [_counts(rows)[("a", s)] for s in SPLITS] == [5, 2, 3]
    assert [_counts(rows)[("b", s)] for s in SPLITS] == [4, 1, 2]  # 1.4 -> 1, 2.1 -> 2


def test_make_splits_reproducible_and_seeded() -> None:
    index = _index({"a": 50, "b": 50})
    assert make_splits(index, seed=3) == make_splits(index, seed=3)
    assert make_splits(index, seed=3) != make_splits(index, seed=4)


def test_adding_a_class_keeps_other_assignments() -> None:
    before = {r.path: r.split for r in make_splits(_index({"b": 40, "c": 30}), seed=1)}
    after = {r.path: r.split for r in make_splits(_index({"a": 25, "b": 40, "c": 30}), seed=1)}
    assert all(after[path] == split for path, split in before.items())


def test_each_class_keeps_a_train_sample() -> None:
    rows = make_splits(_index({"one": 1, "two": 2, "three": 3}), val=0.45, test=0.45)
    counts = _counts(rows)
    assert [counts[("one", s)] for s in SPLITS] == [1, 0, 0]
    assert [counts[("two", s)] for s in SPLITS] == [1, 0, 1]
    assert [counts[("three", s)] for s in SPLITS] == [1, 1, 1]


@pytest.mark.parametrize(
    ("n", "val", "test", "expected"),
    [(10, 0.1, 0.1, (1, 1)), (385, 0.1, 0.1, (39, 39)), (5, 0.1, 0.1, (1, 1)), (4, 0.1, 0.1, (0, 0)),
     (2, 0.45, 0.45, (0, 1)), (3, 0.0, 0.5, (0, 2)), (1, 0.5, 0.4, (0, 0))],
)
def test_split_counts(n: int, val: float, test: float, expected: tuple[int, int]) -> None:
    assert split_counts(n, val, test) == expected


@pytest.mark.parametrize(
    ("val", "test", "match"),
    [(-0.1, 0.1, "val fraction"), (0.1, 1.0, "test fraction"), (0.5, 0.5, "val \\+ test must be < 1"),
     (True, 0.1, "val fraction"), ("0.1", 0.1, "val fraction")],
)
def test_make_splits_rejects_bad_fractions(val: object, test: object, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        make_splits(_index({"a": 5}), val=val, test=test)  # type: ignore[arg-type]


def test_make_splits_empty_index() -> None:
    with pytest.raises(DatasetError, match="no images"):
        make_splits(_index({}))


def test_csv_roundtrip_and_exact_text(tmp_path: Path) -> None:
    rows = [
        SplitRow("rust/z.jpg", "rust", "val"),
        SplitRow("healthy/a, b.jpg", "healthy", "train"),
        SplitRow("rust/é x.png", "rust", "test"),
    ]
    path = write_splits_csv(rows, tmp_path / "splits.csv")
    assert path.read_text(encoding="utf-8") == (
        'path,label,split\n"healthy/a, b.jpg",healthy,train\nrust/z.jpg,rust,val\nrust/é x.png,rust,test\n'
    )
    assert read_splits_csv(path) == sorted(rows, key=lambda r: r.path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("file,label,split\na.jpg,x,train\n", ":1: header"),
        ("path,label,split\na.jpg,x,train\nb.jpg,x\n", ":3: expected 3 columns"),
        ("path,label,split\na.jpg,x,train\nb.jpg,x,training\n", ":3: unknown split 'training'"),
        ("path,label,split\na.jpg,x,train\na.jpg,y,val\n", ":3: 'a.jpg' is already listed on line 2"),
        ("path,label,split\n/abs/a.jpg,x,train\n", ":2: path '/abs/a.jpg' must be"),
        ("path,label,split\n../a.jpg,x,train\n", ":2: path '../a.jpg' must be"),
        ("path,label,split\na.jpg,,train\n", ":2: empty path or label"),
        ("path,label,split\n", "lists no images"),
        ("", ":1: header"),
    ],
)
def test_read_splits_csv_errors(tmp_path: Path, text: str, match: str) -> None:
    path = tmp_path / "splits.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DatasetError, match=match) as info:
        read_splits_csv(path)
    assert "splits.csv" in str(info.value)


def test_read_splits_csv_missing(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_splits_csv(tmp_path / "splits.csv")


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    for rel in ("train/a/1.jpg", "train/b/2.png", "Valid/a/3.jpg", "test/b/4.jpg", "test/b/.hidden.jpg"):
        _img(tmp_path / rel)
    (tmp_path / "README.txt").write_text("x")
    return tmp_path


def test_find_split_layout(layout: Path) -> None:
    assert find_split_layout(layout) == [
        SplitRow("Valid/a/3.jpg", "a", "val"),
        SplitRow("test/b/4.jpg", "b", "test"),
        SplitRow("train/a/1.jpg", "a", "train"),
        SplitRow("train/b/2.png", "b", "train"),
    ]


def test_find_split_layout_rejects_class_folders(tmp_path: Path) -> None:
    _img(tmp_path / "train" / "x.jpg")
    _img(tmp_path / "healthy" / "y.jpg")
    assert find_split_layout(tmp_path) is None  # "train" is a class here
    assert find_split_layout(tmp_path / "train") is None
    _img(tmp_path / "other" / "val" / "a" / "1.jpg")
    assert find_split_layout(tmp_path / "other") is None  # no train folder


def test_find_split_layout_ambiguous(layout: Path) -> None:
    _img(layout / "val" / "a" / "5.jpg")
    with pytest.raises(DatasetError, match="'Valid' and 'val'"):
        find_split_layout(layout)


def test_load_splits_priority(layout: Path) -> None:
    assert {r.split for r in load_splits(layout)} == {"train", "val", "test"}
    write_splits_csv([SplitRow("train/a/1.jpg", "a", "val")], layout / "splits.csv")
    assert load_splits(layout) == [SplitRow("train/a/1.jpg", "a", "val")]


def test_load_splits_tells_how_to_split(tmp_path: Path) -> None:
    _img(tmp_path / "healthy" / "1.jpg")
    with pytest.raises(DatasetError, match=r"agripatch datasets split .*"):
        load_splits(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        load_splits(tmp_path / "missing")


def test_classes_of_and_samples_for() -> None:
    rows = [SplitRow("x/2.jpg", "rust", "train"), SplitRow("x/1.jpg", "healthy", "val"),
            SplitRow("x/3.jpg", "healthy", "train")]
    classes = classes_of(rows)
    assert classes == ["healthy", "rust"]
    assert samples_for(rows, "train", classes) == [("x/2.jpg", 1), ("x/3.jpg", 0)]
    assert samples_for(rows, "val", classes) == [("x/1.jpg", 0)]
    assert samples_for(rows, "test", classes) == []
    with pytest.raises(DatasetError, match="'rust', which is not in the class map"):
        samples_for(rows, "train", ["healthy"])
    with pytest.raises(DatasetError, match="unknown split"):
        samples_for(rows, "valid", classes)


# --- cross-validation folds -------------------------------------------------------------------------------


def test_fold_splits_test_every_image_exactly_once_across_the_folds():
    index = _index({"a": 23, "b": 7, "c": 5})
    tested = Counter()
    for fold in range(5):
        rows = make_fold_splits(index, folds=5, fold=fold, val=0.1, seed=3)
        assert len(rows) == 35 and len({r.path for r in rows}) == 35
        tested.update(r.path for r in rows if r.split == "test")
    assert set(tested.values()) == {1} and len(tested) == 35


def test_fold_splits_are_stratified_with_folds_differing_by_at_most_one_image_per_class():
    index = _index({"a": 23, "b": 7})
    sizes = [_counts(make_fold_splits(index, folds=5, fold=f, val=0.1)) for f in range(5)]
    assert sorted(s[("a", "test")] for s in sizes) == [4, 4, 5, 5, 5]
    assert sorted(s[("b", "test")] for s in sizes) == [1, 1, 1, 2, 2]
    # the validation split is 10% (rounded) of each class's rest: 18 or 19 left of "a" -> 2 val
    assert all(s[("a", "val")] == 2 for s in sizes)
    assert all(s[("b", "val")] == 1 for s in sizes)  # 5 or 6 left -> 0.5 / 0.6 rounds to 1


def test_fold_splits_are_reproducible_and_seeded():
    index = _index({"a": 20, "b": 10})
    assert make_fold_splits(index, 4, 1, seed=0) == make_fold_splits(index, 4, 1, seed=0)
    assert make_fold_splits(index, 4, 1, seed=0) != make_fold_splits(index, 4, 1, seed=1)


def test_fold_splits_keep_a_training_image_when_val_would_take_the_rest():
    rows = make_fold_splits(_index({"a": 2}), folds=2, fold=0, val=0.9)
    assert _counts(rows) == Counter({("a", "test"): 1, ("a", "train"): 1})


@pytest.mark.parametrize("folds, fold, match", [(1, 0, "folds must be an integer >= 2"),
                                                (5, 5, r"fold must be an integer in 0\.\.4"),
                                                (5, -1, "fold must be"),
                                                (True, 0, "folds must be")])
def test_fold_splits_reject_bad_fold_numbers(folds, fold, match):
    with pytest.raises(DatasetError, match=match):
        make_fold_splits(_index({"a": 10}), folds=folds, fold=fold)


def test_fold_splits_name_the_class_too_small_for_the_folds():
    with pytest.raises(DatasetError, match=r"class 'b' has 3 images, fewer than the 5 folds"):
        make_fold_splits(_index({"a": 10, "b": 3}), folds=5, fold=0)
