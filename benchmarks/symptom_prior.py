"""Does ranking AnchorNet's cells by the shipped symptom map (``cascade.cell_prior="symptom"``) change the diagnosis?
The same model files, evaluated as trained and with the symptom prior switched on, on their validation and test
photos (issue 25 item 3; where the patches land is `localisation.py --priors none,leaf,symptom`).

    python -m benchmarks.symptom_prior                       # coffee leaf and iBean, the protocol's 3 seeds

The models were trained with their recipe's prior (coffee: leaf; iBean: leaf), so this measures switching the
prior at inference only. Paired over seeds and photos (:func:`agripatch.engine.stats.paired_comparison`). Writes
benchmarks/results/symptom_prior/summary.json and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from benchmarks.protocol import models_key

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work" / "symptom_prior"
OUT = REPO / "benchmarks" / "results" / "symptom_prior"
RUNS = {"coffee_leaf": (REPO.parent / "shared" / "data" / "coffee_bracol" / "leaf",
                        "benchmarks/work/protocol/coffee_leaf/runs/cascade24/seed{}/model.pt"),
        "ibean": (REPO / "benchmarks" / "work" / "protocol" / "ibean" / "data",
                  "benchmarks/work/protocol/ibean/runs/cascade24/seed{}/model.pt")}


def evaluate(model: Path, data: Path, split: str, prior: str, dest: Path) -> dict[str, bool]:
    """Correctness per photo path of ``model`` on ``split``, with its own prior or the symptom prior (cached)."""
    if not (dest / "predictions.csv").is_file():
        from agripatch.engine.evaluate import EvaluateOptions, evaluate_bundle
        from agripatch.pipeline.bundle import load_model_file

        bundle = load_model_file(model)
        bundle.pipeline = bundle.pipeline.measuring_severity(True)
        if prior == "symptom":
            bundle.pipeline.config.cell_prior = "symptom"
        evaluate_bundle(bundle, EvaluateOptions(model=model, data=data, out=dest, split=split, device="cpu"),
                        log=lambda *a: None)
    with open(dest / "predictions.csv", newline="") as handle:
        return {row["path"]: row["true"] == row["predicted"] for row in csv.DictReader(handle)}


def compare_retrained(pattern: str, seeds: list[int]) -> None:
    """Coffee models trained with the symptom prior (``pattern`` with ``{}`` for the seed) against the protocol's
    models of the same seeds trained with the leaf prior (as trained, and with the symptom prior switched on), paired
    over seeds and photos on the coffee leaf val and test photos; added to summary.json under ``retrained``, keyed
    by ``pattern`` (each set of retrained models keeps its own entry)."""
    import numpy as np

    from agripatch.engine.stats import paired_comparison

    data, protocol = RUNS["coffee_leaf"]
    work = retrained_work(pattern)
    path = OUT / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    entry = summary.setdefault("retrained", {}).setdefault(pattern, {"seeds": seeds})
    for split in ("val", "test"):
        ours = [evaluate(REPO / pattern.format(seed), data, split, "trained", work / f"s{seed}_{split}")
                for seed in seeds]
        paths = sorted(ours[0])
        for name in ("trained", "symptom"):
            other = [evaluate(REPO / protocol.format(seed), data, split, name, WORK / f"coffee_leaf_s{seed}_{split}_{name}")
                     for seed in seeds]
            result = paired_comparison(np.array([[run[p] for p in paths] for run in ours], float),
                                       np.array([[run[p] for p in paths] for run in other], float))
            entry[f"vs_{name}/{split}"] = {"photos": len(paths), **result.__dict__}
            print(f"| {split} ({len(paths)} x {len(seeds)}) | leaf prior, {'switched to the symptom prior' if name == 'symptom' else 'as trained'} "
                  f"| {result.accuracy_b:.4f} | {result.accuracy_a:.4f} | {100 * result.difference:+.2f} "
                  f"[{100 * result.ci_low:+.2f}, {100 * result.ci_high:+.2f}] | {result.only_a} / {result.only_b} |")
        costs = [json.loads((work / f"s{seed}_{split}" / "summary.json").read_text()) for seed in seeds]
        entry[split] = {"top1": [c["top1"] for c in costs],
                        "cascade_gmacs": [c["mean_gmacs"] for c in costs],
                        "symptom_map_gmacs": [c["severity"]["mean_gmacs"] for c in costs]}
    path.write_text(json.dumps(summary, indent=2) + "\n")
    write_recipe_default(pattern, seeds)


def retrained_work(pattern: str) -> Path:
    """The evaluations' cache of the models ``pattern`` names: one folder per pattern, so models retrained elsewhere
    are never read from another set's cache."""
    return WORK / ("retrained_" + models_key(pattern))


def write_recipe_default(pattern: str, seeds: list[int]) -> None:
    """The `coffee` recipe as it is now (the retrained models), per seed on the protocol's test photos, in the form
    `protocol.py --readme` reads for a recipe's default row: sorted paths, correctness, ECE, refused share and the
    GMACs a photo costs with the symptom map included (its severity pass is part of what a user runs)."""
    from benchmarks.recipe_default import read_evaluation

    per_seed = [read_evaluation(retrained_work(pattern) / f"s{seed}_test", seed) for seed in seeds]
    (OUT / "recipe_default.json").write_text(json.dumps({"dataset": "coffee_leaf", "recipe": "coffee", "models": pattern,
                                                          "per_seed": per_seed}, indent=1) + "\n")


def main(argv: list[str] | None = None) -> None:
    import numpy as np

    from agripatch.engine.stats import paired_comparison

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--retrained", help="coffee models trained with the symptom prior (the recipe as it is now), "
                        "a path with {} for the seed: compared with the protocol's models of the same --seeds")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.retrained:
        compare_retrained(args.retrained, seeds)
        return
    path = OUT / "summary.json"
    summary = json.loads(path.read_text()) if path.is_file() else {}
    shipped = json.loads((REPO / "agripatch" / "resources" / "symptom_maps" / "symptom_map_lite0_s8.json").read_text())
    print("| dataset | split | as trained | symptom prior | difference [95% CI] | photos gained / lost |")
    print("|---|---|---|---|---|---|")
    for name, (data, pattern) in RUNS.items():
        for split in ("val", "test"):
            runs = {prior: [evaluate(REPO / pattern.format(seed), data, split, prior,
                                     WORK / f"{name}_s{seed}_{split}_{'symptom' if prior == 'symptom' else 'trained'}")
                            for seed in seeds] for prior in ("trained", "symptom")}
            paths = sorted(runs["trained"][0])
            a = np.array([[run[p] for p in paths] for run in runs["symptom"]], float)
            b = np.array([[run[p] for p in paths] for run in runs["trained"]], float)
            result = paired_comparison(a, b)
            summary[f"{name}/{split}"] = {"photos": len(paths), "seeds": seeds, "map_sha256": shipped["sha256"],
                                          **result.__dict__}
            print(f"| {name} | {split} ({len(paths)} x {len(seeds)}) | {result.accuracy_b:.4f} | {result.accuracy_a:.4f} "
                  f"| {100 * result.difference:+.2f} [{100 * result.ci_low:+.2f}, {100 * result.ci_high:+.2f}] "
                  f"| {result.only_a} / {result.only_b} |")
    OUT.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
