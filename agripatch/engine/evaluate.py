"""`agripatch evaluate`: per-class reports, confusion matrix, compute cost and the budget sweep.

One pass over the split (:func:`agripatch.engine.scoring.score_photos`: every exit's probabilities and the
full-image baseline's), then the cascade's early-exit predictions replayed from them
(:func:`~agripatch.pipeline.exits.simulate_exits`, bit for bit what `predict` decides), so every threshold of
the accuracy-versus-MACs sweep costs no model run. ``--backend onnxruntime`` scores an export folder instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from agripatch.engine.reports import write_reports
from agripatch.engine.scoring import Scored, score_photos, split_dataset
from agripatch.engine.findings import findings_report, read_stress_flags
from agripatch.engine.severity import TRUTH_FILE, read_severity_truth, severity_report
from agripatch.errors import AgripatchError
from agripatch.pipeline.bundle import ModelBundle, load_model_file
from agripatch.pipeline.exits import (
    ExitPolicy,
    ExitOutputs,
    choose_thresholds,
    answer_probabilities,
    simulate_exits,
    sweep_thresholds,
)
from agripatch.engine.stats import paired_comparison
from agripatch.pipeline.calibration import (
    ECE_BINS,
    ece_if_calibrated,
    expected_calibration_error,
    reliability_bins,
)
from agripatch.pipeline.macs import count_macs
from agripatch.pipeline.refusal import NOT_A_LEAF, UNSURE

__all__ = ["EvaluateOptions", "ExportedModel", "OnnxStages", "evaluate_bundle", "load_exported", "run_evaluation"]


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
    backend: str = "torch"
    int8: bool = False
    severity: bool | None = None  # True: measure severity (the package's symptom map if the model has none)
    precision: str = "auto"  # torch backend: the networks' dtype (auto: bf16 on CPUs with AMX, else float32)

    def policy(self, stored: list[float]) -> ExitPolicy:
        """The exit policy these options ask for (an error when both thresholds and a budget are given)."""
        return ExitPolicy.from_options(self.thresholds, self.budget, stored)


def refusal_summary(refusal, scored: Scored, pred: np.ndarray, confidences: np.ndarray, classes: Sequence[str],
                    off_leaf: Sequence[int] = ()) -> dict[str, Any]:
    """How many of these (in-distribution) photos the refusal rule turns away (answers ``pred``; the cascade's
    ``off_leaf`` classes), in all and per true class (where refusal bites: a class photographed unlike its
    validation photos), and the accuracy on the rest."""
    decisions = refusal.decide(scored.outputs.features, confidences, scored.outputs.plant_share, pred, off_leaf)
    accepted = np.array([d is None for d in decisions])
    correct = pred == scored.labels
    labels, kinds = np.asarray(scored.labels), np.array([str(d) for d in decisions])
    per_class = {name: {"photos": int((labels == c).sum()),
                        "not_a_leaf": int(((labels == c) & (kinds == NOT_A_LEAF)).sum()),
                        "unsure": int(((labels == c) & (kinds == UNSURE)).sum())}
                 for c, name in enumerate(classes)}
    view_macs = scored.outputs.refusal_macs
    return {"photos": int(len(decisions)), "not_a_leaf": int((kinds == NOT_A_LEAF).sum()),
            "judged_on_views": int((view_macs > 0).sum()) if view_macs is not None else 0,
            "mean_view_gmacs": float(view_macs.mean()) / 1e9 if view_macs is not None else 0.0,
            "unsure": int((kinds == UNSURE).sum()),
            "refused_fraction": float(1 - accepted.mean()), "accuracy_all": float(correct.mean()),
            "accuracy_accepted": float(correct[accepted].mean()) if accepted.any() else float("nan"),
            "per_class": per_class}


def _estimated_speed(scored: Scored, exit_stage: np.ndarray) -> float:
    """Photos per second of the early-exit cascade: each stage's measured time per photo, paid by the photos
    that reach it (what `predict` spends; decoding excluded)."""
    n = len(exit_stage)
    reached = np.array([(exit_stage >= s).sum() for s in range(len(scored.exit_seconds))], dtype=np.float64)
    seconds = float((scored.exit_seconds / max(n, 1) * reached).sum())
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
    """Whether the answers' confidence is a probability: ECE over :data:`ECE_BINS` bins and the bins, beside
    the ECE a perfectly calibrated model would show on as few photos (its mean, 95th percentile, and the share
    of its draws at or above this ECE: a p-value, small when the confidence is off beyond chance)."""
    bins = reliability_bins(confidences, correct, ECE_BINS)
    ece = expected_calibration_error(confidences, correct, ECE_BINS)
    perfect = ece_if_calibrated(confidences, ECE_BINS)
    return {"ece": ece, "photos": int(len(correct)),
            "mean_confidence": float(np.mean(confidences)), "accuracy": float(np.mean(correct)), "bins": bins,
            "ece_if_calibrated": {"mean": float(perfect.mean()), "p95": float(np.percentile(perfect, 95)),
                                  "p_value": float(np.mean(perfect >= ece - 1e-12))}}


def what_you_get(labels: np.ndarray, outputs: ExitOutputs, pred: np.ndarray, macs: np.ndarray, how: str,
                 baseline: dict[str, Any] | None, k: int | None = None) -> list[dict[str, Any]]:
    """One row per way of reading these photos (the cascade at its exits, all patches, the glance alone, the
    full-image baseline): top-1, mean GMACs, and the paired difference against the baseline with its 95%
    bootstrap interval over photos (empty without a baseline). ``k`` is the all-patches exit (default: the last;
    a cascade with a full-image exit has one more)."""
    k = outputs.probs.shape[1] - 1 if k is None else k
    answers = [(f"cascade ({how})", pred, float(macs.mean()) / 1e9),
               ("all patches", outputs.probs[:, k].argmax(1), float(outputs.exit_macs[k]) / 1e9),
               ("glance only", outputs.probs[:, 0].argmax(1), float(outputs.exit_macs[0]) / 1e9)]
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
    choice = choose_thresholds(options.policy(pipeline.config.exit_thresholds()), pipeline.config.n_exits, outputs,
                               floor=floor)
    pred, exit_stage, macs = simulate_exits(outputs.probs, outputs.exit_macs, choice.thresholds)
    probs = answer_probabilities(outputs.probs, exit_stage)
    summary: dict[str, Any] = {
        "split": options.split, "num_images": int(len(scored.labels)), "classes": bundle.classes,
        "precision": bundle.precision,
        "thresholds": [float(t) for t in choice.thresholds], "thresholds_source": choice.how,
        "top1": float((pred == scored.labels).mean()),
        "mean_macs": float(macs.mean()), "mean_gmacs": float(macs.mean() / 1e9),
        "images_per_s": _estimated_speed(scored, exit_stage),
        "exit_histogram": np.bincount(exit_stage, minlength=pipeline.config.n_exits).tolist(),
        "stage_gmacs": [float(m) / 1e9 for m in outputs.exit_macs],
        "all_patches_top1": float((outputs.probs[:, pipeline.config.k].argmax(1) == scored.labels).mean()),
        "glance_top1": float((outputs.probs[:, 0].argmax(1) == scored.labels).mean()),
        "unreadable": [{"path": path, "reason": reason} for path, reason in scored.errors],
    }
    if bundle.refusal is not None and scored.outputs.features is not None:
        summary["refusal"] = refusal_summary(bundle.refusal, scored, pred, probs.max(axis=1), bundle.classes,
                                             pipeline.config.off_leaf_classes)
    baseline = _baseline_summary(bundle, scored) if scored.baseline_probs is not None else None
    summary["calibration"] = calibration_summary(probs.max(axis=1), pred == scored.labels)
    summary["what_you_get"] = what_you_get(scored.labels, outputs, pred, macs, choice.how, baseline,
                                           k=pipeline.config.k)
    if scored.severities is not None:
        summary["severity"] = _severity_summary(scored, pipeline.config.severity, Path(options.data), log)
    findings = _findings_summary(pipeline.config, bundle.classes, scored, probs, Path(options.data), log)
    if findings is not None:
        summary["findings"] = findings
    sweep = sweep_thresholds(outputs.probs, outputs.exit_macs, scored.labels)
    write_reports(Path(options.out), bundle.classes, scored, pred, probs, exit_stage, sweep, summary, baseline, log)
    return summary


def _severity_summary(scored: Scored, config: Any, data: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Severity of the scored photos, against ``DATA/severity.csv`` when the dataset has one."""
    truth_path = data / TRUTH_FILE
    truth = read_severity_truth(truth_path, config.names) if truth_path.is_file() else None
    report = severity_report([s.share for s in scored.severities], [s.index for s in scored.severities],
                             scored.paths, config.names, truth)
    report.update(side=config.side, mean_gmacs=float(np.mean([s.macs for s in scored.severities])) / 1e9)
    labelled = report.get("labelled")
    if labelled is not None:
        low, high = labelled["accuracy_ci95"]
        extra = (f", share MAE {labelled['share_mae']:.2f} points, Lin's CCC {labelled['share_ccc']:.3f}"
                 if "share_mae" in labelled else "")
        log(f"severity class {labelled['accuracy']:.3f} [{low:.3f}, {high:.3f}] on {labelled['photos']} photos "
            f"of {truth_path}{extra}")
    return report


