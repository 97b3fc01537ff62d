"""One photo's result as data: the JSONL record and the CSV row of `predict folder`.

Boxes are reported in ORIGINAL photo pixels (the pipeline's boxes are in the decoded image's pixels,
which is smaller when the reader decoded a large JPEG at 1/2..1/8; they are scaled back with
:func:`~agripatch.pipeline.boxes.scale_boxes`). Numbers are rounded (probabilities to 6 decimals, boxes
to 1/100 pixel) so that files are stable and diff-able between runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from agripatch.io.orientation import boxes_before_turn
from agripatch.pipeline.boxes import scale_boxes
from agripatch.pipeline.prediction import PatchPrediction

__all__ = ["csv_row", "findings_of", "original_boxes", "patch_reads", "photo_record", "severity_fields", "severity_summary",
           "topk_of"]


def original_boxes(boxes: np.ndarray, decoded_hw: tuple[int, int], original_hw: tuple[int, int],
                   turns: int = 0) -> np.ndarray:
    """Scale [K, 4] boxes from the decoded image's pixels to the original photo's (float64); with ``turns``, the
    photo was read turned that many quarter turns clockwise (both sizes are the turned photo's) and the boxes are
    mapped back to the file's own pixels."""
    if len(boxes) == 0:
        return np.zeros((0, 4), np.float64)
    return boxes_before_turn(scale_boxes(boxes, decoded_hw, original_hw), original_hw, turns)


def patch_reads(result: PatchPrediction) -> list[tuple[int, float]]:
    """(class index, probability) of each patch the classifier read, from its own logits alone."""
    logits = np.asarray(result.patch_logits, dtype=np.float64)
    out = []
    for row in logits:
        shifted = np.exp(row - row.max())
        probs = shifted / shifted.sum()
        index = int(probs.argmax())
        out.append((index, float(probs[index])))
    return out


def topk_of(probs: np.ndarray, classes: Sequence[str], k: int) -> list[dict[str, Any]]:
    """The k most probable classes, best first (ties: lower index first)."""
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, kind="stable")[: max(1, min(k, len(classes)))]
    return [{"class": classes[i], "index": int(i), "prob": round(float(probs[i]), 6)} for i in order]


def findings_of(probs: np.ndarray, classes: Sequence[str], threshold: float | None,
                exclude: Sequence[str] = ()) -> list[dict[str, Any]] | None:
    """Every class but ``exclude`` whose probability reaches ``threshold``, most probable first (ties: lower index
    first): what a leaf shows when it shows more than one stress. None without a threshold (no findings asked)."""
    if threshold is None:
        return None
    probs = np.asarray(probs, dtype=np.float64)
    order = np.argsort(-probs, kind="stable")
    return [{"class": classes[i], "index": int(i), "prob": round(float(probs[i]), 6)} for i in order
            if probs[i] >= threshold and classes[i] not in exclude]


