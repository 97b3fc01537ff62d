"""Should the default exits ever spend more than the full-image model? (issue 24: right by default, cost included)

    python -m benchmarks.cost_ceiling --name coffee_leaf_ibean_recipe \
        --runs "benchmarks/work/recipe_default/coffee_leaf_ibean_recipe/seed{0,1,2}"
    python -m benchmarks.cost_ceiling --name ibean --runs "benchmarks/work/recipe_default/ibean/seed{0,1,2}"

A recipe that ends with the full-image exit stops each photo at the first exit whose calibrated confidence reaches
its target (0.97). Where the patches rarely get that sure (a crop the recipe was not made for), most photos read
every patch and then the whole photo, and the cascade costs more than the full-image model it is meant to replace.
`choose_thresholds`' ceiling (the full-image model's MACs) then lowers the target to the highest shared threshold
that fits on the validation photos.

For each run (a `recipe_default.py` run: ``val_outputs.npz``, ``model.pt`` and ``eval_test/`` from `agripatch
evaluate`) both rules are fitted on the run's validation outputs by `fit_calibration`, as training and `agripatch
calibrate` fit them, and replayed on the test photos' stored exit probabilities (``eval_test/stage_probs.npz``, the
same numbers the live cascade compares: `simulate_exits` shares its stopping rule). ``--fractions 0.75,0.5`` also
replays lower ceilings (that share of the full-image model's MACs), for the record: the package's rule is 1. Both are paired on the same
test photos with each other and with the run's own full-image model (``predictions.csv``'s ``baseline_predicted``),
pooled over the runs. Writes ``benchmarks/results/cost_ceiling/<name>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "cost_ceiling"


def expand(pattern: str) -> list[Path]:
    """``a/seed{0,1,2}`` -> the three run folders (one brace group)."""
    head, _, rest = pattern.partition("{")
    if not rest:
        return [Path(pattern)]
    inner, _, tail = rest.partition("}")
    return [Path(f"{head}{part}{tail}") for part in inner.split(",")]


def replay_run(run: Path, fractions: list[float]) -> dict:
    """One run: the target rule and the ceilings (``fractions`` of the full-image model's MACs; 1 is the package's
    rule, named ``ceiling``) fitted on its validation outputs, replayed on its test photos."""
    from agripatch.engine.calibrate import fit_calibration
    from agripatch.pipeline.bundle import load_model_file
    from agripatch.pipeline.exits import ExitOutputs, ExitPolicy, simulate_exits
    from agripatch.recipes import RefusalConfig

    bundle = load_model_file(run / "model.pt")
    config = bundle.pipeline.config
    val = np.load(run / "val_outputs.npz")
    outputs = ExitOutputs(val["probs"], val["stage_macs"], val["features"], val["plant_share"])
    policy = ExitPolicy(target_confidence=config.target_confidence)
    ceiling = bundle.pipeline.full_image_macs()
    if ceiling is None:
        raise SystemExit(f"{run}: the cascade has no full-image exit, so no ceiling applies")
    fits = {name: fit_calibration(outputs, val["labels"], policy, config.n_exits, bundle.refusal, RefusalConfig(),
                                  config.exit_thresholds(), cap)
            for name, cap in [("target", None)] + [(rule_name(f), f * ceiling) for f in fractions]}
    test = np.load(run / "eval_test" / "stage_probs.npz")
    stored = np.asarray(config.temperatures, np.float64)
    if not np.allclose(fits["target"].temperatures, stored, rtol=1e-4):
        raise SystemExit(f"{run}: its temperatures were not fitted on val_outputs.npz (recalibrated since?)")
    with open(run / "eval_test" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    out = {"run": str(run.relative_to(REPO)) if run.is_absolute() else str(run), "photos": len(rows),
           "full_image_gmacs": ceiling / 1e9,
           "baseline_correct": [row["baseline_predicted"] == row["true"] for row in rows]}
    for name, fit in fits.items():
        pred, stage, macs = simulate_exits(test["probs"], test["stage_macs"], fit.thresholds)
        out[name] = {"thresholds": fit.thresholds, "how": fit.how, "val_gmacs": fit.val_mean_macs / 1e9,
                     "val_top1": fit.val_accuracy, "correct": (pred == test["labels"]).tolist(),
                     "gmacs": float(macs.mean()) / 1e9,
                     "exit_histogram": np.bincount(stage, minlength=config.n_exits).tolist()}
    return out


def rule_name(fraction: float) -> str:
    """``ceiling`` for the package's rule (the whole full-image model), ``ceiling_0.5`` for half of it."""
    return "ceiling" if fraction == 1 else f"ceiling_{fraction:g}"


