"""Cascade vs full-image baseline on real photos: accuracy, per-class recall, MACs, CPU speed, train time.

    python benchmarks/field_accuracy.py                      # iBean (../shared/data/ibean/train), 20% val, seed 0
    python benchmarks/field_accuracy.py --dataset plantvillage_mini
    python benchmarks/field_accuracy.py --baselines mobilenetv2_100@128,mobilenetv2_100@160,mobilenetv2_100@320
    python benchmarks/field_accuracy.py --tag k4 cascade.k=4   # an ablation: recipe overrides after the flags

Each run trains with `agripatch train` (the recipe's cascade and its full-image baseline with the same epochs
and augmentation), evaluates on the validation split with `agripatch evaluate`, and appends to
benchmarks/results/<dataset>/results.json; it prints a markdown table of every run so far and draws
every baseline and cascade on one accuracy-vs-MACs plot. Runs resume: a finished run is only re-evaluated.
Each cascade is also reported with 2-fold cross-calibrated exit thresholds (chosen on one half of the
validation split, applied to the other), the honest version of its calibrated operating point.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
DATASETS = {"ibean": ("ibean/train", "ibean"), "plantvillage_mini": ("plantvillage_mini", "plantvillage")}


def prepare_root(source: Path, work: Path, val: float, seed: int) -> Path:
    """A writable dataset root: links to the read-only class folders plus our own stratified splits.csv."""
    from agripatch.data.folder import scan_image_folder
    from agripatch.data.splits import make_splits, write_splits_csv

    root = work / "data"
    root.mkdir(parents=True, exist_ok=True)
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        link = root / class_dir.name
        if not link.exists():
            link.symlink_to(class_dir.resolve(), target_is_directory=True)
    if not (root / "splits.csv").is_file():
        write_splits_csv(make_splits(scan_image_folder(root), val=val, test=0.0, seed=seed), root / "splits.csv")
    return root


def train_minutes(run: Path) -> dict[str, float]:
    """Training minutes per stage from metrics.csv."""
    minutes: dict[str, float] = {}
    with open(run / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            minutes[row["stage"]] = minutes.get(row["stage"], 0.0) + float(row["seconds"]) / 60
    return minutes


def train_and_evaluate(recipe: str, root: Path, run: Path, overrides: list[str], epochs: int | None) -> dict:
    """Train (or resume) one run and evaluate it on the validation split."""
    from agripatch.engine.evaluate import EvaluateOptions, run_evaluation
    from agripatch.engine.train import run_training

    if not (run / "model.pt").is_file():
        run_training(recipe, root, run, epochs=epochs, device="auto", resume=(run / "recipe.yaml").is_file(),
                     overrides=overrides)
    summary = run_evaluation(EvaluateOptions(model=run / "model.pt", data=root, out=run / "eval_val", split="val",
                                             device="cpu"))
    summary["train_minutes"] = train_minutes(run)
    return summary


def evaluate_glance_classifier(root: Path, run: Path) -> dict:
    """The same trained cascade, but glancing with the classifier on the downsampled photo instead of AnchorNet."""
    from agripatch.engine.evaluate import EvaluateOptions, evaluate_bundle
    from agripatch.pipeline.bundle import load_model_file

    bundle = load_model_file(run / "model.pt")
    bundle.pipeline.config.glance = "classifier"
    options = EvaluateOptions(model=run / "model.pt", data=root, out=run / "eval_val_glance_classifier", split="val")
    return evaluate_bundle(bundle, options, log=lambda *a, **k: None)


def cross_calibrated(run: Path, seed: int = 0) -> dict:
    """Honest exit thresholds: calibrate on one half of val, report on the other, and swap (2-fold).

    `agripatch train` calibrates on the whole validation split and `evaluate` reports on that same split,
    which flatters the cascade's operating point; this replays both halves with thresholds they did not
    choose, using the same rule (cheapest within 0.5 point of the best), from the stage probabilities
    `evaluate` saved.
    """
    import numpy as np

    from agripatch.pipeline.exits import accuracy_preserving_thresholds, simulate_exits

    saved = np.load(run / "eval_val" / "stage_probs.npz")
    probs, stage_macs, labels = saved["probs"], saved["stage_macs"], saved["labels"]
    rng = np.random.default_rng(seed)
    fold = np.zeros(len(labels), dtype=np.int64)
    for c in np.unique(labels):  # stratified halves
        members = rng.permutation(np.flatnonzero(labels == c))
        fold[members[: len(members) // 2]] = 1
    pred = np.zeros(len(labels), dtype=np.int64)
    macs = np.zeros(len(labels), dtype=np.float64)
    chosen = []
    for f in (0, 1):
        tune, test = fold != f, fold == f
        choice = accuracy_preserving_thresholds(probs[tune], stage_macs, labels[tune])
        p, _, m = simulate_exits(probs[test], stage_macs, choice.thresholds)
        pred[test], macs[test] = p, m
        chosen.append(choice.threshold)
    return {"top1": float((pred == labels).mean()), "mean_gmacs": float(macs.mean() / 1e9), "thresholds": chosen}


def environment() -> dict:
    """Package versions and machine, recorded beside the numbers."""
    import timm
    import torch
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "timm": timm.__version__, "machine": platform.machine(), "processor": platform.processor(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def rows_of(results: dict) -> list[dict]:
    """Flatten every run into table rows: one per baseline and one per cascade operating point."""
    rows = []
    for tag, run in results["runs"].items():
        s = run["summary"]
        minutes = run["summary"]["train_minutes"]
        if "baseline" in s:
            b = s["baseline"]
            rows.append({"model": f"baseline {b['arch']} @{b['input_size']}", "run": tag, "top1": b["top1"],
                         "gmacs": b["mean_gmacs"], "images_per_s": b["images_per_s"],
                         "train_min": minutes.get("baseline", 0.0), "recall": b.get("per_class_recall", {})})
        if run.get("cascade", True):
            cascade_minutes = sum(v for k, v in minutes.items() if k != "baseline")
            rows.append({"model": f"cascade (thresholds {s['thresholds'][0]:.3g})", "run": tag, "top1": s["top1"],
                         "gmacs": s["mean_gmacs"], "images_per_s": s["images_per_s"], "train_min": cascade_minutes,
                         "recall": s["per_class_recall"], "exits": s["exit_histogram"]})
            rows.append({"model": f"cascade all {len(s['stage_gmacs']) - 1} patches", "run": tag,
                         "top1": s["all_patches_top1"], "gmacs": s["stage_gmacs"][-1], "images_per_s": float("nan"),
                         "train_min": cascade_minutes, "recall": {}})
            rows.append({"model": "cascade glance only", "run": tag, "top1": s["glance_top1"],
                         "gmacs": s["stage_gmacs"][0], "images_per_s": float("nan"), "train_min": cascade_minutes,
                         "recall": {}})
            x = run.get("cross_calibrated")
            if x:
                rows.append({"model": "cascade, 2-fold cross-calibrated thresholds "
                             f"({', '.join(f'{t:.3g}' for t in x['thresholds'])})", "run": tag, "top1": x["top1"],
                             "gmacs": x["mean_gmacs"], "images_per_s": float("nan"), "train_min": cascade_minutes,
                             "recall": {}})
            g = run.get("glance_classifier")
            if g:
                rows.append({"model": f"cascade, classifier glance (thresholds {g['thresholds'][0]:.3g})", "run": tag,
                             "top1": g["top1"], "gmacs": g["mean_gmacs"], "images_per_s": g["images_per_s"],
                             "train_min": cascade_minutes, "recall": g["per_class_recall"]})
                rows.append({"model": "classifier glance only", "run": tag, "top1": g["glance_top1"],
                             "gmacs": g["stage_gmacs"][0], "images_per_s": float("nan"), "train_min": cascade_minutes,
                             "recall": {}})
    return rows


def markdown(rows: list[dict], classes: list[str]) -> str:
    """The results table in markdown."""
    head = "| run | model | top-1 | " + " | ".join(f"recall {c}" for c in classes) + " | GMACs/img | CPU img/s | train min |"
    lines = [head, "|" + "---|" * (6 + len(classes))]
    for r in rows:
        recalls = " | ".join(f"{r['recall'][c]:.3f}" if c in r["recall"] else "" for c in classes)
        speed = "" if r["images_per_s"] != r["images_per_s"] else f"{r['images_per_s']:.1f}"
        lines.append(f"| {r['run']} | {r['model']} | {r['top1']:.4f} | {recalls} | {r['gmacs']:.3f} | {speed} | "
                     f"{r['train_min']:.1f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Every baseline and every cascade sweep on one accuracy-vs-MACs plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    base = sorted((run["summary"]["baseline"]["mean_gmacs"], run["summary"]["baseline"]["top1"],
                   f"{run['summary']['baseline']['arch']}@{run['summary']['baseline']['input_size']}")
                  for run in results["runs"].values() if "baseline" in run["summary"])
    for gmacs, top1, label in base:
        ax.plot([gmacs], [top1], "s", ms=7)
        ax.annotate(label, (gmacs, top1), fontsize=7, xytext=(4, -8), textcoords="offset points")
    for tag, run in results["runs"].items():
        if not run.get("cascade", True):
            continue
        sweep = sorted((p["mean_gmacs"], p["accuracy"]) for p in run["sweep"])
        ax.plot([x for x, _ in sweep], [y for _, y in sweep], "o-", ms=3, label=f"cascade {tag}")
        s = run["summary"]
        ax.plot([s["mean_gmacs"]], [s["top1"]], "*", ms=12)
    ax.set_xlabel("mean GMACs per image")
    ax.set_ylabel("validation top-1")
    ax.set_title(results["dataset"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def read_sweep(run: Path) -> list[dict]:
    """The evaluation's threshold sweep as numbers."""
    with open(run / "eval_val" / "sweep.csv", newline="") as handle:
        return [{"threshold": row["threshold"], "accuracy": float(row["accuracy"]),
                 "mean_gmacs": float(row["mean_gmacs"])} for row in csv.DictReader(handle)]


