"""Several stresses on one leaf: which findings threshold names them best? (issue 25 item 4)

    python -m benchmarks.findings                    # coffee leaf, the protocol's 3 seeds

A threshold is chosen on the VALIDATION leaves (the best mean macro F1 over stresses among the candidates) and then
scored on the test leaves, beside naming the top class alone, with BRACOL's per-leaf stress flags
(``leaf/severity.csv``). Reads the cascades' every-exit outputs that `benchmarks.symptom_prior` keeps (evaluated
once, cached), replays their exits with each model's own thresholds, and scores with the same
:func:`agripatch.engine.findings.findings_report` that `evaluate` uses. Writes
benchmarks/results/findings/summary.json and prints a table.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from benchmarks.symptom_prior import REPO, RUNS, WORK, evaluate

OUT = REPO / "benchmarks" / "results" / "findings"
CANDIDATES = (0.1, 0.2, 0.3, 0.4, 0.5)


def answer_probs(folder: Path):
    """Each photo's probabilities at the exit it took (the model's own thresholds), its path, and the classes."""
    import numpy as np

    from agripatch.pipeline.exits import answer_probabilities, simulate_exits

    arrays = np.load(folder / "stage_probs.npz")
    summary = json.loads((folder / "summary.json").read_text())
    _, stage, _ = simulate_exits(arrays["probs"], arrays["stage_macs"], summary["thresholds"])
    with open(folder / "predictions.csv", newline="") as handle:
        paths = [row["path"] for row in csv.DictReader(handle)]
    return answer_probabilities(arrays["probs"], stage), paths, summary["classes"]


def main() -> None:
    import numpy as np

    from agripatch.engine.findings import findings_report, read_stress_flags

    data, pattern = RUNS["coffee_leaf"]
    reports: dict[str, dict] = {}
    for split in ("val", "test"):
        for seed in (0, 1, 2):
            folder = WORK / f"coffee_leaf_s{seed}_{split}_trained"
            evaluate(REPO / pattern.format(seed), data, split, "trained", folder)
            probs, paths, classes = answer_probs(folder)
            flags = read_stress_flags(data / "severity.csv", classes, ["healthy"])
            for t in CANDIDATES:
                reports[f"{split}/{seed}/{t}"] = findings_report(probs, paths, classes, t, ["healthy"], flags)

    def mean(split: str, t: float, key: str, which: str = "findings") -> float:
        return float(np.mean([reports[f"{split}/{s}/{t}"][which][key] for s in (0, 1, 2)]))

    chosen = max(CANDIDATES, key=lambda t: mean("val", t, "macro_f1"))
    print("| threshold | val macro F1 | val exact | test macro F1 | test exact |")
    print("|---|---|---|---|---|")
    for t in CANDIDATES:
        print(f"| {t}{' (chosen)' if t == chosen else ''} | {mean('val', t, 'macro_f1'):.3f} | "
              f"{mean('val', t, 'exact'):.3f} | {mean('test', t, 'macro_f1'):.3f} | {mean('test', t, 'exact'):.3f} |")
    print(f"| top class alone | {mean('val', chosen, 'macro_f1', 'top_class_only'):.3f} | "
          f"{mean('val', chosen, 'exact', 'top_class_only'):.3f} | "
          f"{mean('test', chosen, 'macro_f1', 'top_class_only'):.3f} | {mean('test', chosen, 'exact', 'top_class_only'):.3f} |")
    per_stress = {stress: {key: float(np.mean([reports[f"test/{s}/{chosen}"]["findings"]["per_stress"][stress][key]
                                               for s in (0, 1, 2)])) for key in ("precision", "recall")}
                  for stress in reports[f"test/0/{chosen}"]["findings"]["per_stress"]}
    top_stress = {stress: {key: float(np.mean([reports[f"test/{s}/{chosen}"]["top_class_only"]["per_stress"][stress][key]
                                               for s in (0, 1, 2)])) for key in ("precision", "recall")}
                  for stress in per_stress}
    for stress in per_stress:
        print(f"  test {stress}: precision {per_stress[stress]['precision']:.3f} recall "
              f"{per_stress[stress]['recall']:.3f} (top class alone {top_stress[stress]['precision']:.3f} / "
              f"{top_stress[stress]['recall']:.3f})")
    OUT.mkdir(parents=True, exist_ok=True)
    table = {f"{t}": {f"{split}_{key}": mean(split, t, key) for split in ("val", "test") for key in ("macro_f1", "exact")}
             for t in CANDIDATES}
    table["top_class_only"] = {f"{split}_{key}": mean(split, chosen, key, "top_class_only")
                               for split in ("val", "test") for key in ("macro_f1", "exact")}
    (OUT / "summary.json").write_text(json.dumps({"chosen_on_val": chosen, "candidates": list(CANDIDATES),
                                                  "mean_over_seeds": table,
                                                  "test_per_stress": per_stress, "test_per_stress_top_class": top_stress,
                                                  "reports": reports}, indent=2) + "\n")


if __name__ == "__main__":
    main()