def _findings_summary(config: Any, classes: list[str], scored: Scored, probs: np.ndarray, data: Path,
                      log: Callable[[str], None]) -> dict[str, Any] | None:
    """The findings' per-stress precision and recall against ``DATA/severity.csv``'s stress flags, when the model
    lists findings and the dataset flags stresses."""
    path = data / TRUTH_FILE
    if config.findings_threshold is None or not path.is_file():
        return None
    flags = read_stress_flags(path, classes, config.findings_exclude)
    if flags is None:
        return None
    report = findings_report(probs, scored.paths, classes, config.findings_threshold, config.findings_exclude, flags)
    log(f"findings (probability >= {config.findings_threshold:g}): macro F1 {report['findings']['macro_f1']:.3f}, "
        f"exact {report['findings']['exact']:.3f} on {report['photos']} photos ({report['several_flagged']} with "
        f"several stresses); the top class alone: {report['top_class_only']['macro_f1']:.3f}, "
        f"{report['top_class_only']['exact']:.3f}")
    return report


@dataclass
class ExportedModel:
    """An `agripatch export` folder as :func:`evaluate_bundle` reads a model file: the ONNX cascade (``pipeline``:
    :class:`OnnxStages`), its classes and refusal rule, and no full-image baseline (exports carry none)."""

    classes: list[str]
    refusal: Any
    pipeline: OnnxStages
    baseline: None = None
    baseline_spec: None = None

    @property
    def precision(self) -> str:
        """The graphs' arithmetic: ``int8`` or ``float32``."""
        return self.pipeline.predictor.precision


