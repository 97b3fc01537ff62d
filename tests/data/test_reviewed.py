"""Reviewed photos back into a training set (agripatch.data.reviewed and `agripatch datasets add-reviewed`)."""

from __future__ import annotations

import csv
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from agripatch.cli import app
from agripatch.data.corrections import CORRECTIONS_HEADER, CorrectionsError
from agripatch.data.reviewed import add_reviewed
from agripatch.data.splits import (
    SplitRow,
    load_splits,
    read_splits_csv,
    write_splits_csv,
)
from agripatch.errors import DatasetError
from agripatch.predict.review import CORRECTIONS_HEADER as PAGE_HEADER

COLOURS = {"a.jpg": (200, 30, 30), "b.jpg": (30, 200, 30), "sub/c.png": (30, 30, 200), "d.jpg": (200, 200, 30),
           "sub/a.jpg": (90, 10, 160)}


def _photo(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), colour).save(path)
    return path


def _photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    for rel, colour in COLOURS.items():
        _photo(folder / rel, colour)
    return folder


def _dataset(tmp_path: Path, classes=("healthy", "rust")) -> Path:
    root = tmp_path / "data"
    for index, name in enumerate(classes):
        _photo(root / name / f"{name}_0.jpg", (index * 40, 100, 100))
    return root


