"""How well ``findings`` name every stress a leaf shows (issue 25 item 4), torch-free.

A leaf can show several stresses at once (BRACOL: 19% of leaves). The cascade names one class; with
``cascade.findings_threshold`` each record also lists every class whose probability reaches the threshold
(:func:`agripatch.pipeline.records.findings_of`, the same rule `predict` applies). `evaluate` scores those lists
against per-photo stress flags: ``DATA/severity.csv`` columns named after the classes, 0 or 1 (BRACOL's file has
them), per stress precision and recall, beside the same scores of naming the top class alone.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from agripatch.pipeline.records import findings_of

__all__ = ["findings_report", "read_stress_flags"]


def read_stress_flags(path: Path, classes: Sequence[str], exclude: Sequence[str] = ()) -> dict[str, set[str]] | None:
    """Flagged stresses by photo path from a CSV with ``path`` and one 0/1 column per class (``exclude`` skipped);
    None when the file has no such column."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = [c for c in classes if c in (reader.fieldnames or []) and c not in exclude]
        if not columns or "path" not in (reader.fieldnames or []):
            return None
        return {row["path"]: {c for c in columns if str(row[c]).strip() == "1"} for row in reader}


def _scores(named: list[set[str]], flagged: list[set[str]], stresses: Sequence[str]) -> dict:
    per = {}
    for stress in stresses:
        tp = sum(stress in n and stress in f for n, f in zip(named, flagged))
        fp = sum(stress in n and stress not in f for n, f in zip(named, flagged))
        fn = sum(stress not in n and stress in f for n, f in zip(named, flagged))
        precision, recall = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
        per[stress] = {"precision": precision, "recall": recall, "flagged": tp + fn,
                       "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0}
    return {"per_stress": per, "macro_f1": float(np.mean([v["f1"] for v in per.values()])),
            "exact": float(np.mean([n == f for n, f in zip(named, flagged)]))}


def findings_report(probs: np.ndarray, paths: Sequence[str], classes: Sequence[str], threshold: float,
                    exclude: Sequence[str], flags: dict[str, set[str]]) -> dict:
    """Per-stress precision, recall and F1 of the findings at ``threshold`` (and of naming the top class alone) on
    the photos ``flags`` covers; ``exact`` is the share of photos whose named set equals the flagged set."""
    rows = [i for i, path in enumerate(paths) if str(path) in flags]
    stresses = [c for c in classes if c not in exclude]
    flagged = [flags[str(paths[i])] for i in rows]
    named = [{f["class"] for f in findings_of(probs[i], classes, threshold, exclude)} for i in rows]
    top = [{classes[int(np.argmax(probs[i]))]} - set(exclude) for i in rows]
    return {"photos": len(rows), "threshold": threshold, "several_flagged": int(sum(len(f) > 1 for f in flagged)),
            "findings": _scores(named, flagged, stresses), "top_class_only": _scores(top, flagged, stresses)}