def compare(runs: list[dict], a: str, b: str) -> dict:
    """``a`` against ``b`` (rule names or ``baseline``) on the same test photos, pooled over the runs
    (`recipe_default.paired_runs`: seeds of one split test the same photos)."""
    from benchmarks.recipe_default import paired_runs

    def correct(run: dict, name: str) -> list[bool]:
        return run["baseline_correct"] if name == "baseline" else run[name]["correct"]

    folds = int(len({run["photos"] for run in runs}) > 1)
    return {"a": a, "b": b, **paired_runs([np.array(correct(r, a), float) for r in runs],
                                          [np.array(correct(r, b), float) for r in runs], folds)}


def main(argv: list[str] | None = None) -> None:
    """Replay every run, pair the rules, write the JSON and print the table."""
    from agripatch.io.atomic import atomic_write_text

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="run folders, one brace group: RUNS/seed{0,1,2}")
    parser.add_argument("--name", required=True)
    parser.add_argument("--fractions", default="", help="lower ceilings to replay too, e.g. 0.75,0.5")
    args = parser.parse_args(argv)
    fractions = [1.0] + [float(f) for f in args.fractions.split(",") if f]
    rules = ["target"] + [rule_name(f) for f in fractions]
    runs = [replay_run(run, fractions) for run in expand(args.runs)]
    result = {"what": __doc__.splitlines()[0], "command": f"python -m benchmarks.cost_ceiling --name {args.name} "
              f"--runs \"{args.runs}\"", "runs": runs,
              **{f"{rule}_vs_target": compare(runs, rule, "target") for rule in rules[1:]},
              **{f"{rule}_vs_baseline": compare(runs, rule, "baseline") for rule in rules}}
    if args.fractions:
        result["command"] += f" --fractions {args.fractions}"
    full = float(np.mean([r["full_image_gmacs"] for r in runs]))
    result["summary"] = {rule: {"top1": result[f"{rule}_vs_baseline"]["ours"],
                                "gmacs": float(np.mean([r[rule]["gmacs"] for r in runs])),
                                "val_gmacs": float(np.mean([r[rule]["val_gmacs"] for r in runs])),
                                "share_of_full_image": float(np.mean([r[rule]["gmacs"] for r in runs])) / full}
                         for rule in rules}
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / f"{args.name}.json", json.dumps(result, indent=1) + "\n")
    print(f"| {args.name} ({runs[0]['photos']} x {len(runs)}) | top-1 | GMACs (share of the full-image model) | "
          "val GMACs | vs the full-image model [95% CI] (gained / lost) |")
    print("|---|---|---|---|---|")
    for name in rules:
        c = result[f"{name}_vs_baseline"]
        gmacs = float(np.mean([r[name]["gmacs"] for r in runs]))
        print(f"| {name} | {c['ours']:.4f} | {gmacs:.3f} ({gmacs / full:.0%}) | "
              f"{np.mean([r[name]['val_gmacs'] for r in runs]):.3f} | {c['difference_points']:+.2f} "
              f"[{c['ci95_points'][0]:+.2f}, {c['ci95_points'][1]:+.2f}] ({c['gained']} / {c['lost']}) |")
    print(f"| full-image model | {result['target_vs_baseline']['theirs']:.4f} | {full:.3f} (100%) | | |")
    for rule in rules[1:]:
        c = result[f"{rule}_vs_target"]
        print(f"{rule} - target: {c['difference_points']:+.2f} [{c['ci95_points'][0]:+.2f}, "
              f"{c['ci95_points'][1]:+.2f}] points ({c['gained']} gained, {c['lost']} lost)")
    print(f"wrote {OUT / f'{args.name}.json'}")


if __name__ == "__main__":
    main()