def main(argv: list[str] | None = None) -> None:
    """Parse arguments, run the requested trainings and write the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="ibean")
    parser.add_argument("--recipe", default=None, help="defaults to the dataset's recipe")
    parser.add_argument("--tag", default="default", help="name of this configuration in the results")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--val", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--baselines", default="", help="extra full-image baselines, e.g. mobilenetv2_100@160,tf_efficientnet_lite0@224")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work")
    parser.add_argument("--results", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--glance-classifier", action="store_true",
                        help="also evaluate the cascade glancing with the classifier instead of AnchorNet")
    parser.add_argument("overrides", nargs="*", help="recipe overrides key=value for the cascade run")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(os.cpu_count() or 1)
    source_rel, default_recipe = DATASETS[args.dataset]
    source = SHARED / source_rel
    if not source.is_dir():
        sys.exit(f"{source} is not here: this benchmark needs ../shared/data beside the checkout")
    recipe = args.recipe or default_recipe
    work = args.work / args.dataset
    root = prepare_root(source, work, args.val, args.seed)
    out_dir = args.results / args.dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {"dataset": args.dataset, "runs": {}}
    results["environment"] = environment()
    results["split"] = {"val": args.val, "seed": args.seed}

    jobs = [(args.tag, list(args.overrides), True)]
    for item in filter(None, args.baselines.split(",")):
        arch, _, size = item.partition("@")
        jobs.append((f"baseline-{arch}-{size}", [
            "stages.anchornet.enabled=false", "stages.patches.enabled=false", "stages.baseline.enabled=true",
            f"models.baseline.arch={arch}", f"data.baseline_size={size or 224}", "cascade.thresholds=[1,1,1,0]",
        ], False))
    for tag, overrides, is_cascade in jobs:
        start = time.perf_counter()
        summary = train_and_evaluate(recipe, root, work / "runs" / tag, overrides, args.epochs)
        results["runs"][tag] = {"overrides": overrides, "recipe": recipe, "cascade": is_cascade, "summary": summary,
                                "sweep": read_sweep(work / "runs" / tag), "wall_minutes": (time.perf_counter() - start) / 60}
        if is_cascade:
            results["runs"][tag]["cross_calibrated"] = cross_calibrated(work / "runs" / tag, args.seed)
        if is_cascade and args.glance_classifier:
            results["runs"][tag]["glance_classifier"] = evaluate_glance_classifier(root, work / "runs" / tag)
        results_path.write_text(json.dumps(results, indent=2))

    classes = next(iter(results["runs"].values()))["summary"]["classes"]
    table = markdown(rows_of(results), classes)
    (out_dir / "results.md").write_text(table)
    plot(results, out_dir / "accuracy_vs_macs.png")
    print(table)
    print(f"wrote {results_path}, {out_dir / 'results.md'}, {out_dir / 'accuracy_vs_macs.png'}")


if __name__ == "__main__":
    main()
