"""What a recipe gives by default now, on the protocol's test photos: the recipe as it is (exit rule, refusal,
severity), trained on the protocol's splits, scored by ``agripatch evaluate``; the README's results row reads it.

    python -m benchmarks.recipe_default --dataset coffee_highres --seeds 0,1,2   # the official split, 3 seeds
    python -m benchmarks.recipe_default --dataset coffee_highres --folds 5       # the 5-fold cross-validation
    python -m benchmarks.recipe_default --dataset coffee_leaf --recipe ibean --seeds 0,1  # another crop's recipe

Each run trains ``agripatch train --recipe R`` without its full-image baseline stage (the protocol trains the
baselines apart), or with it where the recipe ends with the full-image exit (that stage trains the exit's network), under
``benchmarks/work/recipe_default/<name>/seed<n>`` (resumed after a kill, each finished evaluation cached), then
evaluates it on the test split. With ``--folds K`` the run with seed k tests fold k, on the same folds as
``protocol.py --folds K``. Writes ``benchmarks/results/recipe_default/<name>.json`` (``<name>``: the dataset, plus
``_cv<K>``, or ``_<recipe>_recipe`` for ``--recipe``: a recipe made for another crop, as a user of a new crop would
start) with the recipe's digest (:func:`recipe_digest`): per run its sorted test paths, correctness (and the last exit's, all patches read), ECE, refused share, and GMACs a photo with the symptom map
included (its severity pass is part of what a user runs).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from agripatch.pipeline.calibration import ece_if_calibrated
from benchmarks.protocol import DATASETS, prepare_fold_root, prepare_root, train_and_evaluate

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work" / "recipe_default"
OUT = REPO / "benchmarks" / "results" / "recipe_default"


def study_name(dataset: str, folds: int = 0, recipe: str | None = None) -> str:
    """The study's name: the dataset, plus ``_cv<K>`` for a cross-validation or ``_<recipe>_recipe`` when the runs
    train a recipe other than the dataset's own."""
    name = f"{dataset}_cv{folds}" if folds else dataset
    return name if recipe in (None, DATASETS[dataset]["recipe"]) else f"{name}_{recipe}_recipe"


def result_path(dataset: str, folds: int = 0, recipe: str | None = None) -> Path:
    """Where the default runs of ``dataset`` (its ``folds``-fold cross-validation when ``folds``; ``recipe`` when not
    the dataset's own) are stored."""
    return OUT / f"{study_name(dataset, folds, recipe)}.json"


def run_seed(recipe: str, root: Path, run: Path, seed: int) -> dict:
    """Train (or resume) the recipe with ``seed`` on ``root``, evaluate it on the test split (cached) and read
    what the README's row needs. A recipe that ends with the full-image exit trains its baseline stage (the exit's
    network); the others skip it, as the protocol trains baselines apart."""
    from agripatch.recipes import load_recipe

    overrides = [] if load_recipe(recipe).cascade.full_image_exit else ["stages.baseline.enabled=false"]
    return read_evaluation(train_and_evaluate(recipe, root, run, seed, overrides), seed)


def recipe_digest(recipe: str) -> str:
    """A short hash of the recipe's validated settings: the README's row reads a study only while the recipe it
    trained is the recipe as it is now."""
    import hashlib

    from agripatch.recipes import load_recipe

    settings = load_recipe(recipe).model_dump(mode="json")
    settings["cascade"].pop("off_leaf_classes", None)  # fitted by training, not a setting: never in a recipe
    settings = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()[:16]


