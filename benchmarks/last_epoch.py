"""Does choosing each stage's best epoch on the validation photos make the calibrated confidence overconfident?
(issue 24: ECE on the coffee_highres cross-validation folds is beyond chance, overconfident on 3 of 5 folds.)

    python -m benchmarks.last_epoch                   # the 5 folds, both variants
    python -m benchmarks.last_epoch --folds 0,1

Training keeps each stage's epoch with the best validation accuracy, then fits the exits' temperatures on the same
40 validation leaves a fold. The chosen epoch is the luckiest of 10 on those leaves, so they read better than new
leaves do and the temperatures sharpen the confidence. Without retraining, this replays each fold's finished
`recipe_default.py` run with a stage's last epoch instead of its best (copied from the run's `last.pt`): `agripatch
train --resume` then finds every epoch done, rebuilds the cascade and calibrates it on the validation leaves, and
`evaluate` scores it on the fold's test leaves. Variants: ``patches_last`` (AnchorNet as trained, the patch
classifier's last epoch: the patch classifier was trained on that AnchorNet's cells, so nothing else changes) and
``both_last``. Paired with the same runs' own model files (best epochs), evaluated again by this code, on the same
test photos. The other sets (``SETS``: the official high-res split, coffee leaves, iBean, PlantVillage-mini, each
3 seeds of the recipe as it is now) check on photos that played no part in raising the question. Writes
`results/recipe_default/last_epoch.json`.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from benchmarks.recipe_default import ece_consistency, paired_runs, read_evaluation

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "benchmarks" / "work"
CV = RUNS / "recipe_default" / "coffee_highres_cv5"
WORK = RUNS / "last_epoch"
OUT = REPO / "benchmarks" / "results" / "recipe_default" / "last_epoch.json"
#: finished runs of the recipes as they are now, on the protocol's splits: set -> [(seed, run, data root)]. The
#: cross-validation is the set this question came from; the others check it on photos that played no part in it.
SETS: dict[str, list[tuple[int, Path, Path]]] = {
    "coffee_highres_cv5": [(k, CV / f"seed{k}", CV / f"fold{k}" / "data") for k in range(5)],
    "coffee_highres": [(s, RUNS / "recipe_default" / "coffee_highres" / f"seed{s}",
                        RUNS / "recipe_default" / "coffee_highres" / "data") for s in range(3)],
    "coffee_leaf": [(s, RUNS / "symptom_map" / f"coffee224_seed{s}", RUNS / "protocol" / "coffee_leaf" / "data")
                    for s in range(3)],
    "ibean": [(s, RUNS / "full_image_exit" / "ibean" / f"seed{s}", RUNS / "protocol" / "ibean" / "data")
              for s in range(3)],
    "plantvillage_mini": [(s, RUNS / "full_image_exit" / "plantvillage_mini" / f"seed{s}",
                           RUNS / "protocol" / "plantvillage_mini" / "data") for s in range(3)],
}
#: sets that are a cross-validation: their runs test different photos, joined into one set of every photo
FOLDS = {"coffee_highres_cv5": 5}
VARIANTS = {"patches_last": ("patches",), "both_last": ("anchornet", "patches")}
COPIED = ("splits.csv", "class_map.json", "metrics.csv", "recipe.yaml")  # recipe.yaml last: it marks a whole copy


def last_as_best(checkpoints: Path) -> None:
    """Make a stage's ``best.pt`` hold its last epoch's weights (what evaluation would use without selection)."""
    from agripatch.engine.loop import STATE_FORMAT, kept_weights
    from agripatch.io.torchfile import save_object

    weights, _, val_acc = kept_weights(checkpoints, "last")
    save_object({"format": STATE_FORMAT, "stage": checkpoints.name, "model": weights, "val_acc": val_acc},
                checkpoints / "best.pt")


def _folder(name: str, seed: int) -> str:
    return f"fold{seed}" if name in FOLDS else f"{name}/seed{seed}"


def _evaluated(model: Path, data: Path, evaluation: Path) -> Path:
    """``agripatch evaluate`` of ``model`` on ``data``'s test split into ``evaluation`` (kept when already there)."""
    if not (evaluation / "summary.json").is_file():
        _agripatch("evaluate", str(model), "--data", str(data), "--split", "test", "--out", str(evaluation))
    return evaluation


