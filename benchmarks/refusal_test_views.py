"""Would judging `not_a_leaf` on the nearest of a photo's turned and flipped glances spare leaves taken another way,
and still refuse what is not a leaf?

    python -m benchmarks.refusal_test_views --model RUN/model.pt --data ROOT [--split test] [--name NAME]

A model trained with quarter turns and flips (the `ibean` recipe) reads turned leaves right, but the refusal's class
means and thresholds come from upright photos, so it refuses 6-8% of quarter-turned test leaves
(`capture_shift.py`). Square photos cannot be turned back by the orientation rule. This replays the rule with each
photo's distance taken as the smallest over the glance's views the recipe trains on (quarter turns with
``RandomRotate90``, flips with ``HorizontalFlip`` / ``VerticalFlip``), thresholds unchanged, on `capture_shift.py`'s
shifted test leaves (made again) and `refusal.py`'s non-leaf and other-crop sets. Writes
``benchmarks/results/refusal_views/NAME_test_views.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from agripatch.io.atomic import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "refusal_views"
#: The plant share above which the last variant judges a photo on its nearest view (a leafy photo).
LEAFY = 0.3


def recipe_views(recipe_text: str) -> list[tuple[int, bool]]:
    """(quarter turns, mirrored) of every dihedral view the recipe's training augmentation makes."""
    import yaml

    spec = (yaml.safe_load(recipe_text).get("augment") or {}).get("train") or {}
    names = {t.get("__class_fullname__") for t in (spec.get("transform") or {}).get("transforms", [])}
    turns = [0, 1, 2, 3] if "RandomRotate90" in names else ([0, 2] if {"HorizontalFlip", "VerticalFlip"} <= names else [0])
    mirrors = [False, True] if names & {"HorizontalFlip", "VerticalFlip"} else [False]
    return [(k, m) for k in turns for m in mirrors]


def view_features(predictor, sources, views) -> tuple[list[np.ndarray], np.ndarray]:
    """Glance features [N, D] of the readable photos in each view, and their plant shares [N]."""
    import torch

    out, shares = [[] for _ in views], []
    for start in range(0, len(sources), 32):
        items = [predictor.item(s, i) for i, s in enumerate(sources[start:start + 32])]
        items = [item for item in items if item["image"] is not None]
        glances = torch.stack([item["glance"] for item in items])
        for v, (turns, mirrored) in enumerate(views):
            g = torch.rot90(glances, k=-turns, dims=(2, 3))
            g = torch.flip(g, dims=(3,)) if mirrored else g
            located = predictor.pipeline.locate([item["image"] for item in items], g.contiguous())
            out[v].append(located.features)
            if v == 0:
                shares.append(np.asarray(located.plant_share, float))
    return [np.concatenate(f) for f in out], np.concatenate(shares)


