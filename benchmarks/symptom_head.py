"""Could AnchorNet's own glance features stand in for the shipped symptom map? (issue 25: "reuse AnchorNet's features
where that is cheaper than a second network"; the map costs 64% of the coffee cascade's MACs.)

    python -m benchmarks.symptom_head --models "benchmarks/work/symptom_prior/train_coffee_seed{}/model.pt"

For each trained `coffee` model (one per seed), every BRACOL `leaf/` photo is read twice, as the cascade reads it:

* the glance (the square ``glance_size`` resize) through the model's AnchorNet: per-cell features, which the
  cascade computes anyway;
* the shipped symptom map at its 320-px long side: per-cell probabilities of background / leaf / symptom.

A head is then fitted on the TRAIN leaves to reproduce, for every AnchorNet cell, the shipped map's mean
probabilities over that cell's input box (distillation: no mask and no severity label, so any crop could do the
same in its own training run): a 1x1 convolution, and a 1x1 -> 64 -> 1x1 one. A leaf's share is symptom over leaf +
symptom summed over the cells, as the map's. Cut-points are fitted on the train leaves' shares (as
``severity_side.py`` does for the map) and the 285 TEST leaves are scored, paired against the map read at 320 on
the same leaves. The head's cost is its MACs on the glance grid. Writes
``benchmarks/results/severity/symptom_head.json``.
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
SPLITS = ("train", "val", "test")


def read_leaves(model_path: Path, rows_by_split: dict[str, list[dict]], side: int = 320, batch: int = 32) -> dict:
    """Per split: AnchorNet glance features [N, D, gh, gw], the shipped map's box means on the same cells
    [N, 3, gh, gw], the map's own share per leaf at ``side`` and the true severity classes."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from agripatch.data.photos import make_glance
    from agripatch.io.glance import shrink_array
    from agripatch.io.images import read_image
    from agripatch.pipeline.bundle import load_model_file
    from agripatch.pipeline.cascade import SymptomReader
    from agripatch.pipeline.inputs import normalize, to_chw
    from agripatch.pipeline.severity import SeverityConfig, map_hw, read_severity

    pipeline = load_model_file(model_path).pipeline
    anchornet, size = pipeline.anchornet, pipeline.config.glance_size
    rf = anchornet.receptive_field
    reader = SymptomReader.shipped("symptom_map_lite0_s8")
    config = reader.severity_config(SeverityConfig(side=side))
    mean, std = torch.tensor(reader.mean).view(1, 3, 1, 1), torch.tensor(reader.std).view(1, 3, 1, 1)
    data = {}
    for split, rows in rows_by_split.items():
        features, targets, shares = [], [], []
        for i in range(0, len(rows), batch):
            photos = [read_image(LEAF / r["path"], min_side=side) for r in rows[i:i + batch]]
            with torch.inference_mode():
                glance = make_glance([to_chw(photo) for photo in photos], size, "cpu")
                features.append(anchornet.forward_features(
                    normalize(glance, pipeline.anchornet_mean, pipeline.anchornet_std)).float())
                for photo in photos:
                    h, w = map_hw(*photo.shape[:2], side, config.stride)
                    logits = reader.network((torch.from_numpy(shrink_array(photo, h, w)[None]) - mean) / std).float()
                    shares.append(read_severity(logits[0].numpy(), config).share)
                    # the map's probabilities on the glance's square frame, averaged over each AnchorNet cell's box
                    frame = F.interpolate(logits.softmax(1), size=(size, size), mode="bilinear", align_corners=False)
                    targets.append(F.avg_pool2d(frame, rf.size, rf.stride)[0])
        data[split] = {"features": torch.cat(features), "targets": torch.stack(targets),
                       "map_share": np.array(shares), "truth": np.array([int(r["severity"]) for r in rows])}
    return data


def cell_share(probs):
    """Percent symptom over leaf + symptom, summed over the cells, per leaf (as ``severity_share``)."""
    symptom, leaf = probs[:, 2].sum((1, 2)), probs[:, 1].sum((1, 2))
    return (100.0 * symptom / (symptom + leaf).clamp_min(1e-6)).numpy()


