"""`agripatch demo` end to end on a small synthetic set: every stage's outputs, cascade above chance."""

from __future__ import annotations

import json

import pytest

from agripatch.demo import run_demo


@pytest.mark.slow
def test_demo_runs_end_to_end(tmp_path):
    page = run_demo(tmp_path / "demo")  # the defaults a user runs (about 15 s on 2 cores)
    assert page.is_file() and page.name == "index.html"
    summary = json.loads((tmp_path / "demo" / "eval" / "summary.json").read_text())
    assert summary["num_images"] == 15
    assert summary["top1"] > 1 / 3  # above chance (3 classes)
    for name in ("report.txt", "confusion_matrix.png", "budget_sweep.png"):
        assert (tmp_path / "demo" / "eval" / name).is_file()
    review = json.loads((tmp_path / "demo" / "review" / "summary.json").read_text())
    assert review["photos"] >= 9
    assert (tmp_path / "demo" / "run" / "model.pt").is_file()