def evaluate_best(name: str, seed: int, source: Path, data: Path) -> Path:
    """The run's own model file (best epochs) evaluated again with this code, so both sides share it (cached)."""
    return _evaluated(source / "model.pt", data, WORK / "best_epoch" / _folder(name, seed) / "eval_test")


def replay(name: str, seed: int, source: Path, data: Path, variant: str) -> Path:
    """A finished run with the variant's stages at their last epoch, calibrated and evaluated (cached)."""
    run = WORK / variant / _folder(name, seed)
    evaluation = run / "eval_test"
    if (evaluation / "summary.json").is_file():
        return evaluation
    if not (run / "model.pt").is_file():
        if not (run / "recipe.yaml").is_file():
            shutil.copytree(source / "checkpoints", run / "checkpoints", dirs_exist_ok=True)
            for stage in VARIANTS[variant]:
                last_as_best(run / "checkpoints" / stage)
            for file_name in COPIED:
                shutil.copy2(source / file_name, run / file_name)
        _agripatch("train", "--recipe", str(run / "recipe.yaml"), "--data", str(data), "--out", str(run),
                   "--seed", str(seed), "--resume")
    return _evaluated(run / "model.pt", data, evaluation)


#: sets whose recipes end with the full-image exit: their replays are also calibrated with it, as the recipe does
FULL_IMAGE_SETS = ("ibean", "plantvillage_mini")


def with_full_image_exit(model: Path, data: Path, work: Path) -> Path:
    """``model`` recalibrated with the full-image exit (``agripatch calibrate --full-image-exit`` on the validation
    photos, as `full_image_exit.py` made the recipes' default models) and evaluated on the test split (cached)."""
    full = work / "model_full_image.pt"
    if not full.is_file() and not (work / "eval_full_image" / "summary.json").is_file():
        _agripatch("calibrate", str(model), "--data", str(data), "--out", str(full), "--full-image-exit")
    return _evaluated(full, data, work / "eval_full_image")


#: the protocol's most accurate full-image model per set with a full-image exit (README's results table)
BEST_BASELINE = {"ibean": "baseline-224", "plantvillage_mini": "baseline-160"}


def against_best_baseline(name: str, runs: list[dict]) -> dict:
    """Runs read by `recipe_default.read_evaluation` paired with the protocol's best full-image model of the same
    seeds on the same photos (matched by class folder and file name), as the README's table pairs its rows."""
    from agripatch.engine.stats import paired_comparison

    protocol = json.loads((REPO / "benchmarks" / "results" / "protocol" / f"{name}.json").read_text())
    baseline_runs = protocol["runs"][BEST_BASELINE[name]]
    ours, theirs = [], []
    for run in runs:
        baseline = baseline_runs[str(run["seed"])]
        model = next(iter(baseline["models"].values()))
        base = {"/".join(Path(p).parts[-2:]): bool(c) for p, c in zip(baseline["paths"], model["correct"])}
        mine = {"/".join(Path(p).parts[-2:]): bool(c) for p, c in zip(run["paths"], run["correct"])}
        if set(mine) != set(base):
            raise SystemExit(f"{name} seed {run['seed']}: other test photos than the protocol's {BEST_BASELINE[name]}")
        ours.append([mine[k] for k in sorted(mine)])
        theirs.append([base[k] for k in sorted(mine)])
    c = paired_comparison(np.array(ours, bool), np.array(theirs, bool))
    return {"baseline": BEST_BASELINE[name], "baseline_top1": c.accuracy_b, "points": 100 * c.difference,
            "ci": [100 * c.ci_low, 100 * c.ci_high], "gained": c.only_a, "lost": c.only_b}


def _agripatch(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "agripatch", *args], check=True)


def paired(ours: list[dict], theirs: list[dict], name: str) -> dict:
    """Two sets of runs of ``name`` paired over its test photos (`recipe_default.paired_runs`: seeds averaged per
    photo, a cross-validation's folds joined), in points with a 95% bootstrap interval over photos."""
    return paired_runs([r["correct"] for r in ours], [r["correct"] for r in theirs], FOLDS.get(name, 0))


