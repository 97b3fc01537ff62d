"""Does the model say "not a leaf" to what is not a leaf, without refusing its own crop's photos?

    python -m benchmarks.refusal --model RUN/model.pt --data ROOT --split test

Photo sets, all run through the model's own decision (`agripatch.load(...).predict`):
- in-distribution: ``--split`` of ``--data`` (photos the refusal thresholds never saw);
- non-leaf: every sample photo scikit-image and scikit-learn ship (cat, astronaut, rocket, coffee cup,
  textures, micrographs ...), two random half-size crops of each, soil-and-hand crops cut from the
  in-distribution photos where the plant share is below 5%, and synthetic soil/pebble/hand scenes without a leaf;
- other crops (near out-of-distribution): PlantVillage-mini and coffee leaves from ../shared/data.
For each set: the share refused (not_a_leaf / unsure), the AUROC of the refusal score (feature distance)
against the in-distribution photos, beside the AUROC of the classifier's own confidence; and on the
in-distribution photos the accuracy on the accepted ones. Writes JSON (``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def sample_images() -> list[np.ndarray]:
    """Every offline sample image of scikit-image and scikit-learn as HxWx3 uint8."""
    import skimage.data
    from sklearn.datasets import load_sample_images

    names = ["astronaut", "brick", "camera", "cat", "cell", "checkerboard", "chelsea", "clock", "coffee", "coins",
             "colorwheel", "grass", "gravel", "horse", "hubble_deep_field", "immunohistochemistry", "logo",
             "microaneurysms", "moon", "page", "retina", "rocket", "shepp_logan_phantom", "text"]
    out = []
    for name in names:
        try:
            image = np.asarray(getattr(skimage.data, name)())
        except Exception:  # noqa: BLE001 - a sample that needs a download is skipped
            continue
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.dtype != np.uint8:
            image = (255 * (image - image.min()) / (np.ptp(image) + 1e-9)).astype(np.uint8)
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        out.append(np.ascontiguousarray(image[..., :3]))
    return out + [np.ascontiguousarray(i) for i in load_sample_images().images]


def random_crops(images: list[np.ndarray], per_image: int = 2, seed: int = 0) -> list[np.ndarray]:
    """Half-size random crops (seeded)."""
    rng = np.random.default_rng(seed)
    crops = []
    for image in images:
        h, w = image.shape[:2]
        side = min(h, w) // 2
        for _ in range(per_image):
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            crops.append(np.ascontiguousarray(image[y:y + side, x:x + side]))
    return crops


def leafless_crops(paths: list[Path], limit: int = 200) -> list[np.ndarray]:
    """Corner crops (40% of the side) of in-distribution photos with under 5% plant pixels: soil, hands, sky."""
    import torch

    from agripatch.io.images import read_image
    from agripatch.pipeline.priors import plant_mask

    crops = []
    for path in paths:
        image = read_image(path)
        h, w = image.shape[:2]
        side = int(0.4 * min(h, w))
        for y, x in ((0, 0), (0, w - side), (h - side, 0), (h - side, w - side)):
            crop = np.ascontiguousarray(image[y:y + side, x:x + side])
            share = float(plant_mask(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255).mean())
            if share < 0.05:
                crops.append(crop)
        if len(crops) >= limit:
            break
    return crops[:limit]


def synthetic_scenes(count: int = 60) -> list[np.ndarray]:
    """The synthetic generator's backgrounds (soil, pebbles, grass, other leaves, fingers), with no main leaf."""
    from agripatch.data.synth import _background

    return [_background(np.random.default_rng(1000 + i), 384) for i in range(count)]


