"""Does refusal hold when a user buys cheaper exits? The default model files at their own exits and at ``--budget``
= 30% of the best full-image baseline's MACs (issue 24: real photos refused <= 2% at both).

    python -m benchmarks.budget_refusal                 # iBean, PlantVillage-mini, coffee leaf, coffee high-res; 3 seeds each
    python -m benchmarks.budget_refusal --datasets coffee_highres   # one dataset; the others keep their stored rows
    python -m benchmarks.budget_refusal --datasets coffee_highres_cv5   # its 5 folds (seed k tests fold k)

The model files are what each recipe gives by default, on the protocol's splits: iBean, coffee leaf and coffee
high-res as ``recipe_default.py`` trained their recipes exactly as they ship
(``benchmarks/work/recipe_default/<dataset>/seed<n>/model.pt``), PlantVillage-mini with its full-image exit
(``benchmarks/work/full_image_exit/plantvillage_mini/seed<n>/model_full_image.pt``, made by ``full_image_exit.py``). Each is scored by ``agripatch evaluate`` on its
test photos, which chose nothing, once as it is and once with ``--budget`` (the budget rule fits the exits on the
run's validation photos). Writes benchmarks/results/refusal/budget.json and prints a table: top-1, GMACs, ECE and
the share of real test photos refused (``unsure`` / ``not_a_leaf``), mean over seeds. Where 30% is below the
cheapest prediction the cascade can make (its glance alone), that row says so and the nearest possible budget is
scored instead.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from benchmarks.protocol import models_key

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work"
OUT = REPO / "benchmarks" / "results" / "refusal" / "budget.json"
#: dataset -> (test data, model file pattern, best full-image baseline's GMACs in the README's results table)
DATASETS = {
    "ibean": (WORK / "recipe_default" / "ibean" / "data", "recipe_default/ibean/seed{}/model.pt", 0.299),
    "plantvillage_mini": (WORK / "protocol" / "plantvillage_mini" / "data",
                          "full_image_exit/plantvillage_mini/seed{}/model_full_image.pt", 0.153),
    "coffee_leaf": (WORK / "recipe_default" / "coffee_leaf" / "data", "recipe_default/coffee_leaf/seed{}/model.pt", 0.391),
    "coffee_highres": (WORK / "recipe_default" / "coffee_highres" / "data",  # recipe_default.py's official runs
                       "recipe_default/coffee_highres/seed{}/model.pt", 1.565),
    # its 5-fold cross-validation: seed k's model tests fold k (SEEDS)
    "coffee_highres_cv5": (WORK / "recipe_default" / "coffee_highres_cv5" / "fold{}" / "data",
                           "recipe_default/coffee_highres_cv5/seed{}/model.pt", 1.565),
}
SHARE = 0.30
#: The seeds a dataset runs by default where not 0, 1, 2: a cross-validation's seed k tests fold k.
SEEDS = {"coffee_highres_cv5": (0, 1, 2, 3, 4)}


def work_folder(dataset: str, pattern: str) -> Path:
    """Where the evaluations of the model files ``pattern`` names are cached: one folder per pattern, so a dataset's
    newer models are never read from its older models' cache."""
    return WORK / "budget_refusal" / dataset / models_key(pattern)