def view_distances(predictor, sources, views) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per photo: the distance as it is, the smallest over ``views``, and its plant share."""
    import torch

    as_is, nearest, shares = [], [], []
    for start in range(0, len(sources), 32):
        items = [predictor.item(s, i) for i, s in enumerate(sources[start:start + 32])]
        items = [item for item in items if item["image"] is not None]
        results = predictor.run(items)
        glances = torch.stack([item["glance"] for item in items])
        per_view = []
        for turns, mirrored in views:
            g = torch.rot90(glances, k=-turns, dims=(2, 3))
            g = torch.flip(g, dims=(3,)) if mirrored else g
            located = predictor.pipeline.locate([item["image"] for item in items], g.contiguous())
            per_view.append(predictor.refusal.distances(located.features))
        as_is.append(predictor.refusal.distances(np.stack([r.features for r in results])))
        nearest.append(np.min(per_view, axis=0))
        shares.append(np.array([r.plant_share for r in results], float))
    return np.concatenate(as_is), np.concatenate(nearest), np.concatenate(shares)


def main(argv: list[str] | None = None) -> None:
    """Score every set both ways and report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--name", default=None)
    parser.add_argument("--turns-only", action="store_true", help="quarter turns only, no mirrored views")
    args = parser.parse_args(argv)

    from agripatch.data.splits import read_splits_csv
    from agripatch.predict.predictor import Predictor
    from benchmarks.capture_shift import SHIFTS, shifted_files
    from benchmarks.refusal import SHARED, leafless_crops, random_crops, sample_images, synthetic_scenes

    predictor = Predictor.from_file(args.model, device="cpu")
    refusal = predictor.refusal
    from agripatch.pipeline.bundle import load_model_file

    views = recipe_views(load_model_file(args.model).meta["recipe"])
    if args.turns_only:
        views = [view for view in views if not view[1]]
    rows = [row for row in read_splits_csv(args.data / "splits.csv") if row.split == args.split]
    paths = [args.data / row.path for row in rows]
    from agripatch.pipeline.refusal import DISTANCE_QUANTILE, NEAR_QUANTILE, distance_threshold

    val = [args.data / row.path for row in read_splits_csv(args.model.parent / "splits.csv") if row.split == "val"]
    val_as_is, val_nearest, _ = view_distances(predictor, val, views)
    refit = (distance_threshold(val_nearest, DISTANCE_QUANTILE), distance_threshold(val_nearest, NEAR_QUANTILE))
    stored = (refusal.distance_threshold, refusal.near_threshold)
    result = {"model": str(args.model), "views": views, "val_photos": len(val), "stored_far_near": list(stored),
              "refit_far_near": list(refit), "val_as_is_far_check": distance_threshold(val_as_is, DISTANCE_QUANTILE),
              "sets": {}}

    from agripatch.pipeline.refusal import Refusal, feature_model

    train_rows = [row for row in read_splits_csv(args.model.parent / "splits.csv") if row.split == "train"]
    classes = predictor.classes
    train_feats, _ = view_features(predictor, [args.data / row.path for row in train_rows], views)
    train_labels = np.array([classes.index(row.label) for row in train_rows])
    model_all = feature_model(np.concatenate(train_feats), np.tile(train_labels, len(views)),
                              ridge=refusal.fitted.get("ridge") or 0.5)
    val_feats, _ = view_features(predictor, val, views)
    all_views = Refusal(model_all.class_means, model_all.precision, 0.0, 0.0)
    val_d = all_views.distances(val_feats[0])
    all_views.distance_threshold = distance_threshold(val_d, DISTANCE_QUANTILE)
    all_views.near_threshold = min(distance_threshold(val_d, NEAR_QUANTILE), all_views.distance_threshold)
    result["views_means_far_near"] = [all_views.distance_threshold, all_views.near_threshold]

    def score(name: str, sources) -> None:
        as_is, nearest, shares = view_distances(predictor, list(sources), views)
        feats, shares_again = view_features(predictor, list(sources), views[:1])
        d_all = all_views.distances(feats[0])
        means_rule = (d_all > all_views.distance_threshold) | ((d_all > all_views.near_threshold)
                                                              & (shares < refusal.min_plant_share))
        rule = {label: ((d > far) | ((d > min(near, far)) & (shares < refusal.min_plant_share)))
                for label, d, (far, near) in (("as_is", as_is, stored), ("nearest_view", nearest, stored),
                                              ("nearest_view_refit", nearest, refit),
                                              ("nearest_view_leafy", np.where(shares >= LEAFY, nearest, as_is), stored))}
        rule["means_of_every_view"] = means_rule
        entry = {"photos": int(len(as_is)), **{k: float(v.mean()) for k, v in rule.items()}}
        result["sets"][name] = entry
        print(f"| {name} | {entry['photos']} | {entry['as_is']:.3f} | {entry['nearest_view']:.3f} | "
              f"{entry['nearest_view_refit']:.3f} | {entry['nearest_view_leafy']:.3f} | "
              f"{entry['means_of_every_view']:.3f} |", flush=True)

    print(f"views {views}; far / near thresholds stored {stored[0]:.1f} / {stored[1]:.1f} (val as is gives "
          f"{result['val_as_is_far_check']:.1f}), refitted on the val photos' nearest views {refit[0]:.1f} / {refit[1]:.1f}")
    print("| set | photos | not_a_leaf as is | on the nearest view | nearest view, thresholds refitted | nearest view "
          f"when >= {LEAFY:.0%} plant pixels | class means of every view |\n|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (change, quality)) in enumerate(SHIFTS.items()):
            score(name, shifted_files(paths, Path(tmp) / str(i), change, quality))
    score("non-leaf: sample photos", sample_images())
    score("non-leaf: their random crops", random_crops(sample_images()))
    score("non-leaf: leafless crops of test photos", leafless_crops(paths))
    score("non-leaf: synthetic soil/hand scenes", synthetic_scenes())
    for name, rel in (("other crop: PlantVillage-mini", "plantvillage_mini"), ("other crop: coffee leaves", "coffee_bracol/leaf")):
        if (SHARED / rel).is_dir():
            score(name, sorted((SHARED / rel).glob("*/*.jpg"))[::2])
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.name or args.model.parent.name}_test_views.json", json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
