"""Is a symptom map trained at the side it reads better than the shipped one read at that side? Paired over the
285 BRACOL ``leaf/`` test leaves (and the seeds), from stored results only.

    python -m benchmarks.symptom_map --side 160 --seeds 0,1,2     # first: maps trained at 160 (and 224, 320)
    python -m benchmarks.symptom_map_sides                        # then: this comparison

Each side-trained seed's severity classes come from its own cut-points, fitted on its predicted shares of the
``leaf/`` train leaves (``results/symptom_map/side<S>/seed<N>.json``). The shipped map (trained at 512, seed 0) is
scored by ``severity_side.py`` with cut-points fitted the same way at each side (``results/severity/side.json``).
Every seed is paired with the shipped map on the same leaves (:func:`agripatch.engine.stats.paired_comparison`).
Writes ``results/symptom_map/side_trained_vs_shipped.json`` and prints a table.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
LEAF = REPO.parent / "shared" / "data" / "coffee_bracol" / "leaf"


def side_correct(side: int, leaf_ids: list[str]) -> tuple[np.ndarray, list[int]]:
    """[seeds, leaves] right or wrong for the maps trained at ``side``, in ``leaf_ids`` order, and their seeds."""
    return folder_correct(RESULTS / "symptom_map" / f"side{side}", leaf_ids)


def folder_correct(folder: Path, leaf_ids: list[str]) -> tuple[np.ndarray, list[int]]:
    """[seeds, leaves] right or wrong for the maps whose ``symptom_map.py`` seed files are in ``folder`` (each with
    cut-points fitted on its own predicted shares of the train leaves), in ``leaf_ids`` order, and their seeds."""
    from agripatch.engine.severity import fit_bins

    rows, seeds = [], []
    for path in sorted(folder.glob("seed*.json")):
        record = json.loads(path.read_text())
        bins = fit_bins(record["leaf_train"]["pred_share"], record["leaf_train"]["severity"], source="train leaves")
        test = record["leaf_test"]
        right = np.asarray(bins.classify(np.asarray(test["pred_share"]))) == np.asarray(test["severity"])
        by_id = dict(zip(test["ids"], right))
        rows.append([bool(by_id[i]) for i in leaf_ids])
        seeds.append(int(record["seed"]))
    return np.array(rows, dtype=bool), seeds


def main() -> None:
    """Compare every stored side-trained map with the shipped map at 320 and at its own side."""
    from agripatch.engine.stats import paired_comparison

    with open(LEAF / "severity.csv", newline="") as handle:  # severity_side.py's order of the test leaves
        leaf_ids = [Path(r["path"]).stem for r in csv.DictReader(handle) if r["split"].strip() == "test"]
    shipped = {r["side"]: np.asarray(r["fitted"]["correct"], bool)
               for r in json.loads((RESULTS / "severity" / "side.json").read_text())["sides"]}
    out: dict = {"what": __doc__.splitlines()[0]}
    print("| trained at | seeds | test class (per seed) | against shipped at 320 [95% CI] | against shipped at the "
          "same side [95% CI] |")
    print("|---|---|---|---|---|")
    for side in sorted((int(p.name[4:]) for p in (RESULTS / "symptom_map").glob("side*") if p.is_dir()),
                       reverse=True):
        ours, seeds = side_correct(side, leaf_ids)
        row = {"seeds": seeds, "accuracy": float(ours.mean()), "per_seed": ours.mean(axis=1).tolist()}
        cells = []
        for ref in (320, side):
            c = paired_comparison(ours, np.broadcast_to(shipped[ref], ours.shape))
            row[f"vs_shipped_{ref}"] = {"shipped": float(shipped[ref].mean()), "difference": c.difference,
                                        "ci95": [c.ci_low, c.ci_high]}
            cells.append(f"{100 * c.difference:+.2f} [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}]")
        out[f"side{side}"] = row
        per_seed = " / ".join(f"{a:.4f}" for a in row["per_seed"])
        print(f"| {side} | {len(seeds)} | {row['accuracy']:.4f} ({per_seed}) | {cells[0]} | {cells[1]} |")
    path = RESULTS / "symptom_map" / "side_trained_vs_shipped.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    tmp.replace(path)


if __name__ == "__main__":
    main()