def fit_head(data: dict, hidden: int, seed: int, epochs: int = 60):
    """A head distilled on the train leaves' cells; returns each split's shares and the head's MACs per cell."""
    import torch

    torch.manual_seed(seed)
    features, targets = data["train"]["features"], data["train"]["targets"]
    width = features.shape[1]
    layers = [torch.nn.Conv2d(width, 3, 1)] if not hidden else [
        torch.nn.Conv2d(width, hidden, 1), torch.nn.ReLU(), torch.nn.Conv2d(hidden, 3, 1)]
    head = torch.nn.Sequential(*layers)
    centre = features.mean((0, 2, 3), keepdim=True)
    scale = features.std((0, 2, 3), keepdim=True) + 1e-6
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3, weight_decay=1e-4)
    for _ in range(epochs):
        order = torch.randperm(len(features))
        for i in range(0, len(features), 64):
            rows = order[i:i + 64]
            log_probs = head((features[rows] - centre) / scale).log_softmax(1)
            loss = -(targets[rows] * log_probs).sum(1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        shares = {s: cell_share(head((data[s]["features"] - centre) / scale).softmax(1)) for s in SPLITS}
    macs_per_cell = width * 3 if not hidden else width * hidden + hidden * 3
    return shares, macs_per_cell


def score(shares: dict, data: dict) -> dict:
    """Cut-points fitted on the train leaves; accuracy per split and the test leaves' correctness."""
    from agripatch.engine.severity import fit_bins

    bins = fit_bins(shares["train"], data["train"]["truth"], source="train leaves")
    out = {s: float((bins.classify(shares[s]) == data[s]["truth"]).mean()) for s in SPLITS}
    out["test_correct"] = (bins.classify(shares["test"]) == data["test"]["truth"]).astype(int).tolist()
    return out


def main(argv: list[str] | None = None) -> None:
    import numpy as np
    import torch

    from agripatch.engine.stats import paired_comparison

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, help="model file per seed, '{}' for the seed")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    with open(LEAF / "severity.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    by_split = {s: [r for r in rows if r["split"].strip() == s] for s in SPLITS}
    correct: dict[str, list] = {}
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        data = read_leaves(Path(args.models.format(seed)), by_split)
        gh, gw = data["train"]["features"].shape[-2:]
        run = {"seed": seed, "model": args.models.format(seed), "cells": [int(gh), int(gw)],
               "map_320": score({s: data[s]["map_share"] for s in SPLITS}, data),
               "map_320_on_anchornet_cells": score({s: cell_share(data[s]["targets"]) for s in SPLITS}, data)}
        for hidden in (0, 64):
            shares, per_cell = fit_head(data, hidden, seed)
            run[f"head_{hidden or 'linear'}"] = {**score(shares, data), "gmacs": per_cell * gh * gw / 1e9}
        for name, result in run.items():
            if isinstance(result, dict):
                correct.setdefault(name, []).append(result.pop("test_correct"))
                print(f"seed {seed} {name:28s} train {result['train']:.4f} val {result['val']:.4f} "
                      f"test {result['test']:.4f}", flush=True)
        runs.append(run)
    summary = {}
    for name, seeds in correct.items():
        paired = paired_comparison(np.array(seeds), np.array(correct["map_320"]))
        summary[name] = {"test_accuracy": paired.accuracy_a, "vs_map_320": paired.difference,
                         "ci95": [paired.ci_low, paired.ci_high], "gained": paired.only_a, "lost": paired.only_b}
        print(f"{name:28s} test {paired.accuracy_a:.4f}  vs map@320 {100 * paired.difference:+.2f} "
              f"[{100 * paired.ci_low:+.2f}, {100 * paired.ci_high:+.2f}]")
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "symptom_head.json").write_text(json.dumps(
        {"cpu": cpu_description(), "test_leaves": len(by_split["test"]), "runs": runs, "summary": summary},
        indent=2) + "\n")


if __name__ == "__main__":
    main()
