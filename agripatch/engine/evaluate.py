"""`agripatch evaluate`: per-class reports, confusion matrix, compute cost and the budget sweep.

One pass over the split: each batch is decoded once, the cascade records every stage's probabilities
(:meth:`~agripatch.pipeline.cascade.PatchPipeline.stage_probabilities`) and the full-image baseline in the
model file, when present, classifies the same photos. The cascade's early-exit predictions are then
replayed from the stage probabilities (:func:`~agripatch.pipeline.exits.simulate_exits`, bit for bit what
`predict` decides), so every threshold of the accuracy-versus-MACs sweep costs no model run.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import DataLoader

from agripatch.data.photos import PhotoDataset
from agripatch.data.splits import classes_of, load_splits, samples_for
from agripatch.engine.reports import write_reports
from agripatch.errors import DatasetError
from agripatch.io.glance import read_glance
from agripatch.pipeline.bundle import ModelBundle, load_model_file
from agripatch.pipeline.cascade import PatchPipeline, normalize
from agripatch.pipeline.exits import (
    ExitPolicy,
    StageOutputs,
    choose_thresholds,
    exit_probabilities,
    simulate_exits,
    sweep_thresholds,
)
from agripatch.engine.stats import paired_comparison
from agripatch.pipeline.calibration import ECE_BINS, expected_calibration_error, reliability_bins
from agripatch.pipeline.macs import count_macs

__all__ = ["EvaluateOptions", "Scored", "evaluate_bundle", "run_evaluation", "score_photos", "split_dataset"]


@dataclass
class EvaluateOptions:
    """What `agripatch evaluate` is asked: which model, which split, which exit thresholds, where to write.

    ``thresholds`` (1 or k + 1 values) and ``budget`` (mean GMACs per photo, chosen without labels) are
    exclusive; with neither, the model file's calibrated thresholds are used.
    """

    model: Path
    data: Path
    out: Path
    split: str = "test"
    thresholds: list[float] | None = None
    budget: float | None = None
    device: str = "auto"
    batch_size: int = 16
    workers: int = 0

    def policy(self, stored: list[float]) -> ExitPolicy:
        """The exit policy these options ask for (an error when both thresholds and a budget are given)."""
        return ExitPolicy.from_options(self.thresholds, self.budget, stored)


@dataclass
class Scored:
    """One pass of the cascade (and the baseline) over labelled photos.

    ``outputs`` are the cascade's per-stage probabilities, ``stage_seconds`` [k + 1] its model time per
    stage summed over photos (stage 1 includes cutting the patches), ``baseline_probs`` [N, C] the
    baseline's, ``errors`` the unreadable files as (path, reason).
    """

    outputs: StageOutputs
    labels: np.ndarray
    paths: list[str]
    errors: list[tuple[str, str]] = field(default_factory=list)
    stage_seconds: np.ndarray | None = None
    baseline_probs: np.ndarray | None = None
    baseline_seconds: float = 0.0


def _loader(dataset: PhotoDataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=list)


@torch.no_grad()
def baseline_probabilities(bundle: ModelBundle, files: list[Path]) -> np.ndarray:
    """The full-image baseline's probabilities [N, C] for image files, each made as its training evaluated it
    (reduced decode for its size, then the area filter), not from the cascade's larger decode."""
    size = int(bundle.baseline_spec["input_size"])
    return _baseline_forward(bundle, torch.from_numpy(np.stack([read_glance(file, size) for file in files])))


@torch.no_grad()
def _baseline_forward(bundle: ModelBundle, inputs: torch.Tensor) -> np.ndarray:
    """The baseline's probabilities for its inputs [N, 3, S, S] in 0..1."""
    spec = bundle.baseline_spec
    x = normalize(inputs.to(bundle.pipeline.device), spec["mean"], spec["std"])
    return torch.softmax(bundle.baseline(x).float(), dim=1).cpu().numpy()


def score_photos(pipeline: PatchPipeline, dataset: PhotoDataset, *, baseline: ModelBundle | None = None,
                 batch_size: int = 16, workers: int = 0) -> Scored:
    """Every stage's probabilities (and the baseline's, from ``baseline``'s model file) for every readable
    photo of ``dataset``, decoding each photo once; unreadable ones are listed, not fatal."""
    parts, labels, paths, errors, base_parts = [], [], [], [], []
    seconds, base_seconds = np.zeros(pipeline.config.n_stages), 0.0
    for batch in _loader(dataset, batch_size, workers):
        errors.extend((item["path"], item["error"]) for item in batch if item["image"] is None)
        good = [item for item in batch if item["image"] is not None]
        if not good:
            continue
        images = [item["image"] for item in good]
        timing = np.zeros(pipeline.config.n_stages)
        parts.append(pipeline.stage_probabilities(images, _glances(good), timing=timing))
        seconds += timing
        if baseline is not None:
            start = time.perf_counter()
            if "baseline" in good[0]:  # made in the decoding workers (split_dataset asks for it)
                base_parts.append(_baseline_forward(baseline, torch.stack([item["baseline"] for item in good])))
            else:
                base_parts.append(baseline_probabilities(baseline, [dataset.root / str(item["path"]) for item in good]))
            base_seconds += time.perf_counter() - start
        labels.extend(item["label"] for item in good)
        paths.extend(item["path"] for item in good)
    if not parts:
        raise DatasetError("no readable photo to evaluate")
    return Scored(StageOutputs.concat(parts), np.asarray(labels, dtype=np.int64), paths, errors, seconds,
                  np.concatenate(base_parts) if base_parts else None, base_seconds)