class OnnxStages:
    """The ONNX cascade with the PyTorch pipeline's evaluation interface (``config``, ``decode_min_side``,
    ``exit_probabilities`` on the dataset's CHW photos and glances)."""

    def __init__(self, predictor: Any):
        self.predictor = predictor
        self.config = predictor.config

    def decode_min_side(self) -> int:
        """Shorter side photos are decoded at (as exported)."""
        return self.predictor.decode_min_side()

    def exit_probabilities(self, images: list[torch.Tensor], glances: torch.Tensor | None, *,
                            timing: np.ndarray | None = None, files: list | None = None) -> ExitOutputs:
        """Every exit's probabilities for these photos on ONNX Runtime."""
        from agripatch.runtime.photos import as_hwc

        glance = None if glances is None else glances.numpy()
        return self.predictor.cascade.exit_probabilities([as_hwc(image) for image in images], glance, timing=timing,
                                                         files=files)


def load_exported(folder: Path, *, int8: bool = False, device: str = "cpu",
                  severity: bool | None = None) -> ExportedModel:
    """An export folder ready for :func:`evaluate_bundle` (one-line errors: no onnxruntime, not an export folder)."""
    from agripatch.runtime.errors import require
    from agripatch.runtime.manifest import MANIFEST_NAME

    require("onnxruntime", "--backend onnxruntime")
    if not (Path(folder) / MANIFEST_NAME).is_file():
        raise AgripatchError(f"--backend onnxruntime: {str(folder)!r} must be an export folder with {MANIFEST_NAME}; "
                           "make one with `agripatch export MODEL.pt --format onnx --out DIR`")
    from agripatch.runtime.predictor import OnnxPredictor

    predictor = OnnxPredictor(folder, int8=int8, device=device, severity=severity)
    return ExportedModel(predictor.classes, predictor.refusal, OnnxStages(predictor))


def run_evaluation(options: EvaluateOptions) -> dict[str, Any]:
    """CLI entry: load the model file (or, with ``backend="onnxruntime"``, the export folder) alone and evaluate
    it as ``options`` say."""
    from rich.console import Console

    from agripatch.allocator import tune_memory_allocator
    from agripatch.device import check_precision, resolve_device

    console = Console(stderr=True)
    if options.backend not in ("torch", "onnxruntime"):
        raise AgripatchError(f"--backend {options.backend!r}: use torch or onnxruntime")
    if options.int8 and options.backend != "onnxruntime":
        raise AgripatchError("--int8 runs the int8 graphs of an export folder: use it with --backend onnxruntime")
    check_precision(options.precision, options.backend)
    if options.backend == "onnxruntime":
        exported = load_exported(options.model, int8=options.int8, device=options.device, severity=options.severity)
        summary = evaluate_bundle(exported, options, log=console.print)
        console.print(f"[green]wrote[/green] reports to {options.out}")
        return summary
    tune_memory_allocator()
    bundle = load_model_file(options.model)
    bundle.pipeline = bundle.pipeline.measuring_severity(options.severity)
    bundle.place(resolve_device(options.device), options.precision)
    summary = evaluate_bundle(bundle, options, log=console.print)
    console.print(f"[green]wrote[/green] reports to {options.out}")
    return summary