def _csv(path: Path, rows: list[list[str]], header=CORRECTIONS_HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _tree(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> sha256 of its bytes."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


GOOD = [
    ["a.jpg", "healthy", "healthy", "healthy", "confirm"],
    ["b.jpg", "healthy", "unsure", "rust", "relabel"],
    ["sub/c.png", "rust", "rust", "", "confirm"],  # confirm: the label is the predicted class
    ["d.jpg", "rust", "not_a_leaf", "not_a_leaf", "not_a_leaf"],
]


def test_header_matches_the_review_page():
    assert CORRECTIONS_HEADER == PAGE_HEADER


def test_copies_never_moves(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    before = _tree(photos)
    result = add_reviewed(_csv(tmp_path / "c.csv", GOOD), photos, root)
    assert _tree(photos) == before  # the photos are all still there, byte for byte
    assert result.ok and result.errors == []
    assert result.added_per_class() == {"healthy": 1, "rust": 2}
    assert [(p.source, p.dest, p.label) for p in result.added] == [
        ("a.jpg", "healthy/a.jpg", "healthy"), ("b.jpg", "rust/b.jpg", "rust"), ("sub/c.png", "rust/c.png", "rust")]
    for photo in result.added:
        assert (root / photo.dest).read_bytes() == (photos / photo.source).read_bytes()
    assert result.not_a_leaf == 1 and result.duplicates == [] and result.splits_csv is None
    # not_a_leaf joins no class; no temporary file is left behind.
    assert sorted(_tree(root)) == ["healthy/a.jpg", "healthy/healthy_0.jpg", "rust/b.jpg", "rust/c.png", "rust/rust_0.jpg"]


def test_bad_rows_one_error_each_and_nothing_copied(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    outside = _photo(tmp_path / "elsewhere" / "secret.jpg", (1, 2, 3))
    os.symlink(outside, photos / "link.jpg")
    (photos / "notes.jpg").write_text("not a photo")
    rows = GOOD + [
        ["a.jpg", "healthy", "healthy", "rust", "relabel"],           # line 6: a.jpg again (with line 2)
        ["b.jpg", "healthy", "healthy", "blight", "relabel"],         # line 7: b.jpg again (with line 3)
        ["missing.jpg", "healthy", "healthy", "healthy", "confirm"],  # line 8
        ["../x.jpg", "healthy", "healthy", "healthy", "confirm"],     # line 9
        [str(photos / "sub/a.jpg"), "healthy", "healthy", "healthy", "confirm"],  # line 10: absolute
        ["link.jpg", "healthy", "healthy", "healthy", "confirm"],     # line 11: symlink to outside
        ["sub/a.jpg", "healthy", "healthy", "blight", "relabel"],     # line 12: unknown class
        ["notes.jpg", "healthy", "healthy", "healthy", "confirm"],    # line 13: not an image
        ["sub/a.jpg ", "healthy", "healthy", "healthy", "delete"],    # line 14: unknown action
    ]
    before = _tree(root)
    with pytest.raises(CorrectionsError) as caught:
        add_reviewed(_csv(tmp_path / "c.csv", rows), photos, root)
    assert _tree(root) == before  # nothing copied, no folder made
    errors = caught.value.errors
    assert [e.line for e in errors] == [2, 3, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert [e.path for e in errors][:4] == ["a.jpg", "b.jpg", "a.jpg", "b.jpg"]
    messages = {e.line: e.message for e in errors}
    assert "listed on lines 2, 6" in messages[2] and "listed on lines 2, 6" in messages[6]
    assert "listed on lines 3, 7" in messages[7]
    assert "photo not found" in messages[8] and "--photos" in messages[8]
    assert "'..'" in messages[9]
    assert "absolute path" in messages[10]
    assert "outside the photo folder" in messages[11]
    assert "unknown class 'blight'" in messages[12] and "healthy, rust" in messages[12]
    assert "not a recognised image" in messages[13]
    assert "unknown action 'delete'" in messages[14]
    text = str(caught.value)
    assert "nothing was copied" in text and "--partial" in text
    assert f"{tmp_path / 'c.csv'}:9: '../x.jpg':" in text
    assert isinstance(caught.value, DatasetError)


def test_inconsistent_short_and_aliased_rows_are_refused(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    os.symlink("a.jpg", photos / "alias.jpg")  # inside the folder: fine alone, but it is a.jpg again
    rows = [["a.jpg", "healthy", "healthy", "rust", "confirm"],
            ["b.jpg", "healthy", "healthy", "", "relabel"],
            ["d.jpg", "healthy", "healthy", "rust", "not_a_leaf"],
            ["sub/c.png", "healthy"],
            ["sub/a.jpg", "healthy", "healthy", "healthy", "confirm"],
            ["./sub/a.jpg", "healthy", "healthy", "healthy", "confirm"],
            ["alias.jpg", "healthy", "healthy", "healthy", "confirm"]]
    with pytest.raises(CorrectionsError) as caught:
        add_reviewed(_csv(tmp_path / "c.csv", rows), photos, root)
    messages = [e.message for e in caught.value.errors]
    assert len(messages) == 6  # a.jpg itself is refused alone (confirm with another label); alias.jpg is fine alone
    assert "use action relabel" in messages[0]
    assert "needs a reviewed_label" in messages[1]
    assert "action not_a_leaf but reviewed_label is 'rust'" in messages[2]
    assert "fewer fields than the header" in messages[3]
    assert "listed on lines 6, 7" in messages[4] and "listed on lines 6, 7" in messages[5]
    alias = add_reviewed(_csv(tmp_path / "d.csv", [["a.jpg", "healthy", "healthy", "healthy", "confirm"],
                                                   ["alias.jpg", "healthy", "healthy", "healthy", "confirm"]]),
                         photos, root, partial=True)
    assert [e.line for e in alias.errors] == [2, 3] and "through a link" in alias.errors[0].message
    assert alias.added == []


def test_partial_applies_the_good_rows_only(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    rows = GOOD + [["missing.jpg", "healthy", "healthy", "healthy", "confirm"],
                   ["sub/a.jpg", "healthy", "healthy", "blight", "relabel"]]
    result = add_reviewed(_csv(tmp_path / "c.csv", rows), photos, root, partial=True)
    assert [(e.line, e.path) for e in result.errors] == [(6, "missing.jpg"), (7, "sub/a.jpg")]
    assert not result.ok
    assert result.added_per_class() == {"healthy": 1, "rust": 2}
    assert not (root / "blight").exists() and not (root / "healthy" / "missing.jpg").exists()


def test_rerun_is_idempotent_and_splits_get_the_photos_as_train(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    original = [SplitRow("healthy/healthy_0.jpg", "healthy", "val"), SplitRow("rust/rust_0.jpg", "rust", "train")]
    write_splits_csv(original, root / "splits.csv")
    corrections = _csv(tmp_path / "c.csv", GOOD)
    first = add_reviewed(corrections, photos, root)
    assert first.splits_csv == root / "splits.csv" and first.splits_added == 3
    rows = read_splits_csv(root / "splits.csv")
    assert sorted(rows, key=lambda r: r.path) == sorted(original + [
        SplitRow("healthy/a.jpg", "healthy", "train"), SplitRow("rust/b.jpg", "rust", "train"),
        SplitRow("rust/c.png", "rust", "train")], key=lambda r: r.path)
    assert load_splits(root) == rows  # what `agripatch train --data root` reads
    after_first = _tree(root)

    again = add_reviewed(corrections, photos, root)
    assert _tree(root) == after_first  # same CSV, same dataset
    assert again.added == [] and again.splits_added == 0 and again.splits_csv is None
    assert [(d.source, d.existing, d.other_class) for d in again.duplicates] == [
        ("a.jpg", "healthy/a.jpg", False), ("b.jpg", "rust/b.jpg", False), ("sub/c.png", "rust/c.png", False)]


def test_a_photo_copied_before_an_interruption_is_listed_on_rerun(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    write_splits_csv([SplitRow("rust/rust_0.jpg", "rust", "train")], root / "splits.csv")
    (root / "healthy" / "a.jpg").write_bytes((photos / "a.jpg").read_bytes())  # copied, splits.csv not yet written
    result = add_reviewed(_csv(tmp_path / "c.csv", GOOD[:1]), photos, root)
    assert result.added == [] and len(result.duplicates) == 1
    assert SplitRow("healthy/a.jpg", "healthy", "train") in read_splits_csv(root / "splits.csv")


def test_same_bytes_anywhere_in_the_dataset_is_a_duplicate(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    (root / "rust" / "old_name.jpg").write_bytes((photos / "a.jpg").read_bytes())
    result = add_reviewed(_csv(tmp_path / "c.csv", GOOD[:1]), photos, root)
    assert result.added == []
    [dup] = result.duplicates
    assert (dup.source, dup.existing, dup.label, dup.other_class) == ("a.jpg", "rust/old_name.jpg", "healthy", True)


def test_name_collision_gets_a_hash_suffix(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    _photo(root / "healthy" / "a.jpg", (0, 0, 0))  # same name, other bytes
    rows = [["a.jpg", "healthy", "healthy", "healthy", "confirm"],
            ["sub/a.jpg", "rust", "rust", "healthy", "relabel"]]  # same name again, in the same run
    result = add_reviewed(_csv(tmp_path / "c.csv", rows), photos, root)
    digest_a = hashlib.sha256((photos / "a.jpg").read_bytes()).hexdigest()
    digest_sub = hashlib.sha256((photos / "sub/a.jpg").read_bytes()).hexdigest()
    assert [p.dest for p in result.added] == [f"healthy/a-{digest_a[:8]}.jpg", f"healthy/a-{digest_sub[:8]}.jpg"]
    assert (root / "healthy" / "a.jpg").read_bytes() != (photos / "a.jpg").read_bytes()  # untouched


def test_malformed_csv_names_the_file_and_header(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    bad = _csv(tmp_path / "bad.csv", [["a.jpg", "healthy", "confirm"]], header=["path", "predicted", "action"])
    with pytest.raises(DatasetError, match=r"bad\.csv.*lacks the column\(s\) decision, reviewed_label.*"
                                           r"path,predicted,decision,reviewed_label,action"):
        add_reviewed(bad, photos, root)
    with pytest.raises(DatasetError, match="does not exist"):
        add_reviewed(tmp_path / "nope.csv", photos, root)


def test_known_classes_need_folders_or_the_model(tmp_path):
    photos = _photos(tmp_path)
    corrections = _csv(tmp_path / "c.csv", GOOD)
    empty = tmp_path / "new_dataset"
    with pytest.raises(DatasetError, match="no known classes.*create one folder per class.*--model"):
        add_reviewed(corrections, photos, empty)
    assert not empty.exists()
    result = add_reviewed(corrections, photos, empty, classes=["healthy", "rust", "blight"])
    assert result.added_per_class() == {"healthy": 1, "rust": 2}
    assert sorted(_tree(empty)) == ["healthy/a.jpg", "rust/b.jpg", "rust/c.png"]
    # An empty class folder is a known class: that is how a new class is added.
    (empty / "blight").mkdir()
    assert add_reviewed(_csv(tmp_path / "d.csv", [["sub/a.jpg", "rust", "rust", "blight", "relabel"]]),
                        photos, empty).added_per_class() == {"blight": 1}
    # A model class that cannot be a folder name is refused, not written outside the dataset.
    with pytest.raises(CorrectionsError, match="cannot be a folder name"):
        add_reviewed(_csv(tmp_path / "e.csv", [["d.jpg", "x", "x", "../evil", "relabel"]]), photos, empty,
                     classes=["../evil"])


def test_not_a_leaf_dir(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    corrections = _csv(tmp_path / "c.csv", GOOD)
    with pytest.raises(DatasetError, match="inside the dataset"):
        add_reviewed(corrections, photos, root, not_a_leaf_dir=root / "not_a_leaf")
    result = add_reviewed(corrections, photos, root, not_a_leaf_dir=tmp_path / "junk")
    assert result.not_a_leaf == 1 and [p.dest for p in result.not_a_leaf_copied] == ["d.jpg"]
    assert (tmp_path / "junk" / "d.jpg").read_bytes() == (photos / "d.jpg").read_bytes()
    assert add_reviewed(corrections, photos, root, not_a_leaf_dir=tmp_path / "junk").not_a_leaf_copied == []


def test_split_layout_without_splits_csv_is_refused(tmp_path):
    photos = _photos(tmp_path)
    root = tmp_path / "layout"
    for split in ("train", "val"):
        _photo(root / split / "healthy" / "h.jpg", (1, 1, 1))
    with pytest.raises(DatasetError, match="train/val/test layout.*datasets split"):
        add_reviewed(_csv(tmp_path / "c.csv", GOOD), photos, root)


# ----------------------------------------------------------------------------------------------- CLI
def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


def test_cli_adds_and_summarises(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    result = CliRunner().invoke(app, ["datasets", "add-reviewed", str(_csv(tmp_path / "c.csv", GOOD)),
                                      "--photos", str(photos), "--to", str(root)])
    assert result.exit_code == 0, result.output
    out = _flat(result.stdout)
    assert re.search(r"healthy\W+1\b", out) and re.search(r"rust\W+2\b", out) and re.search(r"total\W+3\b", out)
    assert "duplicates skipped (same bytes already in the dataset): 0" in out
    assert "not a leaf: 1 (not added to any class)" in out
    assert (root / "rust" / "c.png").is_file()


def test_cli_refused_rows_exit_1(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    corrections = _csv(tmp_path / "c.csv", GOOD + [["../x.jpg", "healthy", "healthy", "healthy", "confirm"]])
    before = _tree(root)
    refused = CliRunner().invoke(app, ["datasets", "add-reviewed", str(corrections), "--photos", str(photos),
                                       "--to", str(root)])
    assert refused.exit_code == 1 and isinstance(refused.exception, SystemExit)
    assert "refused 1 row(s); nothing was copied" in _flat(refused.stderr)
    assert ":6: '../x.jpg':" in _flat(refused.stderr)
    assert _tree(root) == before

    partial = CliRunner().invoke(app, ["datasets", "add-reviewed", str(corrections), "--photos", str(photos),
                                       "--to", str(root), "--partial"])
    assert partial.exit_code == 1
    assert re.search(r"total\W+3\b", _flat(partial.stdout))
    assert "refused 1 row(s):" in _flat(partial.stderr) and "'../x.jpg'" in partial.stderr
    assert (root / "healthy" / "a.jpg").is_file()


def test_cli_malformed_csv_is_a_clean_error(tmp_path):
    photos, root = _photos(tmp_path), _dataset(tmp_path)
    bad = _csv(tmp_path / "bad.csv", [["a.jpg"]], header=["path"])
    done = subprocess.run([sys.executable, "-m", "agripatch", "datasets", "add-reviewed", str(bad), "--photos",
                           str(photos), "--to", str(root)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "COLUMNS": "300"})
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "lacks the column(s)" in done.stderr and "path,predicted,decision,reviewed_label,action" in done.stderr


def test_rows_from_a_database_name_it_as_given_in_errors(tmp_path):
    """Rows from a review database are named by its URL, which must not be folded like a path (``//`` kept)."""
    from agripatch.data.corrections import CorrectionRow, CorrectionsError
    from agripatch.data.reviewed import add_reviewed_rows

    photos, root = _photos(tmp_path), _dataset(tmp_path)
    source = "postgresql://u@host//reviews [OUT] decision"
    with pytest.raises(CorrectionsError) as info:
        add_reviewed_rows([CorrectionRow(7, "../x.jpg", "rust", "rust", "rust", "confirm")], source, photos, root)
    assert str(info.value).startswith(f"{source}: 1 row(s) refused") and f"{source}:7: '../x.jpg'" in str(info.value)