def read_evaluation(evaluation: Path, seed: int) -> dict:
    """One evaluated run as the README's default row reads it: per sorted test path the default's and the last
    exit's (all patches read) correctness, ECE, refused share and GMACs a photo with the symptom map included."""
    with open(evaluation / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    summary = json.loads((evaluation / "summary.json").read_text())
    severity = (summary.get("severity") or {}).get("mean_gmacs") or 0.0
    saved = np.load(evaluation / "stage_probs.npz")  # every exit's probabilities, rows in predictions.csv's order
    last = (saved["probs"][:, -1].argmax(1) == saved["labels"]).tolist()
    right = {row["path"]: (row["true"] == row["predicted"], bool(all_read), float(row["confidence"]),
                           row.get("baseline_predicted") == row["true"] if row.get("baseline_predicted") else None)
             for row, all_read in zip(rows, last)}
    paths = sorted(right)
    confidence = np.array([right[p][2] for p in paths])
    return {"seed": seed, "photos": len(paths), "top1": summary["top1"], "all_patches_top1": summary["all_patches_top1"],
            "mean_confidence": summary["calibration"]["mean_confidence"],
            "paths": paths, "correct": [bool(right[p][0]) for p in paths],
            "all_patches_correct": [right[p][1] for p in paths],
            "baseline_correct": [right[p][3] for p in paths] if rows and rows[0].get("baseline_predicted") else None,
            "baseline_gmacs": (summary.get("baseline") or {}).get("mean_gmacs"),
            "confidence": [round(float(c), 6) for c in confidence],
            "ece_if_calibrated": float(ece_if_calibrated(confidence, seed=seed).mean()),
            "ece": summary["calibration"]["ece"], "refused": summary["refusal"]["refused_fraction"],
            "cascade_gmacs": summary["mean_gmacs"], "symptom_map_gmacs": severity,
            "exit_histogram": summary["exit_histogram"], "stage_gmacs": summary["stage_gmacs"],
            "gmacs": summary["mean_gmacs"] + severity}


def ece_consistency(runs: list[dict]) -> dict:
    """The runs' mean ECE against the mean ECE a perfectly calibrated model would show with the same confidences
    on the same photos (each run drawn apart): its mean, 95th percentile and the share of draws at or above the
    measured one (p-value). On 49 leaves a perfect model's ECE is several points, so the bare ECE misleads."""
    draws = np.mean([ece_if_calibrated(np.array(run["confidence"]), seed=run["seed"]) for run in runs], axis=0)
    measured = float(np.mean([run["ece"] for run in runs]))
    return {"ece": measured, "if_calibrated_mean": float(draws.mean()), "if_calibrated_p95": float(np.percentile(draws, 95)),
            "p_value": float(np.mean(draws >= measured - 1e-12))}


def paired_runs(ours: list, theirs: list, folds: int) -> dict:
    """Paired difference in points of two correctness lists per run (folds test different photos: joined)."""
    from agripatch.engine.stats import paired_comparison

    join = np.concatenate if folds else np.stack
    c = paired_comparison(join(ours), join(theirs))
    return {"ours": c.accuracy_a, "theirs": c.accuracy_b, "difference_points": 100 * c.difference,
            "ci95_points": [100 * c.ci_low, 100 * c.ci_high], "gained": c.only_a, "lost": c.only_b, "photos": c.photos}


def against_all_patches(runs: list[dict], folds: int) -> dict:
    """The default exits against the last exit (all patches read) of the same runs, paired (issue 24's target)."""
    return paired_runs([r["correct"] for r in runs], [r["all_patches_correct"] for r in runs], folds)


def against_own_baseline(runs: list[dict], folds: int) -> dict | None:
    """The default exits against the same runs' own full-image model (the model file's baseline, read by ``evaluate``
    on the same photos), paired; None when the runs hold no baseline."""
    if any(run.get("baseline_correct") is None for run in runs):
        return None
    return {**paired_runs([r["correct"] for r in runs], [r["baseline_correct"] for r in runs], folds),
            "baseline_gmacs": float(np.mean([r["baseline_gmacs"] for r in runs]))}


def against_protocol(name: str, runs: list[dict], folds: int) -> dict | None:
    """These runs paired with the protocol's "cascade" runs of the same seeds on the same photos (the recipe as
    it was when the protocol ran): difference and 95% interval in points, or None without them."""
    from benchmarks.protocol import RESULTS

    stored = RESULTS / f"{name}.json"
    theirs = json.loads(stored.read_text())["runs"].get("cascade", {}) if stored.is_file() else {}
    if not all(str(run["seed"]) in theirs for run in runs):
        return None
    old = []
    for run in runs:
        other = theirs[str(run["seed"])]
        by_path = dict(zip(other["paths"], other["models"]["cascade"]["correct"]))
        old.append([bool(by_path[p]) for p in run["paths"]])
    return {**paired_runs([r["correct"] for r in runs], old, folds),
            "theirs_gmacs": float(np.mean([theirs[str(r["seed"])]["models"]["cascade"]["gmacs"] for r in runs]))}


def against_study(study: str, runs: list[dict], folds: int) -> dict:
    """These runs paired with another stored study's runs of the same seeds on the same photos (e.g. the recipe
    before a change). ``study``: a JSON file with ``per_seed`` runs (`read_evaluation`'s form), or ``FILE#a/b`` for
    the ``per_seed`` under keys a, b (``last_epoch.json#coffee_leaf/variants/patches_last``)."""
    path, _, keys = study.partition("#")
    stored = json.loads(Path(path).read_text())
    for key in filter(None, keys.split("/")):
        stored = stored[key]
    theirs = {run["seed"]: run for run in stored["per_seed"]}
    missing = [run["seed"] for run in runs if run["seed"] not in theirs or theirs[run["seed"]]["paths"] != run["paths"]]
    if missing:
        raise SystemExit(f"{study}: no runs of seeds {missing} on these test photos")
    return {"study": study,
            **paired_runs([r["correct"] for r in runs], [theirs[r["seed"]]["correct"] for r in runs], folds),
            "theirs_gmacs": float(np.mean([theirs[r["seed"]]["gmacs"] for r in runs]))}


def main(argv: list[str] | None = None) -> None:
    """Train and score every seed (or fold), then store the runs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    parser.add_argument("--seeds", default=None, help="the training seeds (default 0,1,2); with --folds, the folds "
                        "to run (default all: the README's row needs every fold)")
    parser.add_argument("--folds", type=int, default=0, help="K-fold cross-validation: seed k tests fold k")
    parser.add_argument("--recipe", default=None, help="train this recipe instead of the dataset's own (e.g. the "
                        "`ibean` recipe on coffee leaves: what a user of a crop without its own recipe gets)")
    parser.add_argument("--against", default=None, help="also pair with this stored study's runs of the same "
                        "seeds (FILE or FILE#key/key: per_seed paths and correct), e.g. the recipe before a change")
    args = parser.parse_args(argv)
    from agripatch.recipes import load_recipe

    recipe = args.recipe or DATASETS[args.dataset]["recipe"]
    name = study_name(args.dataset, args.folds, recipe)
    seeds = ([int(s) for s in args.seeds.split(",")] if args.seeds
             else list(range(args.folds)) if args.folds else [0, 1, 2])
    runs = []
    for seed in seeds:
        root = (prepare_fold_root(args.dataset, args.folds, seed, WORK) if args.folds
                else prepare_root(args.dataset, WORK))
        print(f"[{name}] seed {seed}", flush=True)
        runs.append(run_seed(recipe, root, WORK / name / f"seed{seed}", seed))
    OUT.mkdir(parents=True, exist_ok=True)
    path = result_path(args.dataset, args.folds, recipe)
    tmp = path.with_suffix(".json.tmp")
    against = against_study(args.against, runs, args.folds) if args.against else None
    cascade = load_recipe(recipe).cascade
    settings = {"target_confidence": cascade.target_confidence,
                "severity_side": cascade.severity.side if cascade.severity is not None else None}
    tmp.write_text(json.dumps({"dataset": args.dataset, "recipe": recipe, "recipe_digest": recipe_digest(recipe),
                               "folds": args.folds, "settings": settings,
                               "mean": {key: float(np.mean([run[key] for run in runs]))
                                        for key in ("top1", "gmacs", "cascade_gmacs", "ece", "refused")},
                               "against_all_patches": against_all_patches(runs, args.folds),
                               "against_own_baseline": against_own_baseline(runs, args.folds),
                               "ece_consistency": ece_consistency(runs),
                               "against_protocol_cascade": against_protocol(name, runs, args.folds),
                               "against_study": against,
                               "per_seed": runs},
                              indent=1) + "\n")
    tmp.replace(path)
    for run in runs:
        print(f"seed {run['seed']}: top-1 {np.mean(run['correct']):.4f} @ {run['gmacs']:.3f} GMACs (all patches "
              f"{np.mean(run['all_patches_correct']):.4f}), ECE {run['ece']:.3f}, refused {run['refused']:.1%}")
    e = ece_consistency(runs)
    print(f"mean ECE {e['ece']:.3f}; a perfectly calibrated model on these photos {e['if_calibrated_mean']:.3f} "
          f"(95% under {e['if_calibrated_p95']:.3f}), p = {e['p_value']:.2f}")
    own = against_own_baseline(runs, args.folds)
    if own:
        print(f"default - the runs' own full-image model ({own['baseline_gmacs']:.3f} GMACs): "
              f"{own['difference_points']:+.2f} [{own['ci95_points'][0]:+.2f}, {own['ci95_points'][1]:+.2f}] points")
    c = against_all_patches(runs, args.folds)
    print(f"default - all patches, paired on the same test photos: {c['difference_points']:+.2f} "
          f"[{c['ci95_points'][0]:+.2f}, {c['ci95_points'][1]:+.2f}] points")
    if against:
        c = against
        print(f"against {c['study']}: {c['difference_points']:+.2f} [{c['ci95_points'][0]:+.2f}, "
              f"{c['ci95_points'][1]:+.2f}] points ({c['gained']} gained, {c['lost']} lost), GMACs "
              f"{np.mean([r['gmacs'] for r in runs]):.3f} against {c['theirs_gmacs']:.3f}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
