"""Findings (issue 25 item 4): every stress above the threshold is named, and evaluate's per-stress scores are exact
on a hand-made case."""

from __future__ import annotations

import numpy as np
import pytest

from agripatch.engine.findings import findings_report, read_stress_flags
from agripatch.pipeline.records import findings_of

CLASSES = ["healthy", "rust", "miner", "spot"]


def test_findings_name_every_class_above_the_threshold_but_the_excluded():
    probs = np.array([0.05, 0.50, 0.35, 0.10])
    assert [f["class"] for f in findings_of(probs, CLASSES, 0.3, ["healthy"])] == ["rust", "miner"]
    assert findings_of(probs, CLASSES, None) is None  # no threshold: no findings asked
    assert findings_of(np.array([0.9, 0.05, 0.03, 0.02]), CLASSES, 0.3, ["healthy"]) == []  # healthy is no finding


def test_report_scores_precision_and_recall_per_stress(tmp_path):
    (tmp_path / "severity.csv").write_text("path,severity,rust,miner,spot\n"
                                           "a.jpg,1,1,1,0\nb.jpg,2,1,0,0\nc.jpg,0,0,0,0\nd.jpg,3,0,0,1\n")
    flags = read_stress_flags(tmp_path / "severity.csv", CLASSES, ["healthy"])
    assert flags == {"a.jpg": {"rust", "miner"}, "b.jpg": {"rust"}, "c.jpg": set(), "d.jpg": {"spot"}}
    probs = np.array([[0.0, 0.6, 0.4, 0.0],   # a: both named
                      [0.0, 0.5, 0.0, 0.5],   # b: rust right, spot a false finding
                      [0.8, 0.0, 0.2, 0.0],   # c: healthy, nothing named
                      [0.1, 0.0, 0.0, 0.9]])  # d: spot
    report = findings_report(probs, ["a.jpg", "b.jpg", "c.jpg", "d.jpg"], CLASSES, 0.3, ["healthy"], flags)
    per = report["findings"]["per_stress"]
    assert per["rust"] == pytest.approx({"precision": 1.0, "recall": 1.0, "flagged": 2, "f1": 1.0})
    assert (per["spot"]["precision"], per["spot"]["recall"]) == (0.5, 1.0)
    assert report["findings"]["exact"] == 0.75 and report["several_flagged"] == 1
    top = report["top_class_only"]["per_stress"]
    assert top["miner"]["recall"] == 0.0 and top["rust"]["recall"] == 1.0  # b's tie goes to the lower index, rust
    assert read_stress_flags(tmp_path / "severity.csv", ["x", "y"]) is None  # no class column: nothing to score
