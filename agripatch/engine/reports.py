"""The files `agripatch evaluate` writes: sklearn reports, confusion matrix, per-photo predictions, the
threshold sweep, the accuracy-versus-MACs plot, every stage's probabilities and the summary.

Every file is written atomically; numbers come from the evaluation pass, never recomputed here.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from agripatch.io.atomic import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from agripatch.engine.scoring import Scored

__all__ = ["calibration_text", "plot_confusion", "plot_reliability", "plot_sweep", "refusal_text", "save_stage_arrays", "stage_arrays", "write_reports"]


def stage_arrays(outputs, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Every stage's probabilities, their cost, the labels and (when there) AnchorNet's glance features of a
    set of photos as named arrays: what ``stage_probs.npz`` and training's ``val_outputs.npz`` hold, so exit
    and refusal rules can be replayed offline on photos that chose nothing."""
    arrays = {"probs": outputs.probs, "stage_macs": outputs.exit_macs, "labels": np.asarray(labels)}
    if outputs.features is not None:
        arrays["features"] = outputs.features
    if outputs.plant_share is not None:
        arrays["plant_share"] = outputs.plant_share
    return arrays


def save_stage_arrays(path: Path, outputs, labels: np.ndarray) -> None:
    """:func:`stage_arrays` written atomically to ``path`` (an ``.npz``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **stage_arrays(outputs, labels))


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


def _topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    """Confusion matrix PNG with class names on both axes and counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(matrix, cmap="Greens")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center",
                    color="white" if matrix[i, j] > peak / 2 else "black")
    _save_figure(fig, path)
    plt.close(fig)


