"""Does fine-tuning a symptom map on a few masks of a new crop pay? (issue 25: "fine-tuned by --lesion-masks where a
user has some"; `agripatch/engine/symptom_tuning.py` is what `train --lesion-masks` runs with cascade.severity.)

    python -m benchmarks.symptom_tuning --counts 25,100,all

The "new crop" is coffee, and the starting map is one that never saw a coffee mask: the map trained on synthetic
leaves only (`symptom_map.py --train-on synthetic --save-weights benchmarks/work/symptom_map/synthetic`, seed 0).
It is fine-tuned, exactly as a training run would, on the first N high-res TRAIN leaves with masks (leaving out
the train leaves that are `leaf/` test leaves, as the shipped map's training did) (lesion pixels
only: value 2; the rest keeps the starting map's own leaf / background split), early-stopped on the high-res
validation leaves, at the default 320 px. BRACOL's masks also mark the leaf (0 / 1 / 2), so each cell learns its
exact fractions; ``--lesion-only`` reads them as plain lesion masks, as most users' masks are (the rest of each
cell then keeps the starting map's own leaf / background split). Scores: the share on the 49 high-res TEST leaves against their masks
(Lin's concordance, absolute error) and the severity class of the 285 `leaf/` TEST leaves (cut-points fitted on
the 1,192 train leaves' shares, as `severity_side.py`). The shipped map (trained on all the coffee train masks
with their leaf labels) is scored beside it. Writes benchmarks/results/severity/tuning.json
(``tuning_lesion_only.json`` with ``--lesion-only``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from benchmarks.machine import cpu_description

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO.parent / "shared" / "data" / "coffee_bracol"
START = REPO / "benchmarks" / "work" / "symptom_map" / "synthetic" / "symptom_map_seed0.safetensors"
OUT = REPO / "benchmarks" / "results" / "severity"
SIDE = 320


def shares(model, paths: list[Path]) -> list[float]:
    """Each photo's share as the cascade reads it at SIDE (the map's own normalisation)."""
    import torch

    from agripatch.io.glance import shrink_array
    from agripatch.io.images import read_image
    from agripatch.pipeline.cascade import SymptomReader
    from agripatch.pipeline.severity import SeverityConfig, map_hw, read_severity

    reader = SymptomReader.of_map(model)
    config = reader.severity_config(SeverityConfig(side=SIDE))
    mean, std = torch.tensor(reader.mean).view(1, 3, 1, 1), torch.tensor(reader.std).view(1, 3, 1, 1)
    out = []
    for path in paths:
        photo = read_image(path, min_side=SIDE)
        x = torch.from_numpy(shrink_array(photo, *map_hw(*photo.shape[:2], SIDE, config.stride))[None])
        with torch.inference_mode():
            out.append(read_severity(reader.network((x - mean) / std).float()[0].numpy(), config).share)
    return out


def score(model, highres_test: list[dict], leaf_rows: dict[str, list[dict]]) -> dict:
    import numpy as np

    from agripatch.engine.severity import bootstrap_ci, fit_bins, lins_ccc, mean_absolute_error
    from benchmarks.symptom_map import _id, mask_share, read_mask

    truth = np.array([mask_share(read_mask(ROOT, _id(r["path"]))) for r in highres_test])
    pred = np.array(shares(model, [ROOT / "highres" / r["path"] for r in highres_test]))
    leaf = {s: np.array(shares(model, [ROOT / "leaf" / r["path"] for r in rows])) for s, rows in leaf_rows.items()}
    classes = {s: np.array([int(r["severity"]) for r in rows]) for s, rows in leaf_rows.items()}
    bins = fit_bins(leaf["train"], classes["train"], source="train leaves")
    correct = (bins.classify(leaf["test"]) == classes["test"])
    return {"highres_ccc": lins_ccc(truth, pred), "highres_ccc_ci95": list(bootstrap_ci(lins_ccc, truth, pred)),
            "highres_mae": mean_absolute_error(truth, pred), "leaf_test_accuracy": float(correct.mean()),
            "leaf_test_correct": correct.astype(int).tolist()}


def main(argv: list[str] | None = None) -> None:
    import torch

    from agripatch.data.lesion_masks import LesionMasks
    from agripatch.engine.symptom_tuning import map_samples, tune_symptom_map
    from agripatch.models.symptom_map import create_symptom_map, shipped_symptom_map
    from agripatch.models.weight_files import load_weights

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", default="25,100,all", help="masked train leaves to tune on")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lesion-only", action="store_true", help="read the masks as plain lesion masks (ignore "
                        "their leaf level), as a user's binary masks would be: the starting map splits the rest")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    with open(ROOT / "highres" / "splits.csv", newline="") as handle:
        highres = list(csv.DictReader(handle))
    with open(ROOT / "leaf" / "severity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    leaf_rows = {s: [r for r in rows if r["split"].strip() == s] for s in ("train", "test")}
    test = [r for r in highres if r["split"].strip() == "test"]
    start = create_symptom_map("symptom_map_lite0_s8")
    start.load_state_dict(load_weights(START))
    start.eval()
    masks = LesionMasks(ROOT / "lesion_masks", min_value=2)
    if args.lesion_only:
        masks.read_levels = lambda rel, height, width: None  # as if the masks did not mark the leaf
    leaf_test = {Path(r["path"]).stem for r in leaf_rows["test"]}  # the same leaves, cropped: never tune on them
    train_rels = [r["path"] for r in highres if r["split"].strip() == "train" and Path(r["path"]).stem not in leaf_test]
    val = map_samples(ROOT / "highres", [r["path"] for r in highres if r["split"].strip() == "val"], masks, SIDE, start)
    results = {"shipped map (all coffee train masks, leaf labels too)": score(shipped_symptom_map(), test, leaf_rows),
               "synthetic-only map, not tuned": score(start, test, leaf_rows)}
    for name, result in results.items():
        print(f"{name}: CCC {result['highres_ccc']:.3f}, MAE {result['highres_mae']:.2f}, leaf/ test class "
              f"{result['leaf_test_accuracy']:.4f}", flush=True)
    for count in args.counts.split(","):
        chosen = train_rels if count == "all" else train_rels[:int(count)]
        began = time.perf_counter()
        train = map_samples(ROOT / "highres", chosen, masks, SIDE, start)
        with tempfile.TemporaryDirectory() as work:
            tuned = tune_symptom_map("symptom_map_lite0_s8", SIDE, train, val, epochs=args.epochs, lr=args.lr,
                                     seed=0, checkpoint=Path(work) / "map.pt", start=start, log=print)
        name = f"synthetic-only map tuned on {len(train)} masked coffee leaves"
        results[name] = {**score(tuned, test, leaf_rows), "tune_minutes": (time.perf_counter() - began) / 60}
        r = results[name]
        print(f"{name}: CCC {r['highres_ccc']:.3f}, MAE {r['highres_mae']:.2f}, leaf/ test class "
              f"{r['leaf_test_accuracy']:.4f} ({r['tune_minutes']:.1f} min)", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    name = "tuning_lesion_only.json" if args.lesion_only else "tuning.json"
    (OUT / name).write_text(json.dumps({"cpu": cpu_description(), "side": SIDE, "epochs": args.epochs, "lr": args.lr,
                                        "lesion_only": args.lesion_only, "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