def _glances(items: list[dict]) -> torch.Tensor | None:
    """The items' glances (made from each file as training evaluates it), or None when the dataset made none."""
    return torch.stack([item["glance"] for item in items]) if items[0]["glance"] is not None else None


def glance_features(pipeline: PatchPipeline, dataset: PhotoDataset, *, batch_size: int = 32,
                    workers: int = 0) -> tuple[np.ndarray, list[int]]:
    """AnchorNet's pooled glance features [N, D] of every readable photo of ``dataset``, with their labels."""
    features, labels = [], []
    for batch in _loader(dataset, batch_size, workers):
        good = [item for item in batch if item["image"] is not None]
        if good:
            features.append(pipeline.locate([item["image"] for item in good], _glances(good)).features.numpy())
            labels.extend(item["label"] for item in good)
    if not features:
        raise DatasetError("no readable photo to compute features on")
    return np.concatenate(features), labels


def refusal_summary(refusal, scored: Scored, pred: np.ndarray, confidences: np.ndarray) -> dict[str, Any]:
    """How many of these (in-distribution) photos the refusal rule turns away, and the accuracy on the rest."""
    decisions = refusal.decide(scored.outputs.features, confidences, scored.outputs.plant_share)
    accepted = np.array([d is None for d in decisions])
    correct = pred == scored.labels
    return {"not_a_leaf": int(sum(d == "not_a_leaf" for d in decisions)),
            "unsure": int(sum(d == "unsure" for d in decisions)),
            "refused_fraction": float(1 - accepted.mean()), "accuracy_all": float(correct.mean()),
            "accuracy_accepted": float(correct[accepted].mean()) if accepted.any() else float("nan")}


def split_dataset(bundle: ModelBundle, data: Path, split: str) -> PhotoDataset:
    """The labelled photos of one split of ``data``, checked against the model's classes, decoded as it needs."""
    rows = load_splits(data)
    data_classes = classes_of(rows)
    if data_classes != bundle.classes:
        raise DatasetError(f"classes of {data} {data_classes} do not match the model's {bundle.classes}")
    samples = samples_for(rows, split, bundle.classes)
    if not samples:
        raise DatasetError(f"split {split!r} of {data} is empty; choose --split train, val or test")
    baseline_size = int(bundle.baseline_spec["input_size"]) if bundle.baseline_spec is not None else None
    return PhotoDataset(data, [path for path, _ in samples], labels=[label for _, label in samples],
                        min_side=bundle.pipeline.decode_min_side(), glance_size=bundle.pipeline.config.glance_size,
                        baseline_size=baseline_size)


def _estimated_speed(scored: Scored, exit_stage: np.ndarray) -> float:
    """Photos per second of the early-exit cascade: each stage's measured time per photo, paid by the photos
    that reach it (what `predict` spends; decoding excluded)."""
    n = len(exit_stage)
    reached = np.array([(exit_stage >= s).sum() for s in range(len(scored.stage_seconds))], dtype=np.float64)
    seconds = float((scored.stage_seconds / max(n, 1) * reached).sum())
    return n / max(seconds, 1e-9)


def _baseline_summary(bundle: ModelBundle, scored: Scored) -> dict[str, Any]:
    spec = bundle.baseline_spec
    size = int(spec["input_size"])
    pred = scored.baseline_probs.argmax(1)
    macs = count_macs(bundle.baseline, (1, 3, size, size))
    return {"arch": spec["arch"], "input_size": size, "pred": pred, "probs": scored.baseline_probs,
            "top1": float((pred == scored.labels).mean()), "mean_gmacs": macs / 1e9,
            "images_per_s": len(pred) / max(scored.baseline_seconds, 1e-9)}


