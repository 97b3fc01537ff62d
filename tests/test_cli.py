"""The command line as a user meets it: help lists every command, bad input gives clean exits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agripatch.data.splits import read_splits_csv

ENV = {**os.environ, "COLUMNS": "200", "NO_ALBUMENTATIONS_UPDATE": "1"}


def agripatch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agripatch", *args], capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def test_help_lists_every_command():
    top = agripatch("--help")
    assert top.returncode == 0
    for command in ("train", "evaluate", "predict", "datasets", "recipes", "demo"):
        assert command in top.stdout
    datasets = agripatch("datasets", "--help").stdout
    for command in ("list", "check", "split", "prepare", "synth"):
        assert command in datasets
    assert "folder" in agripatch("predict", "--help").stdout
    recipes = agripatch("recipes", "--help").stdout
    assert "list" in recipes and "show" in recipes


def test_recipes_list_starts_without_loading_torch():
    """A command that only reads text (here `recipes list`; help and dataset cards alike) must not pay torch's
    import (seconds)."""
    code = ("import sys; sys.argv = ['agripatch', 'recipes', 'list']; from agripatch.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\nprint('TORCH', 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert "smoke" in result.stdout and "TORCH False" in result.stdout, result.stderr


def test_recipes_show_prints_the_resolved_recipe_with_overrides():
    result = agripatch("recipes", "show", "smoke", "cascade.k=5", "cascade.thresholds=null")
    assert result.returncode == 0
    assert "k: 5" in result.stdout and "name: smoke" in result.stdout
    # smoke fixes 3 thresholds (k = 2): k = 5 alone is refused when the recipe is read, not mid-training.
    mismatch = agripatch("recipes", "show", "smoke", "cascade.k=5")
    assert mismatch.returncode == 1 and "need 6 thresholds (glance + k patches)" in mismatch.stderr
    missing = agripatch("recipes", "show", "nope")
    assert missing.returncode == 1 and "unknown recipe 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_datasets_list_shows_every_card():
    out = agripatch("datasets", "list").stdout
    for name in ("plantvillage", "plantdoc", "cassava", "ibean", "imagenet"):
        assert name in out


def _bad_folder(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    for cls in ("blight", "healthy"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / cls / f"{cls}_{i}.jpg")
    planted = {
        "corrupt": root / "blight" / "corrupt.jpg",
        "zero": root / "blight" / "empty.jpg",
        "text": root / "healthy" / "notes.txt",
        "empty_class": root / "rust",
        "loop": root / "healthy" / "loop",
        "unicode": root / "healthy" / "feuille malade é.jpg",
    }
    planted["corrupt"].write_bytes((root / "blight" / "blight_0.jpg").read_bytes()[:200])
    planted["zero"].write_bytes(b"")
    planted["text"].write_text("not an image")
    planted["empty_class"].mkdir()
    planted["loop"].symlink_to(root / "healthy", target_is_directory=True)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(planted["unicode"])
    return planted


@pytest.mark.slow
def test_datasets_check_flags_every_planted_problem_and_changes_nothing(tmp_path):
    root = tmp_path / "bad"
    planted = _bad_folder(root)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*") if p.is_file() and not p.is_symlink()}
    result = agripatch("datasets", "check", str(root))
    assert result.returncode == 1
    assert "Traceback" not in result.stdout + result.stderr
    for key in ("corrupt", "zero", "loop"):
        assert planted[key].name in result.stdout, key
    assert "rust" in result.stdout
    as_json = agripatch("datasets", "check", str(root), "--json")
    assert as_json.returncode == 1
    report = json.loads(as_json.stdout)
    kinds = {problem["kind"] for problem in report["problems"]}
    assert {"unreadable", "empty_class", "symlink_loop"} <= kinds
    unreadable = {Path(p).name for problem in report["problems"] if problem["kind"] == "unreadable" for p in problem["paths"]}
    assert unreadable == {"corrupt.jpg", "empty.jpg"}
    assert any("notes.txt" in str(p) for p in report["ignored"])
    after = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in before}
    assert after == before


@pytest.mark.slow
def test_synth_split_check_run_clean(tmp_path):
    data = tmp_path / "synth"
    assert agripatch("datasets", "synth", str(data), "--classes", "3", "--per-class", "6", "--size", "128").returncode == 0
    split = agripatch("datasets", "split", str(data), "--val", "0.2", "--test", "0.2", "--seed", "0")
    assert split.returncode == 0 and (data / "splits.csv").is_file()
    check = agripatch("datasets", "check", str(data))
    assert check.returncode == 0, check.stdout
    assert "no problems" in check.stdout


def _write_jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(path)


def test_split_folds_writes_the_chosen_fold_as_test_and_refuses_a_split_layout(tmp_path):
    data = tmp_path / "leaves"
    for label in ("healthy", "rust"):
        for i in range(10):
            _write_jpeg(data / label / f"{i}.jpg")
    tested = set()
    for fold in (0, 1):
        result = agripatch("datasets", "split", str(data), "--folds", "2", "--fold", str(fold), "--val", "0.2")
        assert result.returncode == 0, result.stderr
        rows = read_splits_csv(data / "splits.csv")
        assert Counter(r.split for r in rows) == {"test": 10, "val": 2, "train": 8}
        tested |= {r.path for r in rows if r.split == "test"}
    assert len(tested) == 20
    (tmp_path / "laid_out" / "train" / "rust").mkdir(parents=True)
    _write_jpeg(tmp_path / "laid_out" / "train" / "rust" / "0.jpg")
    refused = agripatch("datasets", "split", str(tmp_path / "laid_out"), "--folds", "2")
    assert refused.returncode == 1 and "cannot be cross-validated" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_missing_folder_is_a_clean_error(tmp_path):
    result = agripatch("datasets", "check", str(tmp_path / "nowhere"))
    assert result.returncode == 1
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_ibean_check_reports_three_classes_and_1167_images(shared_data):
    result = agripatch("datasets", "check", str(shared_data / "ibean" / "train"), "--json")
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["classes"] == ["angular_leaf_spot", "bean_rust", "healthy"]
    assert report["num_images"] == 1167