def plot_reliability(bins: list[dict[str, Any]], ece: float, path: Path, perfect: dict[str, float] | None = None) -> None:
    """Reliability diagram PNG: accuracy against confidence per bin (the diagonal is a calibrated model), with
    each bin's photo count, so a user sees whether ``confidence`` can be read as a probability; ``perfect``
    (:func:`~agripatch.engine.evaluate.calibration_summary`'s ``ece_if_calibrated``) puts the ECE a perfectly
    calibrated model would show on as many photos in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5, 6), height_ratios=[3, 1], sharex=True)
    width = bins[0]["high"] - bins[0]["low"] if bins else 1.0
    filled = [b for b in bins if b["photos"]]
    ax.bar([b["low"] for b in filled], [b["accuracy"] for b in filled], width=width, align="edge",
           edgecolor="black", color="tab:green", alpha=0.7, label="accuracy")
    ax.plot([b["confidence"] for b in filled], [b["accuracy"] for b in filled], "k.", ms=6, label="mean confidence")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="calibrated")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    title = f"reliability of the answer's confidence (ECE {ece:.3f}, {len(bins)} bins)"
    if perfect:
        title += f"\na calibrated model on these photos: ECE {perfect['mean']:.3f} (95% under {perfect['p95']:.3f})"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    counts.bar([b["low"] for b in bins], [b["photos"] for b in bins], width=width, align="edge", color="grey")
    counts.set_xlabel("confidence")
    counts.set_ylabel("photos")
    _save_figure(fig, path)
    plt.close(fig)


def plot_sweep(sweep: list[dict[str, Any]], baselines: list[dict[str, Any]], chosen: dict[str, Any], path: Path) -> None:
    """Accuracy versus mean GMACs per image: the cascade's threshold sweep and the baseline point(s)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    points = sorted((p["mean_macs"] / 1e9, p["accuracy"]) for p in sweep)
    ax.plot([x for x, _ in points], [y for _, y in points], "o-", ms=3, label="cascade (threshold sweep)")
    ax.plot([chosen["mean_macs"] / 1e9], [chosen["accuracy"]], "*", ms=14, label="cascade at its thresholds")
    for base in baselines:
        ax.plot([base["macs"] / 1e9], [base["accuracy"]], "s", ms=8, label=f"{base['label']}")
    ax.set_xlabel("mean GMACs per image")
    ax.set_ylabel("top-1 accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_figure(fig, path)
    plt.close(fig)


def _classification_reports(out: Path, classes: list[str], labels: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import classification_report, confusion_matrix

    ids = list(range(len(classes)))
    text = classification_report(labels, pred, labels=ids, target_names=classes, digits=4, zero_division=0)
    report = classification_report(labels, pred, labels=ids, target_names=classes, output_dict=True, zero_division=0)
    atomic_write_text(out / "report.txt", text)
    atomic_write_text(out / "report.json", json.dumps(report, indent=2))
    matrix = confusion_matrix(labels, pred, labels=ids)
    _write_csv(out / "confusion_matrix.csv", ["true \\ predicted", *classes],
               [[name, *matrix[i].tolist()] for i, name in enumerate(classes)])
    plot_confusion(matrix, classes, out / "confusion_matrix.png")
    return {"text": text, "recall": {name: report[name]["recall"] for name in classes}}


def _per_photo(out: Path, classes: list[str], scored: Scored, pred: np.ndarray, probs: np.ndarray,
               exit_stage: np.ndarray, baseline: dict[str, Any] | None) -> None:
    """predictions.csv (every photo: truth, cascade and baseline answers, for paired comparisons; with severity
    each photo's symptom share and class, as `predict` records them) and misclassified.csv (the cascade's errors)."""
    severities = scored.severities
    header = (["path", "true", "predicted", "confidence", "stage"] + (["baseline_predicted"] if baseline else [])
              + (["severity", "severity_class"] if severities is not None else []))
    rows = []
    for i, path in enumerate(scored.paths):
        row = [path, classes[scored.labels[i]], classes[pred[i]], f"{probs[i].max():.6f}", int(exit_stage[i])]
        row += [classes[baseline["pred"][i]]] if baseline else []
        rows.append(row + ([f"{severities[i].share:.4f}", severities[i].name] if severities is not None else []))
    _write_csv(out / "predictions.csv", header, rows)
    wrong = np.flatnonzero(pred != scored.labels)
    _write_csv(out / "misclassified.csv", ["path", "true", "predicted", "confidence", "stage"],
               [[scored.paths[i], classes[scored.labels[i]], classes[pred[i]], f"{probs[i].max():.4f}",
                 int(exit_stage[i])] for i in wrong])


def write_reports(out: Path, classes: list[str], scored: Scored, pred: np.ndarray, probs: np.ndarray,
                  exit_stage: np.ndarray, sweep: list[dict[str, Any]], summary: dict[str, Any],
                  baseline: dict[str, Any] | None, log: Callable[[str], None]) -> None:
    """Write every evaluation file into ``out`` and complete ``summary`` (top-2, recalls, baseline)."""
    out.mkdir(parents=True, exist_ok=True)
    cascade = _classification_reports(out, classes, scored.labels, pred)
    summary["top2"] = _topk_accuracy(probs, scored.labels, 2)
    summary["per_class_recall"] = cascade["recall"]
    _per_photo(out, classes, scored, pred, probs, exit_stage, baseline)
    # Every stage's probabilities, so any threshold rule can be replayed offline (simulate_exits).
    save_stage_arrays(out / "stage_probs.npz", scored.outputs, scored.labels)
    _write_csv(out / "sweep.csv", ["threshold", "accuracy", "mean_gmacs", "exit_histogram"],
               [[p["threshold"], f"{p['accuracy']:.4f}", f"{p['mean_macs'] / 1e9:.5f}",
                 " ".join(map(str, p["exit_histogram"]))] for p in sweep])
    points = []
    if baseline is not None:
        from sklearn.metrics import recall_score

        recall = recall_score(scored.labels, baseline["pred"], labels=list(range(len(classes))), average=None,
                              zero_division=0)
        summary["baseline"] = {"arch": baseline["arch"], "input_size": baseline["input_size"], "top1": baseline["top1"],
                               "top2": _topk_accuracy(baseline["probs"], scored.labels, 2),
                               "per_class_recall": {name: float(r) for name, r in zip(classes, recall)},
                               "mean_gmacs": baseline["mean_gmacs"], "images_per_s": baseline["images_per_s"]}
        points.append({"label": f"baseline {baseline['arch']} @{baseline['input_size']}",
                       "macs": baseline["mean_gmacs"] * 1e9, "accuracy": baseline["top1"]})
    plot_sweep(sweep, points, {"mean_macs": summary["mean_macs"], "accuracy": summary["top1"]}, out / "budget_sweep.png")
    plot_reliability(summary["calibration"]["bins"], summary["calibration"]["ece"], out / "reliability.png",
                     summary["calibration"].get("ece_if_calibrated"))
    _write_csv(out / "what_you_get.csv", list(summary["what_you_get"][0]),
               [list(row.values()) for row in summary["what_you_get"]])
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    log(cascade["text"])
    line = (f"cascade top-1 {summary['top1']:.4f} at {summary['mean_gmacs']:.3f} GMACs/img "
            f"(~{summary['images_per_s']:.1f} img/s, networks in {summary.get('precision', 'float32')}), "
            f"all patches {summary['all_patches_top1']:.4f}")
    if baseline is not None:
        line += f"; baseline {baseline['arch']}@{baseline['input_size']} top-1 {baseline['top1']:.4f} at {baseline['mean_gmacs']:.3f} GMACs"
    log(line)
    log(what_you_get_text(summary["what_you_get"]))
    log(calibration_text(summary["calibration"]))
    if "refusal" in summary:
        log(refusal_text(summary["refusal"]))


def refusal_text(refusal: dict[str, Any], most: int = 5) -> str:
    """The refusal line for the terminal: how many photos the model would not answer, why, the accuracy without
    them, and the (at most ``most``) classes refused most often: a class refused far more than the rest is worth a
    look (photographed unlike its validation photos, for one)."""
    total = refusal["not_a_leaf"] + refusal["unsure"]
    line = (f"refusal: {total} of {refusal['photos']} photos refused ({refusal['refused_fraction']:.1%}: "
            f"not_a_leaf {refusal['not_a_leaf']}, unsure {refusal['unsure']}); top-1 {refusal['accuracy_all']:.4f} "
            f"on all, {refusal['accuracy_accepted']:.4f} on the accepted")
    counts = [(name, c["not_a_leaf"] + c["unsure"], c["photos"]) for name, c in refusal["per_class"].items()]
    refused = sorted((row for row in counts if row[1]), key=lambda row: (-row[1] / row[2], row[0]))[:most]
    if refused:
        line += "; most refused: " + ", ".join(f"{name} {k} of {n}" for name, k, n in refused)
    return line


def calibration_text(calibration: dict[str, Any]) -> str:
    """The ECE line for the terminal, read against what a perfectly calibrated model would show on as many
    photos (on a few dozen photos that is several points, so the bare ECE would mislead)."""
    perfect = calibration.get("ece_if_calibrated")
    line = (f"calibration: ECE {calibration['ece']:.4f} of the answer's confidence ({calibration['photos']} photos, "
            f"{len(calibration['bins'])} bins; reliability.png)")
    if perfect:
        verdict = ("within what chance gives a calibrated model" if perfect["p_value"] >= 0.05
                   else "beyond chance: the confidence is off")
        line += (f"; a perfectly calibrated model would show {perfect['mean']:.4f} on these photos (95% of draws "
                 f"under {perfect['p95']:.4f}): {verdict} (p = {perfect['p_value']:.2f}); mean confidence "
                 f"{calibration['mean_confidence']:.4f}, accuracy {calibration['accuracy']:.4f}")
    return line


def what_you_get_text(rows: list[dict[str, Any]]) -> str:
    """The "what you get" table as aligned text for the terminal."""
    lines = [f"{'model':<34} {'top-1':>7} {'GMACs':>7}  vs the full-image baseline [95% CI]"]
    for row in rows:
        versus = "" if row["vs_baseline"] == "" else f"{row['vs_baseline']:+.4f} [{row['ci_low']:+.4f}, {row['ci_high']:+.4f}]"
        lines.append(f"{row['model']:<34} {row['top1']:>7.4f} {row['gmacs']:>7.3f}  {versus}")
    return "\n".join(lines)