def calibration_summary(confidences: np.ndarray, correct: np.ndarray) -> dict[str, Any]:
    """Whether the answers' confidence is a probability: ECE over :data:`ECE_BINS` bins and the bins."""
    bins = reliability_bins(confidences, correct, ECE_BINS)
    return {"ece": expected_calibration_error(confidences, correct, ECE_BINS), "photos": int(len(correct)),
            "mean_confidence": float(np.mean(confidences)), "accuracy": float(np.mean(correct)), "bins": bins}


def what_you_get(labels: np.ndarray, outputs: StageOutputs, pred: np.ndarray, macs: np.ndarray, how: str,
                 baseline: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per way of reading these photos (the cascade at its exits, all patches, the glance alone, the
    full-image baseline): top-1, mean GMACs, and the paired difference against the baseline with its 95%
    bootstrap interval over photos (empty without a baseline)."""
    answers = [(f"cascade ({how})", pred, float(macs.mean()) / 1e9),
               ("all patches", outputs.probs[:, -1].argmax(1), float(outputs.stage_macs[-1]) / 1e9),
               ("glance only", outputs.probs[:, 0].argmax(1), float(outputs.stage_macs[0]) / 1e9)]
    if baseline is not None:
        answers.append((f"full image {baseline['arch']}@{baseline['input_size']}", baseline["pred"],
                        baseline["mean_gmacs"]))
    rows = []
    for name, answer, gmacs in answers:
        correct = answer == labels
        row = {"model": name, "top1": float(correct.mean()), "gmacs": gmacs, "vs_baseline": "",
               "ci_low": "", "ci_high": ""}
        if baseline is not None:
            c = paired_comparison(correct[None], (baseline["pred"] == labels)[None])
            row.update(vs_baseline=c.difference, ci_low=c.ci_low, ci_high=c.ci_high)
        rows.append(row)
    return rows


def evaluate_bundle(bundle: ModelBundle, options: EvaluateOptions, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate a loaded model on one split of a dataset and write every report into ``options.out``."""
    pipeline = bundle.pipeline
    dataset = split_dataset(bundle, Path(options.data), options.split)
    scored = score_photos(pipeline, dataset, baseline=bundle if bundle.baseline is not None else None,
                          batch_size=options.batch_size, workers=options.workers)
    outputs = scored.outputs
    floor = bundle.refusal.confidence_threshold if bundle.refusal is not None else None
    choice = choose_thresholds(options.policy(pipeline.config.exit_thresholds()), pipeline.config.n_stages, outputs,
                               floor=floor)
    pred, exit_stage, macs = simulate_exits(outputs.probs, outputs.stage_macs, choice.thresholds)
    probs = exit_probabilities(outputs.probs, exit_stage)
    summary: dict[str, Any] = {
        "split": options.split, "num_images": int(len(scored.labels)), "classes": bundle.classes,
        "thresholds": [float(t) for t in choice.thresholds], "thresholds_source": choice.how,
        "top1": float((pred == scored.labels).mean()),
        "mean_macs": float(macs.mean()), "mean_gmacs": float(macs.mean() / 1e9),
        "images_per_s": _estimated_speed(scored, exit_stage),
        "exit_histogram": np.bincount(exit_stage, minlength=pipeline.config.n_stages).tolist(),
        "stage_gmacs": [float(m) / 1e9 for m in outputs.stage_macs],
        "all_patches_top1": float((outputs.probs[:, -1].argmax(1) == scored.labels).mean()),
        "glance_top1": float((outputs.probs[:, 0].argmax(1) == scored.labels).mean()),
        "unreadable": [{"path": path, "reason": reason} for path, reason in scored.errors],
    }
    if bundle.refusal is not None and scored.outputs.features is not None:
        summary["refusal"] = refusal_summary(bundle.refusal, scored, pred, probs.max(axis=1))
    baseline = _baseline_summary(bundle, scored) if scored.baseline_probs is not None else None
    summary["calibration"] = calibration_summary(probs.max(axis=1), pred == scored.labels)
    summary["what_you_get"] = what_you_get(scored.labels, outputs, pred, macs, choice.how, baseline)
    sweep = sweep_thresholds(outputs.probs, outputs.stage_macs, scored.labels)
    write_reports(Path(options.out), bundle.classes, scored, pred, probs, exit_stage, sweep, summary, baseline, log)
    return summary


def run_evaluation(options: EvaluateOptions) -> dict[str, Any]:
    """CLI entry: load the model file alone and evaluate it as ``options`` say."""
    from rich.console import Console

    from agripatch.device import resolve_device, tune_memory_allocator

    tune_memory_allocator()
    console = Console(stderr=True)
    bundle = load_model_file(options.model)
    target = resolve_device(options.device)
    bundle.pipeline.to(target)
    if bundle.baseline is not None:
        bundle.baseline.to(target).eval()
    summary = evaluate_bundle(bundle, options, log=console.print)
    console.print(f"[green]wrote[/green] reports to {options.out}")
    return summary
