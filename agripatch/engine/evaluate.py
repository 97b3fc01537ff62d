"""`agripatch evaluate`: per-class reports, confusion matrix, compute cost and the budget sweep.

The cascade is run twice over the split: once with its exit thresholds (the predictions, exit stages,
MACs and images/s a user gets), once with every stage recorded, so any threshold can be replayed
offline into an accuracy-versus-MACs curve. The full-image baseline in the model file, when present,
is evaluated on the same photos and drawn on the same plot.
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from agripatch.data.photos import PhotoDataset
from agripatch.data.splits import classes_of, load_splits, samples_for
from agripatch.engine.data import collate_eval
from agripatch.errors import DatasetError
from agripatch.io.atomic import atomic_path, atomic_write_text
from agripatch.pipeline.bundle import ModelBundle, load_model_file
from agripatch.pipeline.cascade import (
    PatchPipeline,
    StageOutputs,
    decode_min_side,
    make_glance,
    normalize,
    parse_thresholds,
    simulate_exits,
    sweep_thresholds,
)
from agripatch.pipeline.macs import count_macs


def _loader(dataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate_eval)


def collect_stage_outputs(
    pipeline: PatchPipeline,
    dataset: PhotoDataset,
    *,
    batch_size: int = 16,
    workers: int = 0,
    on_skipped: Callable[[list[str]], None] | None = None,
) -> tuple[StageOutputs, np.ndarray, list[str]]:
    """Every stage's probabilities for every readable photo of `dataset` (labels and paths alongside)."""
    parts, labels, paths = [], [], []
    for batch in _loader(dataset, batch_size, workers):
        if batch["errors"] and on_skipped is not None:
            on_skipped([path for path, _ in batch["errors"]])
        if not batch["image"]:
            continue
        parts.append(pipeline.stage_probabilities(batch["image"]))
        labels.extend(batch["label"].tolist())
        paths.extend(batch["path"])
    if not parts:
        raise DatasetError("no readable photo to evaluate")
    return StageOutputs.concat(parts), np.asarray(labels, dtype=np.int64), paths


@torch.no_grad()
def _run_baseline(bundle: ModelBundle, dataset: PhotoDataset, batch_size: int, workers: int) -> dict[str, Any]:
    spec = bundle.baseline_spec
    model = bundle.baseline
    device = bundle.pipeline.device
    model = model.to(device).eval()
    size = int(spec["input_size"])
    preds, probs_all, labels, seconds = [], [], [], 0.0
    for batch in _loader(dataset, batch_size, workers):
        if not batch["image"]:
            continue
        start = time.perf_counter()
        x = normalize(make_glance(batch["image"], size, device), spec["mean"], spec["std"])
        probs = torch.softmax(model(x).float(), dim=1).cpu()
        seconds += time.perf_counter() - start
        probs_all.append(probs.numpy())
        preds.extend(probs.argmax(1).tolist())
        labels.extend(batch["label"].tolist())
    macs = count_macs(model, (1, 3, size, size))
    return {"arch": spec["arch"], "input_size": size, "pred": np.asarray(preds), "labels": np.asarray(labels),
            "probs": np.concatenate(probs_all), "macs": int(macs), "images_per_s": len(preds) / max(seconds, 1e-9)}