def photo_record(
    relative: str,
    result: PatchPrediction,
    classes: Sequence[str],
    topk: int,
    decoded_hw: tuple[int, int],
    original_hw: tuple[int, int],
    *,
    crops: Sequence[str | None] = (),
    overlay: str | None = None,
    decision: str | None = None,
    ood_distance: float | None = None,
    findings: list[dict[str, Any]] | None = None,
    turns: int = 0,
) -> dict[str, Any]:
    """Everything written about one photo (the JSONL line); see the README of `predict folder`.

    ``decision`` is what the tool answers: the predicted class, or a refusal (``not_a_leaf``, ``unsure``)
    when the model's refusal rule says so; ``ood_distance`` is the score that rule thresholds (with the
    photo's ``plant_share``, which it reads too); ``findings`` the classes :func:`findings_of` lists; ``turns``
    the quarter turns clockwise the photo was read with (:mod:`agripatch.io.orientation`; the sizes given are the
    turned photo's, the record's the file's own, and so are its boxes).
    """
    boxes = original_boxes(result.boxes, decoded_hw, original_hw, turns)
    if turns % 2:
        original_hw, decoded_hw = (original_hw[1], original_hw[0]), (decoded_hw[1], decoded_hw[0])
    reads = patch_reads(result)
    entries = []
    for k, box in enumerate(boxes):
        entry: dict[str, Any] = {
            "k": k + 1,
            "box": [round(float(v), 2) for v in box],
            "score": float(f"{float(result.box_scores[k]):.6g}"),
            "read": k < len(reads),
            "label": None,
            "label_index": None,
            "prob": None,
        }
        if k < len(reads):
            index, prob = reads[k]
            entry.update(label=classes[index], label_index=index, prob=round(prob, 6))
        entry["crop"] = crops[k] if k < len(crops) else None
        entries.append(entry)
    label = int(result.label)
    return {
        "path": relative,
        "label": classes[label],
        "label_index": label,
        "decision": decision if decision is not None else classes[label],
        "confidence": round(float(result.probs[label]), 6),
        "topk": topk_of(result.probs, classes, topk),
        "findings": findings,
        "stage": int(result.stage),
        "whole_photo": int(result.stage) > len(result.patch_logits),  # answered by the full-image exit
        "macs": int(result.macs),
        "width": int(original_hw[1]),
        "height": int(original_hw[0]),
        "decoded_width": int(decoded_hw[1]),
        "decoded_height": int(decoded_hw[0]),
        "turned": 90 * (turns % 4),  # degrees clockwise the photo was read turned (the overlay shows it so)
        "boxes": entries,
        "overlay": overlay,
        "ood_distance": None if ood_distance is None else round(float(ood_distance), 4),
        "plant_share": None if result.plant_share is None else round(float(result.plant_share), 4),
        "refusal_macs": int(result.refusal_macs),  # the refusal's views of the glance, for the few photos judged on them
        "refusal_view": result.refusal_view,  # the view it judged the photo on instead of the photo as it is, if any
        **severity_fields(result),
    }


def severity_fields(result: PatchPrediction) -> dict[str, Any]:
    """A record's severity: ``severity`` (percent of the leaf with symptoms, 2 decimals), ``severity_class`` and
    ``severity_macs`` (the symptom map's cost); None each when the cascade measures no severity."""
    severity = result.severity
    if severity is None:
        return {"severity": None, "severity_class": None, "severity_macs": None}
    return {"severity": round(float(severity.share), 2), "severity_class": severity.name,
            "severity_macs": int(severity.macs)}


def severity_summary(records: Sequence[dict[str, Any]], names: Sequence[str] = ()) -> dict[str, Any] | None:
    """summary.json's severity: photos measured, their mean and median share (percent) and how many fall in each
    class (``names`` first, mildest first, each listed even when empty); None when no record has a severity."""
    measured = [r for r in records if r.get("severity") is not None]
    if not measured:
        return None
    shares = np.array([float(r["severity"]) for r in measured])
    classes: dict[str, int] = {name: 0 for name in names}
    for r in measured:
        classes[r["severity_class"]] = classes.get(r["severity_class"], 0) + 1
    return {"photos": len(measured), "mean_share": round(float(shares.mean()), 2),
            "median_share": round(float(np.median(shares)), 2), "classes": classes,
            "mean_gmacs": float(np.mean([r["severity_macs"] for r in measured])) / 1e9}


def csv_row(record: dict[str, Any]) -> list[Any]:
    """The CSV columns of a record: path, label, decision, confidence, topk (JSON), stage, macs, width, height,
    boxes (JSON), severity (empty without one), severity_class."""
    topk = json.dumps([[item["class"], item["prob"]] for item in record["topk"]], ensure_ascii=False)
    boxes = json.dumps(
        [{key: entry[key] for key in ("k", "box", "score", "read", "label", "prob")} for entry in record["boxes"]],
        ensure_ascii=False,
    )
    return [record["path"], record["label"], record["decision"], f'{record["confidence"]:.6f}', topk, record["stage"],
            record["macs"],
            record["width"], record["height"], boxes,
            "" if record.get("severity") is None else f'{record["severity"]:.2f}', record.get("severity_class") or ""]