def auroc(negative: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve of a score that should be higher on ``positive``."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.zeros(len(negative)), np.ones(len(positive))]
    return float(roc_auc_score(y, np.r_[negative, positive]))


def refit_distance_threshold(model, data: Path, splits_csv: Path) -> None:
    """Set the model's not_a_leaf threshold as training now would, from the run's validation photos."""
    from agripatch.data.splits import read_splits_csv
    from agripatch.pipeline.refusal import distance_threshold

    val = [data / row.path for row in read_splits_csv(splits_csv) if row.split == "val"]
    refusal = model._predictor.refusal
    old = refusal.distance_threshold
    refusal.distance_threshold = distance_threshold([r["ood_distance"] for r in model.predict(val)],
                                                    refusal.fitted.get("distance_quantile", 0.99))
    print(f"refitted the not_a_leaf threshold on {len(val)} val photos: {old:.1f} -> {refusal.distance_threshold:.1f}")


def main(argv: list[str] | None = None) -> None:
    """Score every set and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="dataset root with splits.csv")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--refit-from", type=Path, metavar="SPLITS_CSV",
                        help="a run's splits.csv: first refit the not_a_leaf threshold with this version's rule on "
                             "its val photos (for model files trained before the rule changed)")
    parser.add_argument("--orientation", choices=["any", "landscape", "portrait"], default=None,
                        help="read the model with cascade.photo_orientation set to this (a temporary copy)")
    parser.add_argument("--refusal-views", action="store_true",
                        help="read the model with refusal.view_turns set from its recipe (a temporary copy)")
    parser.add_argument("--exposure-view", action="store_true",
                        help="read the model with refusal.view_exposure metered on --data's training photos "
                             "(a temporary copy)")
    args = parser.parse_args(argv)

    import agripatch
    from agripatch.data.splits import read_splits_csv

    from benchmarks.capture_shift import with_orientation

    model = agripatch.load(with_orientation(args.model, args.orientation, args.refusal_views,
                                            args.data if args.exposure_view else None), device="cpu")
    if args.refit_from is not None:
        refit_distance_threshold(model, args.data, args.refit_from)
    rows = [row for row in read_splits_csv(args.data / "splits.csv") if row.split == args.split]
    id_paths = [args.data / row.path for row in rows]
    sets = {
        "non-leaf: sample photos": sample_images(),
        "non-leaf: their random crops": random_crops(sample_images()),
        "non-leaf: leafless crops of test photos": leafless_crops(id_paths),
        "non-leaf: synthetic soil/hand scenes": synthetic_scenes(),
    }
    for name, rel in (("other crop: PlantVillage-mini", "plantvillage_mini"), ("other crop: coffee leaves", "coffee_bracol/leaf")):
        folder = SHARED / rel
        if folder.is_dir():
            sets[name] = sorted(folder.glob("*/*.jpg"))[::2]
    results = {"model": str(args.model), "data": str(args.data), "split": args.split, "sets": {},
               "refit_from": str(args.refit_from) if args.refit_from else None}
    ref = model.predict(id_paths)
    distances = {"in-distribution": np.array([r["ood_distance"] for r in ref], float)}
    shares = {"in-distribution": np.array([r["plant_share"] for r in ref], float)}
    correct = np.array([r["label"] == row.label for r, row in zip(ref, rows)])
    accepted = np.array([r["decision"] == r["label"] for r in ref])
    id_distance = np.array([r["ood_distance"] for r in ref], float)
    id_confidence = np.array([r["confidence"] for r in ref], float)
    results["in_distribution"] = {"photos": len(ref), "refused": float(1 - accepted.mean()),
                                  "accuracy_all": float(correct.mean()),
                                  "accuracy_accepted": float(correct[accepted].mean())}
    print("| set | photos | refused | not_a_leaf | unsure | AUROC distance | AUROC -confidence |\n|---|---|---|---|---|---|---|")
    print(f"| in-distribution ({args.split}) | {len(ref)} | {1 - accepted.mean():.3f} | | | | | "
          f"accuracy all {correct.mean():.4f}, accepted {correct[accepted].mean():.4f}")
    for name, photos in sets.items():
        records = [r for r in model.predict(photos) if "error" not in r]
        decisions = [r["decision"] for r in records]
        distance = np.array([r["ood_distance"] for r in records], float)
        distances[name] = distance
        shares[name] = np.array([r["plant_share"] for r in records], float)
        confidence = np.array([r["confidence"] for r in records], float)
        entry = {"photos": len(records),
                 "refused": float(np.mean([d in ("not_a_leaf", "unsure") for d in decisions])),
                 "not_a_leaf": float(np.mean([d == "not_a_leaf" for d in decisions])),
                 "unsure": float(np.mean([d == "unsure" for d in decisions])),
                 "auroc_distance": auroc(id_distance, distance), "auroc_confidence": auroc(-id_confidence, -confidence)}
        results["sets"][name] = entry
        print(f"| {name} | {entry['photos']} | {entry['refused']:.3f} | {entry['not_a_leaf']:.3f} | {entry['unsure']:.3f} | "
              f"{entry['auroc_distance']:.3f} | {entry['auroc_confidence']:.3f} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
        # every photo's feature distance per set, so a not_a_leaf threshold rule can be replayed offline
        np.savez(args.out.with_suffix(".distances.npz"), **distances)
        np.savez(args.out.with_suffix(".plant_shares.npz"), **shares)


if __name__ == "__main__":
    main()