def summary(runs: list[dict], name: str) -> dict:
    """Top-1, ECE against chance, mean confidence and refusals over the folds' leaves."""
    leaves = sum(r["photos"] for r in runs)
    correct = np.concatenate([r["correct"] for r in runs])
    last_exit = [{"correct": r["all_patches_correct"]} for r in runs]  # every photo read to the last exit
    every_exit = paired(runs, last_exit, name)
    return {"leaves": leaves, "against_every_exit": every_exit, "top1": float(correct.mean()),
            "ece_per_fold": [r["ece"] for r in runs],
            "mean_confidence_per_fold": [r["mean_confidence"] for r in runs],
            "top1_per_fold": [r["top1"] for r in runs], "gmacs": float(np.mean([r["gmacs"] for r in runs])),
            "refused": float(np.mean([r["refused"] for r in runs])), "ece_consistency": ece_consistency(runs),
            "per_seed": [{k: v for k, v in r.items() if k != "all_patches_correct"} for r in runs]}


def table(stored: dict) -> str:
    """Every set: best epoch against each variant (top-1, difference, ECE against chance, GMACs)."""
    lines = ["| set (test photos x runs) | kept | top-1 | vs best epoch [95% CI] (gained / lost) | ECE (a calibrated "
             "model's; p) | mean confidence | GMACs |", "|---|---|---|---|---|---|---|"]
    for name, result in stored.items():
        rows = [("best epoch", result["best_epoch"]), *result["variants"].items()]
        if "full_image_exit" in result:
            full = result["full_image_exit"]
            rows += [("best epoch, full-image exit", full["best_epoch"]), ("patches_last, full-image exit",
                                                                           full["patches_last"])]
        for label, s in rows:
            c, runs = s["ece_consistency"], len(s["top1_per_fold"])
            versus = s.get("against_best_epoch")
            diff = (f"{versus['difference_points'] + 0.0:+.2f} [{versus['ci95_points'][0]:+.2f}, "
                    f"{versus['ci95_points'][1]:+.2f}] ({versus['gained']} / {versus['lost']})" if versus else "")
            lines.append(f"| {name} ({s['leaves'] if name in FOLDS else s['leaves'] // runs} x "
                         f"{1 if name in FOLDS else runs}) | {label} | {s['top1']:.4f} | {diff} | "
                         f"{c['ece']:.3f} ({c['if_calibrated_mean']:.3f}; {c['p_value']:.2f}) | "
                         f"{np.mean(s['mean_confidence_per_fold']):.3f} | {s['gmacs']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Replay every fold with each variant and store the comparison."""
    from agripatch.io.atomic import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    stored = json.loads(OUT.read_text()) if OUT.is_file() else {}
    for name in args.sets.split(","):
        runs = SETS[name]
        best = [read_evaluation(evaluate_best(name, seed, source, data), seed) for seed, source, data in runs]
        result = stored.get(name, {"variants": {}})
        result.update({"runs": [str(source.relative_to(REPO)) for _, source, _ in runs],
                       "best_epoch": summary(best, name)})
        for variant in args.variants.split(","):
            replayed = [read_evaluation(replay(name, seed, source, data, variant), seed) for seed, source, data in runs]
            result["variants"][variant] = {**summary(replayed, name),
                                           "against_best_epoch": paired(replayed, best, name)}
        if name in FULL_IMAGE_SETS and "patches_last" in args.variants.split(","):
            best_full, last_full = [], []
            for seed, source, data in runs:
                best_run = WORK / "best_epoch" / _folder(name, seed)
                last_run = WORK / "patches_last" / _folder(name, seed)
                best_full.append(read_evaluation(with_full_image_exit(source / "model.pt", data, best_run), seed))
                last_full.append(read_evaluation(with_full_image_exit(last_run / "model.pt", data, last_run), seed))
            result["full_image_exit"] = {"best_epoch": summary(best_full, name), "patches_last": {
                **summary(last_full, name), "against_best_epoch": paired(last_full, best_full, name),
                "against_best_baseline": against_best_baseline(name, last_full)}}
        stored[name] = result
        atomic_write_text(OUT, json.dumps(stored, indent=1) + "\n")  # each set as it finishes: a kill loses none
        for label, s in [("best epoch", result["best_epoch"]), *result["variants"].items()]:
            c = s["ece_consistency"]
            print(f"{name} {label:14s} top-1 {s['top1']:.4f} ECE {c['ece']:.3f} (calibrated "
                  f"{c['if_calibrated_mean']:.3f}, p {c['p_value']:.2f}) confidence "
                  f"{np.mean(s['mean_confidence_per_fold']):.3f} GMACs {s['gmacs']:.3f} refused {s['refused']:.3f} "
                  f"{s.get('against_best_epoch', '')}")
    atomic_write_text(OUT.with_suffix(".md"), table(stored) + "\n")


if __name__ == "__main__":
    main()