def evaluate(model: Path, data: Path, dest: Path, budget: float | None) -> dict:
    """``agripatch evaluate`` on the test split (cached in ``dest``): its summary.json, or ``{"infeasible": why}``
    when the budget is below the cascade's cheapest prediction (the glance alone)."""
    if not (dest / "summary.json").is_file():
        args = ["evaluate", str(model), "--data", str(data), "--split", "test", "--out", str(dest)]
        if budget is not None:
            args += ["--budget", f"{budget:.4f}"]
        done = subprocess.run([sys.executable, "-m", "agripatch", *args], capture_output=True, text=True)
        if done.returncode != 0 and "below the cheapest" in done.stdout + done.stderr:
            return {"infeasible": " ".join((done.stdout + done.stderr).split())}
        if done.returncode != 0:
            raise SystemExit(f"agripatch {' '.join(args)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return json.loads((dest / "summary.json").read_text())


def _cheapest(refusal: dict) -> float:
    """The cheapest prediction's GMACs, read from evaluate's refusal of a budget below it."""
    return int(re.search(r"\((\d+) MACs per photo\)", refusal["infeasible"]).group(1)) / 1e9


def row(summaries: list[dict]) -> dict:
    """Mean over seeds of what the table shows."""
    if any("infeasible" in s for s in summaries):
        return {"infeasible": summaries[0]["infeasible"]}
    n = len(summaries)

    def mean(get) -> float:
        return sum(get(s) for s in summaries) / n

    photos = mean(lambda s: s["num_images"])
    return {"seeds": n, "photos": photos, "top1": mean(lambda s: s["top1"]),
            "gmacs": mean(lambda s: s["mean_gmacs"]), "ece": mean(lambda s: s["calibration"]["ece"]),
            "unsure": mean(lambda s: s["refusal"]["unsure"] / s["num_images"]),
            "not_a_leaf": mean(lambda s: s["refusal"]["not_a_leaf"] / s["num_images"]),
            "refused": mean(lambda s: s["refusal"]["refused_fraction"]),
            "severity_gmacs": mean(lambda s: (s.get("severity") or {}).get("mean_gmacs") or 0.0)}


def main(argv: list[str] | None = None) -> None:
    """Evaluate every dataset's seeds at the default and at the budget, then print and store the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default=None, help="the seeds of every dataset run (default: 0,1,2, and every "
                        "fold of a cross-validation)")
    args = parser.parse_args(argv)
    results = json.loads(OUT.read_text()) if OUT.is_file() else {}  # datasets not run this time keep their rows
    for name in args.datasets.split(","):
        data, pattern, baseline = DATASETS[name]
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(SEEDS.get(name, (0, 1, 2)))
        budget = round(SHARE * baseline, 4)
        for label, value in (("default", None), (f"budget {budget}", budget)):
            runs = []
            for seed in seeds:
                model = WORK / pattern.format(seed)
                if not model.is_file():
                    raise SystemExit(f"{model} is missing: make it first (see this module's docstring)")
                dest = work_folder(name, pattern) / f"seed{seed}_{'default' if value is None else 'budget'}"
                runs.append(evaluate(model, Path(str(data).format(seed)), dest, value))
            if label == "default":
                results[name] = {"baseline_gmacs": baseline, "models": pattern}
            results[name][label] = row(runs)
            cheapest = max((_cheapest(r) for r in runs if "infeasible" in r), default=None)
            if cheapest is not None:  # the nearest budget the cascade can keep: its glance alone, and a little
                nearest = math.ceil(cheapest * 1e4) / 1e4 + 1e-4
                runs = [evaluate(WORK / pattern.format(seed), Path(str(data).format(seed)),
                                 work_folder(name, pattern) / f"seed{seed}_nearest", nearest) for seed in seeds]
                results[name][f"budget {nearest:.4f} (nearest possible)"] = row(runs)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(OUT)
    print("| dataset (best baseline GMACs) | exits | top-1 | GMACs (share of baseline's) | ECE | refused: unsure / "
          "not_a_leaf / all |")
    print("|---|---|---|---|---|---|")
    for name, rows in results.items():
        base = rows["baseline_gmacs"]
        for label, r in rows.items():
            if label in ("baseline_gmacs", "models"):
                continue
            if "infeasible" in r:
                print(f"| {name} ({base}) | {label} | not possible: {r['infeasible']} | | | |")
                continue
            print(f"| {name} ({base}) | {label} | {r['top1']:.4f} | {r['gmacs']:.3f} ({r['gmacs'] / base:.0%}) | "
                  f"{r['ece']:.3f} | {r['unsure']:.1%} / {r['not_a_leaf']:.1%} / {r['refused']:.1%} |")


if __name__ == "__main__":
    main()
