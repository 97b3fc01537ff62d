"""Tests for agripatch.data.folder: scanning an ImageFolder, the class map, ImageDataset."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agripatch.data.folder import (
    FolderIndex,
    ImageDataset,
    load_class_map,
    save_class_map,
    scan_image_folder,
)
from agripatch.errors import DatasetError


def _img(path: Path, value: int = 0, size: tuple[int, int] = (8, 6)) -> Path:
    """Write a tiny flat-colour image (format from the suffix) and return its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size[1], size[0], 3), value, np.uint8)).save(path)
    return path


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """A class folder tree with every kind of clutter a real download has."""
    root = tmp_path / "ds"
    _img(root / "healthy" / "a.jpg")
    _img(root / "healthy" / "sub" / "b.png")
    _img(root / "healthy" / ".hidden.jpg")
    _img(root / "healthy" / ".cache" / "c.jpg")
    (root / "healthy" / "notes.txt").write_text("field notes")
    _img(root / "rust" / "é leaf 1.jpg")
    _img(root / "rust" / "Z.JPG")
    (root / "empty").mkdir()
    (root / "only_text").mkdir()
    (root / "only_text" / "readme.md").write_text("x")
    _img(root / ".git" / "x.jpg")
    (root / "README.md").write_text("dataset")
    os.symlink("..", root / "rust" / "loop")  # back to the root
    os.symlink(".", root / "healthy" / "sub" / "here")  # to its own folder
    os.symlink("self.jpg", root / "healthy" / "self.jpg")  # a link to itself: ELOOP
    return root


def test_scan_exact(messy: Path) -> None:
    index = scan_image_folder(messy)
    assert isinstance(index, FolderIndex)
    assert index.root == messy
    assert index.classes == ["healthy", "rust"]
    assert index.samples == [
        (Path("healthy/a.jpg"), 0),
        (Path("healthy/sub/b.png"), 0),
        (Path("rust/Z.JPG"), 1),
        (Path("rust/é leaf 1.jpg"), 1),
    ]
    assert index.empty_classes == ["empty", "only_text"]
    assert index.ignored == [Path("README.md"), Path("healthy/notes.txt"), Path("only_text/readme.md")]
    assert index.loops == [Path("healthy/self.jpg"), Path("healthy/sub/here"), Path("rust/loop")]


def test_scan_root_symlink_loop_is_not_a_class(tmp_path: Path) -> None:
    _img(tmp_path / "a" / "1.png")
    os.symlink(".", tmp_path / "b")
    index = scan_image_folder(tmp_path)
    assert index.classes == ["a"]
    assert index.empty_classes == []
    assert index.loops == [Path("b")]


def test_scan_follows_symlinked_class_and_keeps_dangling(tmp_path: Path) -> None:
    _img(tmp_path / "outside" / "x.png")
    root = tmp_path / "ds"
    root.mkdir()
    os.symlink(tmp_path / "outside", root / "linked")
    os.symlink(tmp_path / "missing.jpg", tmp_path / "outside" / "gone.jpg")
    index = scan_image_folder(root)
    assert index.classes == ["linked"]
    assert index.samples == [(Path("linked/gone.jpg"), 0), (Path("linked/x.png"), 0)]


def test_scan_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="nope.*does not exist"):
        scan_image_folder(tmp_path / "nope")
    file = tmp_path / "file.txt"
    file.write_text("x")
    with pytest.raises(DatasetError, match="file.txt.*not a directory"):
        scan_image_folder(file)


def test_scan_empty_root(tmp_path: Path) -> None:
    index = scan_image_folder(tmp_path)
    assert (index.classes, index.samples, index.empty_classes) == ([], [], [])


def test_class_map_roundtrip(tmp_path: Path) -> None:
    path = tmp_path / "out" / "classes.json"
    save_class_map(["rust", "healthy", "tache brune é"], path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"classes": ["rust", "healthy", "tache brune é"]}
    assert load_class_map(path) == ["rust", "healthy", "tache brune é"]
    assert [p.name for p in path.parent.iterdir()] == ["classes.json"]  # no temp file left


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("not json", "not valid JSON"),
        ('["a", "b"]', "must be a JSON object"),
        ('{"names": ["a"]}', "must be a JSON object"),
        ('{"classes": []}', "no classes"),
        ('{"classes": ["a", 3]}', "non-empty strings"),
        ('{"classes": ["a", "b", "a"]}', "repeats"),
    ],
)
def test_load_class_map_errors(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "classes.json"
    path.write_text(content)
    with pytest.raises(DatasetError, match=match) as info:
        load_class_map(path)
    assert "classes.json" in str(info.value)


def test_class_map_missing_and_bad_save(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        load_class_map(tmp_path / "none.json")
    with pytest.raises(DatasetError, match="repeats"):
        save_class_map(["a", "a"], tmp_path / "c.json")
    assert not (tmp_path / "c.json").exists()


@pytest.fixture
def three(tmp_path: Path) -> tuple[Path, list[tuple[str, int]]]:
    """Three readable PNGs with distinct values and labels."""
    for i, value in enumerate((10, 20, 30)):
        _img(tmp_path / f"{i}.png", value)
    return tmp_path, [("0.png", 0), ("1.png", 1), ("2.png", 2)]


def test_dataset_smoke(three: tuple[Path, list[tuple[str, int]]]) -> None:
    root, samples = three
    ds = ImageDataset(root, samples)
    assert len(ds) == 3
    image, label = ds[1]
    assert label == 1
    assert image.shape == (6, 8, 3) and image.dtype == np.uint8
    assert int(image[0, 0, 0]) == 20
    assert int(ds[-1][0][0, 0, 0]) == 30
    with pytest.raises(IndexError):
        ds[3]


def test_dataset_transform_and_min_side(tmp_path: Path) -> None:
    _img(tmp_path / "big.jpg", 100, size=(64, 48))
    ds = ImageDataset(tmp_path, [(Path("big.jpg"), 4)], transform=lambda image: {"image": image.shape}, min_side=6)
    assert ds[0] == ((6, 8, 3), 4)


def test_dataset_skips_unreadable_once(three: tuple[Path, list[tuple[str, int]]]) -> None:
    root, samples = three
    (root / "1.png").write_bytes(b"")
    ds = ImageDataset(root, samples)
    with pytest.warns(RuntimeWarning, match=r"1\.png.*empty"):
        image, label = ds[1]
    assert (int(image[0, 0, 0]), label) == (30, 2)  # the next readable sample, in order
    assert ds.bad_paths == {root / "1.png"}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second visit must not warn again
        assert ds[1][1] == 2
        assert ImageDataset(root, samples)[1][1] == 2  # nor a fresh dataset in the same process


def test_dataset_wraps_around(three: tuple[Path, list[tuple[str, int]]]) -> None:
    root, samples = three
    (root / "2.png").write_text("not an image")
    ds = ImageDataset(root, samples)
    with pytest.warns(RuntimeWarning, match="2.png"):
        assert ds[2][1] == 0


def test_dataset_nothing_readable(tmp_path: Path) -> None:
    ds = ImageDataset(tmp_path, [("a.jpg", 0), ("b.jpg", 1)])
    with pytest.warns(RuntimeWarning), pytest.raises(DatasetError, match="none of the 2 images"):
        ds[0]
    assert ds.bad_paths == {tmp_path / "a.jpg", tmp_path / "b.jpg"}