def _topk_accuracy(probs: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, probs.shape[1])
    top = np.argsort(-probs, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def _write_csv(path: Path, header: list[str], rows: list[list[Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _save_figure(fig, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")


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
        ax.plot([base["macs"] / 1e9], [base["accuracy"]], "s", ms=8,
                label=f"{base['label']}")
    ax.set_xlabel("mean GMACs per image")
    ax.set_ylabel("top-1 accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save_figure(fig, path)
    plt.close(fig)


def evaluate_bundle(bundle: ModelBundle, data: Path, split: str, out: Path, *, budget: float | None = None,
                    thresholds: str | None = None, batch_size: int = 16, workers: int = 0,
                    log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate a loaded model on one split of a dataset and write every report into `out`."""
    from sklearn.metrics import classification_report, confusion_matrix

    from agripatch.pipeline.cascade import thresholds_for_budget

    rows = load_splits(data)
    data_classes = classes_of(rows)
    if data_classes != bundle.classes:
        raise DatasetError(f"classes of {data} {data_classes} do not match the model's {bundle.classes}")
    samples = samples_for(rows, split, bundle.classes)
    if not samples:
        raise DatasetError(f"split {split!r} of {data} is empty; choose --split train, val or test")
    pipeline = bundle.pipeline
    cfg = pipeline.config
    min_side = decode_min_side(cfg.glance_size, cfg.patch_size, pipeline.anchornet.receptive_field.size)
    dataset = PhotoDataset(data, [path for path, _ in samples], labels=[label for _, label in samples], min_side=min_side)
    errors: list[tuple[str, str]] = []

    outputs, labels, paths = collect_stage_outputs(pipeline, dataset, batch_size=batch_size, workers=workers)
    n_stages = cfg.k + 1
    chosen_thresholds = parse_thresholds(thresholds, n_stages)
    if budget is not None:
        chosen_thresholds = thresholds_for_budget(outputs.probs, outputs.stage_macs, budget * 1e9).thresholds
    chosen_thresholds = chosen_thresholds or list(cfg.thresholds)

    # The real early-exit run: predictions, exits, MACs and speed as a user gets them.
    preds, stages, macs, probs, seconds = [], [], [], [], 0.0
    for batch in _loader(dataset, batch_size, workers):
        errors.extend(batch["errors"])
        if not batch["image"]:
            continue
        start = time.perf_counter()
        results = pipeline.predict(batch["image"], thresholds=chosen_thresholds)
        seconds += time.perf_counter() - start
        for result in results:
            preds.append(result.label)
            stages.append(result.stage)
            macs.append(result.macs)
            probs.append(result.probs)
    preds_a, stages_a, macs_a = np.asarray(preds), np.asarray(stages), np.asarray(macs)
    probs_a = np.stack(probs)
    out.mkdir(parents=True, exist_ok=True)

    label_ids = list(range(len(bundle.classes)))
    report_text = classification_report(labels, preds_a, labels=label_ids, target_names=bundle.classes,
                                        digits=4, zero_division=0)
    report_dict = classification_report(labels, preds_a, labels=label_ids, target_names=bundle.classes,
                                        output_dict=True, zero_division=0)
    atomic_write_text(out / "report.txt", report_text)
    atomic_write_text(out / "report.json", json.dumps(report_dict, indent=2))
    matrix = confusion_matrix(labels, preds_a, labels=label_ids)
    _write_csv(out / "confusion_matrix.csv", ["true \\ predicted", *bundle.classes],
               [[name, *matrix[i].tolist()] for i, name in enumerate(bundle.classes)])
    plot_confusion(matrix, bundle.classes, out / "confusion_matrix.png")
    _write_csv(out / "misclassified.csv", ["path", "true", "predicted", "confidence", "stage"],
               [[paths[i], bundle.classes[labels[i]], bundle.classes[preds_a[i]], f"{probs_a[i].max():.4f}", stages_a[i]]
                for i in np.flatnonzero(preds_a != labels)])

    with atomic_path(out / "stage_probs.npz") as tmp, open(tmp, "wb") as handle:
        # Every stage's probabilities, so any threshold rule can be replayed offline (simulate_exits).
        np.savez(handle, probs=outputs.probs, stage_macs=outputs.stage_macs, labels=labels)
    sweep = sweep_thresholds(outputs.probs, outputs.stage_macs, labels)
    _write_csv(out / "sweep.csv", ["threshold", "accuracy", "mean_gmacs", "exit_histogram"],
               [[p["threshold"], f"{p['accuracy']:.4f}", f"{p['mean_macs'] / 1e9:.5f}",
                 " ".join(map(str, p["exit_histogram"]))] for p in sweep])
    summary: dict[str, Any] = {
        "split": split, "num_images": int(len(labels)), "classes": bundle.classes,
        "thresholds": [float(t) for t in chosen_thresholds],
        "top1": float((preds_a == labels).mean()), "top2": _topk_accuracy(probs_a, labels, 2),
        "mean_macs": float(macs_a.mean()), "mean_gmacs": float(macs_a.mean() / 1e9),
        "images_per_s": len(preds_a) / max(seconds, 1e-9),
        "exit_histogram": np.bincount(stages_a, minlength=n_stages).tolist(),
        "stage_gmacs": [float(m) / 1e9 for m in outputs.stage_macs],
        "all_patches_top1": float((outputs.probs[:, -1].argmax(1) == labels).mean()),
        "glance_top1": float((outputs.probs[:, 0].argmax(1) == labels).mean()),
        "per_class_recall": {name: report_dict[name]["recall"] for name in bundle.classes},
        "unreadable": [{"path": path, "reason": reason} for path, reason in errors],
    }
    replay = simulate_exits(outputs.probs, outputs.stage_macs, chosen_thresholds)
    summary["replay_matches_run"] = bool(np.array_equal(replay[0], preds_a) and np.array_equal(replay[1], stages_a))

    baselines = []
    if bundle.baseline is not None:
        base = _run_baseline(bundle, dataset, batch_size, workers)
        base_acc = float((base["pred"] == base["labels"]).mean())
        base_report = classification_report(base["labels"], base["pred"], labels=label_ids,
                                            target_names=bundle.classes, output_dict=True, zero_division=0)
        summary["baseline"] = {"arch": base["arch"], "input_size": base["input_size"], "top1": base_acc,
                               "top2": _topk_accuracy(base["probs"], base["labels"], 2),
                               "per_class_recall": {name: base_report[name]["recall"] for name in bundle.classes},
                               "mean_gmacs": base["macs"] / 1e9, "images_per_s": base["images_per_s"]}
        baselines.append({"label": f"baseline {base['arch']} @{base['input_size']}", "macs": base["macs"],
                          "accuracy": base_acc})
    plot_sweep(sweep, baselines, {"mean_macs": summary["mean_macs"], "accuracy": summary["top1"]},
               out / "budget_sweep.png")
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    log(report_text)
    line = (f"cascade top-1 {summary['top1']:.4f} at {summary['mean_gmacs']:.3f} GMACs/img "
            f"({summary['images_per_s']:.1f} img/s), all patches {summary['all_patches_top1']:.4f}")
    if "baseline" in summary:
        b = summary["baseline"]
        line += f"; baseline {b['arch']}@{b['input_size']} top-1 {b['top1']:.4f} at {b['mean_gmacs']:.3f} GMACs"
    log(line)
    return summary


def run_evaluation(model: str | Path, data: str | Path, out: str | Path, *, split: str = "test",
                   budget: float | None = None, thresholds: str | None = None, device: str = "auto",
                   batch_size: int = 16, workers: int = 0) -> dict[str, Any]:
    """CLI entry: load the model file alone and evaluate it on DATA's SPLIT into OUT."""
    from rich.console import Console

    from agripatch.device import resolve_device

    console = Console(stderr=True)
    bundle = load_model_file(model)
    target = resolve_device(device)
    bundle.pipeline.to(target)
    summary = evaluate_bundle(bundle, Path(data), split, Path(out), budget=budget, thresholds=thresholds,
                              batch_size=batch_size, workers=workers, log=console.print)
    console.print(f"[green]wrote[/green] reports to {out}")
    return summary
