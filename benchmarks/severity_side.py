"""At what size must the shipped symptom map read a leaf? Severity-class accuracy on the BRACOL `leaf/` test split
against the map's cost, per long side (issue 25: the map must cost at most a fifth of the cascade).

    python -m benchmarks.severity_side --sides 512,384,256

For each side, every `leaf/` photo is read exactly as the cascade reads it (:func:`agripatch.io.glance.shrink_array`
to :func:`agripatch.pipeline.severity.map_hw`, the shipped network, :func:`agripatch.pipeline.severity.read_severity`).
Cut-points are fitted on the 1,192 TRAIN leaves' predicted shares at that side (never on test leaves); the shipped
cuts (fitted at 512) are scored too. The side a recipe uses is chosen on the 208 VALIDATION leaves (the smallest
side within one point of 512 there); the test leaves then report it. Writes benchmarks/results/severity/side.json,
keeping the rows of sides it did not measure this time (each row names the CPU it was measured on). With
``--highres`` it adds, to the stored sides, the share's concordance and absolute error on the 49 high-res test
leaves against their masks.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from benchmarks.machine import cpu_description

REPO = Path(__file__).resolve().parents[1]
LEAF = REPO.parent / "shared" / "data" / "coffee_bracol" / "leaf"
OUT = REPO / "benchmarks" / "results" / "severity"


def shares_at(side: int, paths: list[Path], batch: int = 32) -> tuple[list[float], int]:
    """Each photo's predicted symptom share at ``side``, and the map's MACs on the first photo."""
    from agripatch.pipeline.cascade import SymptomReader
    from agripatch.pipeline.severity import SeverityConfig, read_severity

    reader = SymptomReader.shipped("symptom_map_lite0_s8")
    config = reader.severity_config(SeverityConfig(side=side))
    severities = [read_severity(logits, config) for logits in map_logits_at(side, paths, batch, reader)]
    return [s.share for s in severities], (severities[0].macs if severities else 0)


def map_logits_at(side: int, paths: list[Path], batch: int = 32, reader=None) -> list:
    """The shipped map's logits [3, gh, gw] of each photo, read exactly as the cascade reads it at ``side``
    (``reader``: the shipped map already loaded, a :class:`~agripatch.pipeline.cascade.SymptomReader`)."""
    import numpy as np
    import torch

    from agripatch.io.glance import shrink_array
    from agripatch.io.images import read_image
    from agripatch.pipeline.cascade import SymptomReader
    from agripatch.pipeline.severity import map_hw

    reader = reader or SymptomReader.shipped("symptom_map_lite0_s8")
    stride = int(reader.network.stride)
    mean, std = torch.tensor(reader.mean).view(1, 3, 1, 1), torch.tensor(reader.std).view(1, 3, 1, 1)
    out = []
    for i in range(0, len(paths), batch):
        photos = [read_image(p, min_side=side) for p in paths[i:i + batch]]
        sizes = [map_hw(*photo.shape[:2], side, stride) for photo in photos]
        for size in dict.fromkeys(sizes):
            rows = [j for j, s in enumerate(sizes) if s == size]
            x = torch.from_numpy(np.stack([shrink_array(photos[j], *size) for j in rows]))
            with torch.inference_mode():
                logits = reader.network((x - mean) / std).float().numpy()
            out += [(i + j, row) for j, row in zip(rows, logits)]
    return [logits for _, logits in sorted(out, key=lambda pair: pair[0])]


def highres_share_scores(side: int) -> dict:
    """The map's symptom share at ``side`` on the high-res TEST leaves against their masks' shares (issue 25:
    Lin's concordance >= 0.90, mean absolute error <= 2 points), with 95% intervals over leaves."""
    import numpy as np

    from agripatch.engine.severity import bootstrap_ci, lins_ccc, mean_absolute_error
    from benchmarks.symptom_map import _id, mask_share, read_mask

    root = LEAF.parent
    with open(root / "highres" / "splits.csv", newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["split"].strip() == "test"]
    truth = np.array([mask_share(read_mask(root, _id(r["path"]))) for r in rows])
    pred = np.array(shares_at(side, [root / "highres" / r["path"] for r in rows])[0])
    return {"leaves": len(rows), "ccc": lins_ccc(truth, pred), "ccc_ci95": list(bootstrap_ci(lins_ccc, truth, pred)),
            "mae": mean_absolute_error(truth, pred),
            "mae_ci95": list(bootstrap_ci(mean_absolute_error, truth, pred))}


def add_highres(sides: list[int]) -> None:
    """Add the high-res share scores to the stored rows of these sides (side.json keeps everything else)."""
    path = OUT / "side.json"
    stored = json.loads(path.read_text())
    for row in stored["sides"]:
        if row["side"] in sides:
            row["highres_test_share"] = scores = highres_share_scores(row["side"])
            print(f"side {row['side']}: high-res test leaves ({scores['leaves']}): CCC {scores['ccc']:.3f} "
                  f"{[round(v, 3) for v in scores['ccc_ci95']]}, MAE {scores['mae']:.2f} points", flush=True)
    path.write_text(json.dumps(stored, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    import numpy as np

    from agripatch.engine.severity import bootstrap_ci, fit_bins
    from agripatch.pipeline.severity import SHIPPED_CUTS, SeverityBins

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="512,384,256")
    parser.add_argument("--highres", action="store_true", help="instead: score the stored sides' shares on the "
                        "high-res test leaves against their masks (concordance, absolute error)")
    args = parser.parse_args(argv)
    if args.highres:
        add_highres([int(s) for s in args.sides.split(",")])
        return
    with open(LEAF / "severity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    split = {name: [r for r in rows if r["split"].strip() == name] for name in ("train", "val", "test")}
    results = []
    for side in (int(s) for s in args.sides.split(",")):
        shares, truth = {}, {}
        for name, part in split.items():
            shares[name], macs = shares_at(side, [LEAF / r["path"] for r in part])
            truth[name] = np.array([int(r["severity"]) for r in part])
        fitted = fit_bins(shares["train"], truth["train"], source=f"train leaves at {side}")
        row = {"side": side, "map_gmacs_512x256_leaf": macs / 1e9, "fitted_cuts": list(fitted.cuts)}
        row["val_accuracy"] = float((fitted.classify(shares["val"]) == truth["val"]).mean())
        for label, bins in (("fitted", fitted), ("shipped_cuts", SeverityBins(SHIPPED_CUTS))):
            pred = bins.classify(shares["test"])
            row[label] = {"accuracy": float((pred == truth["test"]).mean()),
                          "ci95": list(bootstrap_ci(lambda t, p: float((t == p).mean()), truth["test"], pred)),
                          "correct": (pred == truth["test"]).astype(int).tolist()}
        results.append(row)
        print(f"side {side}: {macs / 1e9:.3f} GMACs; validation {row['val_accuracy']:.4f}; test {row['fitted']['accuracy']:.4f} "
              f"{row['fitted']['ci95']} (cuts fitted at this side), {row['shipped_cuts']['accuracy']:.4f} (shipped cuts)")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "side.json"
    cpu = cpu_description()
    kept = []
    if path.is_file():
        stored = json.loads(path.read_text())
        kept = [{"cpu": stored.get("cpu"), **row} if "cpu" not in row else row for row in stored["sides"]]
    measured = {row["side"] for row in results}
    rows = [row for row in kept if row["side"] not in measured] + [{"cpu": cpu, **row} for row in results]
    path.write_text(json.dumps({"test_leaves": len(split["test"]), "train_leaves": len(split["train"]),
                                "cpu": cpu, "sides": sorted(rows, key=lambda r: -r["side"])}, indent=2) + "\n")

if __name__ == "__main__":
    main()
