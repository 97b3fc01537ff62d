"""Dataset cards load and validate; `prepare` turns each published layout into an ImageFolder + splits.csv."""

from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agripatch.data.cards import (
    DatasetCard,
    card_names,
    cards_dir,
    list_cards,
    load_card,
    read_card,
)
from agripatch.data.prepare import prepare_dataset
from agripatch.errors import DatasetError

NAMES = ["cassava", "ibean", "imagenet", "plantdoc", "plantvillage"]


# ----------------------------------------------------------------------------------------- helpers


def _jpeg(path: Path, seed: int) -> Path:
    """A distinct 32x32 JPEG (content depends on `seed`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(path, format="JPEG")
    return path


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file's sha256 and every entry's mtime under `root`, to prove it was not modified."""
    snap = {}
    for path in sorted(root.rglob("*")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
        snap[path.relative_to(root).as_posix()] = (digest, path.stat().st_mtime_ns)
    snap["."] = ("dir", root.stat().st_mtime_ns)
    return snap


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "splits.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def _tree(out: Path) -> set[str]:
    """`class/file` for every image in the ImageFolder."""
    return {p.relative_to(out).as_posix() for p in out.glob("*/*")}


def _prepare_checked(name: str, src: Path, out: Path, **kwargs):
    """Run prepare twice; check src untouched, rows match the folder, and the re-run is a no-op."""
    before = _snapshot(src)
    first = prepare_dataset(name, src, out, **kwargs)
    rows = _rows(out)
    assert [r["path"] for r in rows] == sorted(_tree(out))
    assert all(r["path"].split("/")[0] == r["label"] for r in rows)
    assert all((out / r["path"]).is_file() for r in rows)
    assert first.written == len(rows) and first.skipped == 0
    csv_bytes = (out / "splits.csv").read_bytes()
    again = prepare_dataset(name, src, out, **kwargs)
    assert (again.written, again.skipped) == (0, len(rows))
    assert (out / "splits.csv").read_bytes() == csv_bytes
    assert _snapshot(src) == before
    return first, rows


def _by_split(rows: list[dict[str, str]]) -> dict[str, set[str]]:
    split: dict[str, set[str]] = {}
    for r in rows:
        split.setdefault(r["split"], set()).add(r["path"])
    return split


# ------------------------------------------------------------------------------------------- cards


def test_cards_ship_inside_the_package():
    import agripatch

    assert cards_dir() == Path(agripatch.__file__).resolve().parent / "resources" / "datasets"
    assert card_names() == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_every_card_loads_and_is_consistent(name):
    card = load_card(name)
    assert isinstance(card, DatasetCard) and card.name == name
    assert card.source.startswith("https://")
    assert "<src>" in card.raw_layout
    if card.classes is not None:
        assert len(card.classes) == len(set(card.classes)) == card.num_classes
    assert set(card.official_splits.values()) <= {"train", "val", "test"}


def test_card_facts():
    cards = {c.name: c for c in list_cards()}
    assert list(cards) == NAMES
    assert cards["ibean"].classes == ["angular_leaf_spot", "bean_rust", "healthy"]
    assert cards["ibean"].num_images == {"train": 1034, "val": 133, "test": 128}
    assert cards["ibean"].official_splits == {"train": "train", "validation": "val", "test": "test"}
    assert cards["cassava"].classes == ["cbb", "cbsd", "cgm", "cmd", "healthy"]
    assert cards["plantvillage"].num_classes == 38 and cards["plantvillage"].official_splits == {}
    assert cards["imagenet"].classes is None and cards["imagenet"].num_classes == 1000
    assert cards["imagenet"].mean == [0.485, 0.456, 0.406] and cards["imagenet"].std == [0.229, 0.224, 0.225]
    assert cards["plantdoc"].mean is None and "10.1145/3371158.3371196" in cards["plantdoc"].citation


def test_unknown_name_lists_known():
    with pytest.raises(DatasetError, match=r"unknown dataset 'plantvilage'.*cassava, ibean, imagenet, plantdoc"):
        load_card("plantvilage")


def _edited_card(tmp_path: Path, old: str, new: str) -> Path:
    text = (cards_dir() / "ibean.yaml").read_text()
    assert old in text
    path = tmp_path / "ibean.yaml"
    path.write_text(text.replace(old, new, 1))
    return path


def test_card_copy_validates(tmp_path):
    assert read_card(_edited_card(tmp_path, "licence: MIT", "licence: MIT")) == load_card("ibean")


def test_card_unknown_key_is_named(tmp_path):
    path = _edited_card(tmp_path, "licence: MIT", "licence: MIT\nlicense: MIT")
    with pytest.raises(DatasetError, match=r"ibean\.yaml.*unknown key 'license'"):
        read_card(path)


@pytest.mark.parametrize(
    ("old", "new", "key"),
    [
        ("num_classes: 3", "num_classes: three", "num_classes"),
        ("num_classes: 3", "num_classes: true", "num_classes"),
        ("mean: null", "mean: [0.5, 0.5]", "mean"),
        ("  validation: val", "  validation: valid", "official_splits"),
        ("  train: 1034", "  train: many", "num_images"),
        ("licence: MIT", "licence: [MIT]", "licence"),
    ],
)
def test_card_wrong_type_is_named(tmp_path, old, new, key):
    with pytest.raises(DatasetError, match=rf"ibean\.yaml.*key '{key}' must be"):
        read_card(_edited_card(tmp_path, old, new))


def test_card_missing_key_and_bad_consistency(tmp_path):
    with pytest.raises(DatasetError, match="missing key 'licence'"):
        read_card(_edited_card(tmp_path, "licence: MIT\n", ""))
    with pytest.raises(DatasetError, match="'classes' lists 3 names but num_classes is 4"):
        read_card(_edited_card(tmp_path, "num_classes: 3", "num_classes: 4"))
    with pytest.raises(DatasetError, match="'name' is 'beans'"):
        read_card(_edited_card(tmp_path, "name: ibean", "name: beans"))


# -------------------------------------------------------------------------------------- converters


def test_plantvillage_color_wrapper_hardlinks_and_stratifies(tmp_path):
    src, out = tmp_path / "PlantVillage", tmp_path / "out"
    classes = ["Apple___Apple_scab", "Apple___healthy", "Corn_(maize)___Common_rust_"]
    expected = set()
    for c, cls in enumerate(classes):
        for k, ext in enumerate([".JPG", ".jpg", ".png", ".JPG", ".jpg", ".JPG", ".jpg", ".JPG", ".jpg", ".JPG"]):
            _jpeg(src / "raw" / "color" / cls / f"img{k}{ext}", seed=10 * c + k)
            expected.add(f"{cls}/img{k}{ext}")
        _jpeg(src / "raw" / "grayscale" / cls / "gray.jpg", seed=99)  # other versions are not taken
    (src / "raw" / "color" / classes[0] / "README.txt").write_text("not an image")
    result, rows = _prepare_checked("plantvillage", src / "raw", out, val=0.2, test=0.2, seed=3)
    assert _tree(out) == expected
    assert result.classes == classes and result.official == () and result.carved == ("val", "test")
    assert os.path.samefile(out / classes[0] / "img0.JPG", src / "raw" / "color" / classes[0] / "img0.JPG")
    splits = _by_split(rows)
    assert set(splits) == {"train", "val", "test"}
    for cls in classes:  # stratified: every class in every split
        for split in splits.values():
            assert any(p.startswith(cls + "/") for p in split)
    assert result.counts == {s: len(v) for s, v in splits.items()}
    # same seed -> same split into a fresh folder; another seed -> another split
    again = prepare_dataset("plantvillage", src, tmp_path / "out2", val=0.2, test=0.2, seed=3, mode="copy")
    assert _rows(tmp_path / "out2") == rows and again.copied_instead_of_linked == 0
    prepare_dataset("plantvillage", src, tmp_path / "out3", val=0.2, test=0.2, seed=4)
    assert _rows(tmp_path / "out3") != rows


def test_plantdoc_keeps_test_carves_val_and_renames_collisions(tmp_path):
    src, out = tmp_path / "PlantDoc-Dataset", tmp_path / "out"
    classes = ["Apple Scab Leaf", "Tomato leaf late blight"]
    test_files = set()
    for c, cls in enumerate(classes):
        for k in range(8):
            _jpeg(src / "train" / cls / f"train{k}.jpg", seed=100 * c + k)
        for k in range(2):
            _jpeg(src / "test" / cls / f"test{k}.jpg", seed=100 * c + 50 + k)
            test_files.add(f"{cls}/test{k}.jpg")
    _jpeg(src / "train" / classes[0] / "leaf %20 a?b.jpg", seed=7)  # same web file name in train and test
    _jpeg(src / "test" / classes[0] / "leaf %20 a?b.jpg", seed=8)
    test_files.add(f"{classes[0]}/test_leaf %20 a?b.jpg")
    result, rows = _prepare_checked("plantdoc", src, out, mode="copy", val=0.25, seed=0)
    splits = _by_split(rows)
    assert splits["test"] == test_files  # official test kept exactly
    assert result.official == ("train", "test") and result.carved == ("val",)
    assert splits["val"] and not splits["val"] & test_files
    assert {p.split("/")[0] for p in splits["val"]} == set(classes)
    assert len(splits["train"]) + len(splits["val"]) == 17
    collided = out / classes[0]
    for split in ("train", "test"):
        original = src / split / classes[0] / "leaf %20 a?b.jpg"
        assert (collided / f"{split}_leaf %20 a?b.jpg").read_bytes() == original.read_bytes()
    assert not (collided / "leaf %20 a?b.jpg").exists()
    assert not os.path.samefile(collided / "train0.jpg", src / "train" / classes[0] / "train0.jpg")  # copied


def _cassava_src(root: Path, per_class: int = 4) -> dict[str, str]:
    names = {
        "0": "Cassava Bacterial Blight (CBB)",
        "1": "Cassava Brown Streak Disease (CBSD)",
        "2": "Cassava Green Mottle (CGM)",
        "3": "Cassava Mosaic Disease (CMD)",
        "4": "Healthy",
    }
    (root / "train_images").mkdir(parents=True)
    (root / "label_num_to_disease_map.json").write_text(json.dumps(names))
    lines, expected = ["image_id,label"], {}
    for k in range(5 * per_class):
        image_id, label = f"{1000 + k}.jpg", str(k % 5)
        _jpeg(root / "train_images" / image_id, seed=k)
        lines.append(f"{image_id},{label}")
        expected[image_id] = label
    _jpeg(root / "train_images" / "unlabelled.jpg", seed=500)  # not in train.csv: left out
    (root / "train.csv").write_text("\n".join(lines) + "\n")
    return expected


def test_cassava_csv_labels_safe_folders_symlinks(tmp_path):
    src, out = tmp_path / "cassava", tmp_path / "out"
    labels = _cassava_src(src)
    result, rows = _prepare_checked("cassava", src, out, mode="symlink", val=0.25, test=0.25)
    folder = {"0": "cbb", "1": "cbsd", "2": "cgm", "3": "cmd", "4": "healthy"}
    assert _tree(out) == {f"{folder[lab]}/{img}" for img, lab in labels.items()}
    assert result.classes == load_card("cassava").classes
    link = out / "cbb" / "1000.jpg"
    assert link.is_symlink() and link.resolve() == (src / "train_images" / "1000.jpg").resolve()
    splits = _by_split(rows)
    assert set(splits) == {"train", "val", "test"} and result.carved == ("val", "test")
    assert sum(map(len, splits.values())) == 20


def test_cassava_missing_image_is_reported(tmp_path):
    src = tmp_path / "cassava"
    _cassava_src(src)
    with (src / "train.csv").open("a") as handle:
        handle.write("gone.jpg,2\n")
    with pytest.raises(DatasetError, match=r"(?s)1 image\(s\) not in train_images/, e.g. gone.jpg.*train.csv +columns"):
        prepare_dataset("cassava", src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _ibean_src(root: Path, published: tuple[str, ...]) -> dict[str, set[str]]:
    files: dict[str, set[str]] = {}
    for s, split in enumerate(published):
        for c, cls in enumerate(["angular_leaf_spot", "bean_rust", "healthy"]):
            for k in range(6 if split == "train" else 2):
                _jpeg(root / split / cls / f"{cls}_{split}.{k}.jpg", seed=1000 * s + 10 * c + k)
                files.setdefault(split, set()).add(f"{cls}/{cls}_{split}.{k}.jpg")
    return files


def test_ibean_official_split_kept_exactly(tmp_path):
    src, out = tmp_path / "ibean", tmp_path / "out"
    files = _ibean_src(src, ("train", "validation", "test"))
    result, rows = _prepare_checked("ibean", src, out)
    assert _by_split(rows) == {"train": files["train"], "val": files["validation"], "test": files["test"]}
    assert result.official == ("train", "val", "test") and result.carved == ()
    assert result.counts == {"train": 18, "val": 6, "test": 6}


def test_ibean_train_only_carves_val_and_test(tmp_path):
    src, out = tmp_path / "ibean", tmp_path / "out"
    files = _ibean_src(src, ("train",))
    result, rows = _prepare_checked("ibean", src, out, val=0.2, test=0.2)
    splits = _by_split(rows)
    assert set(splits) == {"train", "val", "test"} and set().union(*splits.values()) == files["train"]
    assert result.carved == ("val", "test")


WNIDS = ["n01440764", "n01443537", "n02084071"]


def _imagenet_src(root: Path, flat_val: bool, kaggle: bool = False) -> dict[str, set[str]]:
    images = root / "ILSVRC" / "Data" / "CLS-LOC" if kaggle else root
    files: dict[str, set[str]] = {"train": set(), "val": set()}
    lines = ["ImageId,PredictionString"]
    for c, wnid in enumerate(WNIDS):
        for k in range(3):
            _jpeg(images / "train" / wnid / f"{wnid}_{k}.JPEG", seed=10 * c + k)
            files["train"].add(f"{wnid}/{wnid}_{k}.JPEG")
        image_id = f"ILSVRC2012_val_{c + 1:08d}"
        _jpeg(images / "val" / ("" if flat_val else wnid) / f"{image_id}.JPEG", seed=100 + c)
        files["val"].add(f"{wnid}/{image_id}.JPEG")
        lines.append(f"{image_id},{wnid} 10 20 200 220 {wnid} 5 5 30 30")
    if flat_val:
        (root / "LOC_val_solution.csv").write_text("\n".join(lines) + "\n")
    (root / "LOC_synset_mapping.txt").write_text(
        "n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\nn02084071 dog, domestic dog\n"
    )
    return files


@pytest.mark.parametrize(("flat_val", "kaggle"), [(True, False), (False, False), (True, True)])
def test_imagenet_train_val_and_class_names(tmp_path, flat_val, kaggle):
    src, out = tmp_path / "imagenet", tmp_path / "out"
    files = _imagenet_src(src, flat_val, kaggle)
    result, rows = _prepare_checked("imagenet", src, out)
    assert _by_split(rows) == files  # official train/val, no test
    assert result.counts == {"train": 9, "val": 3, "test": 0} and result.official == ("train", "val")
    names = json.loads((out / "class_names.json").read_text())
    assert names == {
        "n01440764": "tench, Tinca tinca",
        "n01443537": "goldfish, Carassius auratus",
        "n02084071": "dog, domestic dog",
    }


# ------------------------------------------------------------------------------------ bad src / out


@pytest.mark.parametrize("name", NAMES)
def test_missing_src_quotes_expected_layout(tmp_path, name):
    first_layout_line = load_card(name).raw_layout.splitlines()[0].strip()
    with pytest.raises(DatasetError, match="expected the published layout") as info:
        prepare_dataset(name, tmp_path / "nowhere", tmp_path / "out")
    assert first_layout_line in str(info.value) and "does not exist" in str(info.value)


@pytest.mark.parametrize("name", ["plantdoc", "cassava", "ibean", "imagenet"])
def test_wrong_layout_says_what_was_found(tmp_path, name):
    src = tmp_path / "src"  # a PlantVillage-style folder: classes at the top, no train/ or train.csv
    _jpeg(src / "Apple___healthy" / "a.jpg", seed=1)
    _jpeg(src / "Apple___Black_rot" / "b.jpg", seed=2)
    with pytest.raises(DatasetError, match=r"found in .*: Apple___Black_rot/, Apple___healthy/"):
        prepare_dataset(name, src, tmp_path / "out")


def test_plantvillage_folder_without_images_is_an_error(tmp_path):
    src = tmp_path / "src"
    _jpeg(src / "train" / "Apple___healthy" / "a.jpg", seed=1)  # one level too deep
    with pytest.raises(DatasetError, match="no class folder with images directly inside"):
        prepare_dataset("plantvillage", src, tmp_path / "out")


def test_out_with_unrelated_files_is_refused(tmp_path):
    src, out = tmp_path / "ibean", tmp_path / "out"
    _ibean_src(src, ("train", "validation", "test"))
    out.mkdir()
    (out / "thesis.tex").write_text("mine")
    with pytest.raises(DatasetError, match=r"holds files that this `prepare` would not create: thesis.tex"):
        prepare_dataset("ibean", src, out)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]
    # an OUT from another dataset is unrelated too
    _imagenet_src(tmp_path / "imagenet", flat_val=False)
    prepare_dataset("imagenet", tmp_path / "imagenet", tmp_path / "out2")
    with pytest.raises(DatasetError, match="n01440764/"):
        prepare_dataset("ibean", src, tmp_path / "out2")
    with pytest.raises(DatasetError, match="overlap"):
        prepare_dataset("ibean", src, src / "prepared")


def test_interrupted_run_is_resumed(tmp_path):
    src, out = tmp_path / "ibean", tmp_path / "out"
    _ibean_src(src, ("train", "validation", "test"))
    prepare_dataset("ibean", src, out, mode="copy")
    complete = (out / "splits.csv").read_bytes()
    # what a kill leaves: no splits.csv, a missing image, a half-written temp file, a stale image
    (out / "splits.csv").unlink()
    (out / "healthy" / "healthy_test.0.jpg").unlink()
    (out / "healthy" / ".healthy_test.1.jpg.agripatch-tmp").write_bytes(b"half")
    (out / "bean_rust" / "bean_rust_train.0.jpg").write_bytes(b"truncated")
    seen = []
    result = prepare_dataset("ibean", src, out, mode="copy", progress=lambda done, total: seen.append((done, total)))
    assert (result.written, result.skipped) == (2, 28)
    assert seen[-1] == (30, 30) and len(seen) == 2
    assert (out / "splits.csv").read_bytes() == complete
    assert not list(out.rglob("*.agripatch-tmp"))
    assert (out / "bean_rust" / "bean_rust_train.0.jpg").read_bytes() == (
        src / "train" / "bean_rust" / "bean_rust_train.0.jpg"
    ).read_bytes()


def test_bad_mode_and_fraction(tmp_path):
    with pytest.raises(DatasetError, match="mode must be one of hardlink, symlink, copy"):
        prepare_dataset("ibean", tmp_path, tmp_path / "out", mode="move")
    with pytest.raises(DatasetError, match=r"val fraction must be in \[0, 1\)"):
        prepare_dataset("ibean", tmp_path, tmp_path / "out", val=1.5)


def test_every_card_has_exactly_one_registered_converter():
    from agripatch.data.cards import card_names
    from agripatch.data.converters import CONVERTERS, converter_for, register_converter

    assert sorted(CONVERTERS) == sorted(card_names())
    with pytest.raises(ValueError, match="already registered"):
        register_converter("ibean")(lambda card, src: None)
    with pytest.raises(KeyError, match="known: cassava"):
        converter_for("nope")
