"""Would the side-224 symptom map hold up as the `coffee` recipe's map? The recipe retrained with it, against the
recipe's current models, paired on the 285 BRACOL ``leaf/`` test leaves (issue 25; the map from
``symptom_map.py --side 224``).

    # the 3 protocol seeds; the package now ships this map at side 224 with these cuts, so the recipe as it is:
    agripatch train --recipe coffee --data benchmarks/work/protocol/coffee_leaf/data \\
        --out benchmarks/work/symptom_map/coffee224_seed<N> seed=<N> stages.baseline.enabled=false
    python -m benchmarks.coffee_map224

(They were trained before the map shipped, with the side-224 seed-0 map copied over the shipped weights and
``cascade.severity.side=224 "cascade.severity.cuts=[...]"``: the same settings.) The models they are paired with are
the recipe's previous ones (the 512-trained map read at 320, ``symptom_prior/train_coffee_seed<N>``), as
``budget_refusal.py`` evaluated them before it moved to these. Writes
benchmarks/results/symptom_map/coffee224_vs_recipe.json and prints it.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work"
DATA = REPO.parent / "shared" / "data" / "coffee_bracol" / "leaf"
OUT = REPO / "benchmarks" / "results" / "symptom_map" / "coffee224_vs_recipe.json"
#: budget_refusal.py's evaluations of the previous coffee models (its cache of "symptom_prior/train_coffee_seed{}/model.pt")
PREVIOUS = WORK / "budget_refusal" / "coffee_leaf" / "d63495f454"


def _rows(folder: Path) -> dict[str, dict]:
    with open(folder / "predictions.csv", newline="") as handle:
        return {row["path"]: row for row in csv.DictReader(handle)}


def main() -> None:
    """Evaluate each retrained seed (cached), then pair it with the current model of the same seed."""
    from agripatch.engine.stats import paired_comparison

    new, old, summaries = [], [], []
    seeds = [s for s in (0, 1, 2) if (WORK / "symptom_map" / f"coffee224_seed{s}" / "model.pt").is_file()]
    for seed in seeds:
        run, current = WORK / "symptom_map" / f"coffee224_seed{seed}", PREVIOUS / f"seed{seed}_default"
        if not (run / "eval_test" / "summary.json").is_file():
            subprocess.run([sys.executable, "-m", "agripatch", "evaluate", str(run / "model.pt"), "--data", str(DATA),
                            "--split", "test", "--out", str(run / "eval_test")], check=True, capture_output=True)
        a, b = _rows(run / "eval_test"), _rows(current)
        paths = sorted(a)
        new.append([a[p]["true"] == a[p]["predicted"] for p in paths])
        old.append([b[p]["true"] == b[p]["predicted"] for p in paths])
        summaries.append([json.loads((f / "summary.json").read_text()) for f in (run / "eval_test", current)])
    c = paired_comparison(np.array(new), np.array(old))
    out = {"seeds": seeds, "top1_new": c.accuracy_a, "top1_old": c.accuracy_b, "difference": c.difference,
           "ci95": [c.ci_low, c.ci_high], "gained": c.only_a, "lost": c.only_b}
    for key, get in (("cascade_gmacs", lambda s: s["mean_gmacs"]), ("map_gmacs", lambda s: s["severity"]["mean_gmacs"]),
                     ("ece", lambda s: s["calibration"]["ece"]), ("refused", lambda s: s["refusal"]["refused_fraction"])):
        out[f"{key}_new"] = [get(n) for n, _ in summaries]
        out[f"{key}_old"] = [get(o) for _, o in summaries]
    out["severity_new"] = [n["severity"] for n, _ in summaries]
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(OUT)
    print(json.dumps({k: v for k, v in out.items() if k != "severity_new"}, indent=1))


if __name__ == "__main__":
    main()
