"""Would a `not_a_leaf` threshold fitted on the validation photos *and their augmented views* spare leaves taken
another way, and still refuse what is not a leaf?

    python -m benchmarks.refusal_views --model RUN/model.pt --data ROOT --capture NAME --refusal NAME [--views 4]

The refusal's distance thresholds are fitted on the validation photos as they are (median and MAD of their log
distances). A model trained with quarter turns, flips, wider brightness and blur reads such photos right, but
their glance features lie farther from the class means than any upright validation photo's, so the `ibean`
recipe's seed-0 model refuses 6-8% of quarter-turned and 10% of over-exposed test leaves (`capture_shift.py`).
This replays the rule with thresholds refitted on each validation photo plus ``--views`` views of it made by the
recipe's own training augmentation (``augment.train``, applied to the glance-sized photo, seeded), on the stored
distances and plant shares of ``capture_shift.py`` (``--capture``) and ``refusal.py`` (``--refusal``) for the same
model: the share of each set refused as ``not_a_leaf`` with each threshold pair. Writes
``benchmarks/results/refusal_views/NAME.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from agripatch.io.atomic import atomic_write_text  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def view_distances(model_file: Path, data: Path, views: int, seed: int = 0,
                   only: list[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The refusal distances of the run's validation photos as they are [N] and of ``views`` augmented views of
    each [N * views] (the recipe's transforms, or those of them named in ``only``)."""
    import cv2
    import yaml
    import torch

    from agripatch.data.splits import read_splits_csv
    from agripatch.data.transforms import augmentation_from_spec
    from agripatch.io.glance import glance_array
    from agripatch.io.images import read_image
    from agripatch.pipeline.bundle import load_model_file

    bundle = load_model_file(model_file)
    pipeline, refusal = bundle.pipeline, bundle.refusal
    size = pipeline.config.glance_size
    spec = yaml.safe_load(bundle.meta["recipe"])["augment"].get("train")
    if only is not None and spec:
        steps = spec["transform"]["transforms"]
        spec["transform"]["transforms"] = [t for t in steps if t["__class_fullname__"] in only]
    augment = augmentation_from_spec(spec)
    rows = read_splits_csv(model_file.parent / "splits.csv")
    paths = [data / row.path for row in rows if row.split == "val"]
    if augment is not None and hasattr(augment, "set_random_seed"):
        augment.set_random_seed(seed)
    as_is, viewed = [], []
    for path in paths:
        small = cv2.resize(read_image(path, min_side=size), (size, size), interpolation=cv2.INTER_AREA)
        images = [small] + [np.ascontiguousarray(augment(image=small)["image"]) if augment is not None else small
                            for _ in range(views)]
        glances = torch.from_numpy(np.stack([glance_array(image, size) for image in images]))
        located = pipeline.locate([torch.from_numpy(image).permute(2, 0, 1) for image in images], glances)
        distances = refusal.distances(located.features)
        as_is.append(distances[:1])
        viewed.append(distances[1:])
    return np.concatenate(as_is), np.concatenate(viewed)


def main(argv: list[str] | None = None) -> None:
    """Refit and replay."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--capture", required=True, help="capture_shift.py result name for this model")
    parser.add_argument("--refusal", required=True, help="refusal.py result stem (results/refusal/) for this model")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--name", default=None)
    parser.add_argument("--only", default=None, help="comma-separated transform class names of the recipe to keep")
    args = parser.parse_args(argv)

    from agripatch.pipeline.bundle import load_model_file
    from agripatch.pipeline.refusal import DISTANCE_QUANTILE, NEAR_QUANTILE, distance_threshold

    refusal = load_model_file(args.model).refusal
    as_is, views = view_distances(args.model, args.data, args.views, only=args.only.split(",") if args.only else None)
    pooled = np.concatenate([as_is, views])
    rules = {
        "stored": (refusal.distance_threshold, refusal.near_threshold),
        "val as is": (distance_threshold(as_is, DISTANCE_QUANTILE), distance_threshold(as_is, NEAR_QUANTILE)),
        "val + views": (distance_threshold(pooled, DISTANCE_QUANTILE), distance_threshold(pooled, NEAR_QUANTILE)),
    }
    sets, shifted = {}, []
    for stem in (RESULTS / "capture_shift" / args.capture, RESULTS / "refusal" / args.refusal):
        d, s = np.load(f"{stem}.distances.npz"), np.load(f"{stem}.plant_shares.npz")
        sets.update({key: (d[key], s[key]) for key in d.files})
        if stem.parent.name == "capture_shift":
            shifted = [key for key in d.files if not key.startswith("as_taken")]
    table = {}
    for key, (d, s) in sets.items():
        table[key] = {name: float(((d > far) | ((d > min(near, far)) & (s < refusal.min_plant_share))).mean())
                      for name, (far, near) in rules.items()}
    result = {"model": str(args.model), "views": args.views, "only": args.only,
              "shifted_sets_mean": {name: float(np.mean([table[k][name] for k in shifted])) for name in rules}, "val_photos": int(len(as_is)),
              "thresholds": {k: list(v) for k, v in rules.items()},
              "val_views_beyond_stored_far": float((views > refusal.distance_threshold).mean()),
              "refused_not_a_leaf": table}
    print(f"{len(as_is)} val photos, {len(views)} views; far / near thresholds: "
          + "; ".join(f"{k} {v[0]:.1f} / {v[1]:.1f}" for k, v in rules.items()))
    print(f"views beyond the stored far threshold: {result['val_views_beyond_stored_far']:.3f}; shifted sets, mean "
          "refused: " + ", ".join(f"{k} {v:.4f}" for k, v in result["shifted_sets_mean"].items()))
    print("| set | " + " | ".join(rules) + " |\n|---|" + "---|" * len(rules))
    for key, row in table.items():
        print(f"| {key} | " + " | ".join(f"{v:.3f}" for v in row.values()) + " |")
    out = RESULTS / "refusal_views" / f"{args.name or args.capture}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
