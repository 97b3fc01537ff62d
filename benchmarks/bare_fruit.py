"""Fruit photographed without a leaf in the frame: is it refused as ``not_a_leaf`` for holding no green (issue 24)?

    python -m benchmarks.bare_fruit --models "benchmarks/work/fruit_scenes/close_rule_seed{}/model.pt" --seeds 0,1,2

The refusal's bare rule calls a photo ``not_a_leaf`` when it lies beyond the nearer distance threshold and holds
under ``min_plant_share`` plant pixels, which are green by colour. A red berry on straw mulch, black plastic or soil
has almost none. Models trained on ``fruit_scenes.py``'s close-ups (berries painted on iBean photos, two fruit
classes that training finds off-leaf) read new painted berries twice, each berry the same both times:
- ``fruit on leaves``: on iBean photos no ``fruit_scenes`` dataset of that seed and size used (as trained);
- ``fruit on mulch``: on a drawn straw, black-plastic or soil background, no leaf;
- ``fruit on mulch, capture shifts``: those under ``capture_shift.py``'s ten shifts (exposure, white balance, haze,
  saturation, JPEG, blur, half resolution, a quarter turn), as photos of other sessions;
and the non-leaf sets of ``refusal.py``. Every photo's distance, plant share and answer are kept, and two rules are
replayed on them with the model's own thresholds: the bare rule for every photo (``every class``), and the bare rule
only for photos answered with a class that is not off-leaf (``leaf classes``; a photo answered with a fruit class is
not expected to be green). Writes ``benchmarks/results/off_leaf/bare_fruit.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from benchmarks.fruit_scenes import (  # noqa: E402
    FRUIT_CLASSES, LEAF_CLASSES, MULCH, SIDE, mulch, paint_fruit, source_pools)

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "off_leaf"


def make_photos(out: Path, per_class: int, berry: tuple[float, float], dataset_per_class: int = 160,
                dataset_seed: int = 0) -> dict[str, list[Path]]:
    """``per_class`` new photos of each fruit class, on unused iBean photos and on mulch, the same berry on both
    (written once under ``out``); {set name: paths}, class in each file's name."""
    sets = {"fruit on leaves": out / "leaves", "fruit on mulch": out / "mulch"}
    if not all((folder / "done").is_file() for folder in sets.values()):
        pools, used = source_pools(np.random.default_rng(dataset_seed), dataset_per_class)
        unused = [p for i in range(used, min(len(p) for p in pools.values())) for p in
                  (pools[c][i] for c in LEAF_CLASSES)]
        if len(unused) < 2 * per_class:
            raise SystemExit(f"only {len(unused)} unused iBean photos for {2 * per_class} fruit photos")
        for folder in sets.values():
            folder.mkdir(parents=True, exist_ok=True)
        for k, fruit in enumerate(FRUIT_CLASSES):
            for i in range(per_class):
                leaf = cv2.cvtColor(cv2.imread(str(unused[2 * i + k])), cv2.COLOR_BGR2RGB)
                leaf = cv2.resize(leaf, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
                seed = 10_000 + 1_000 * k + i
                ground = mulch(np.random.default_rng(seed), MULCH[i % 3])
                for name, background in (("fruit on leaves", leaf), ("fruit on mulch", ground)):
                    painted, _, _ = paint_fruit(background, np.random.default_rng(seed), rot=fruit == "fruit_rot",
                                                berry=berry)
                    cv2.imwrite(str(sets[name] / f"{fruit}_{i:03d}.jpg"), cv2.cvtColor(painted, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, 88])
        for folder in sets.values():
            (folder / "done").write_text("")
    photos = {name: sorted(folder.glob("*.jpg")) for name, folder in sets.items()}
    photos["fruit on mulch, capture shifts"] = shifted(photos["fruit on mulch"], out / "mulch_shifted")
    return photos


def shifted(paths: list[Path], out: Path) -> list[Path]:
    """``paths`` under each of ``capture_shift.py``'s ten shifts (as other sessions' light, focus, camera and JPEG
    settings would take them), names kept, one folder a shift (written once)."""
    from benchmarks.capture_shift import SHIFTS

    files = []
    for k, (change, quality) in enumerate(v for name, v in SHIFTS.items() if name != "as taken (re-saved)"):
        folder = out / f"shift{k}"
        if not (folder / "done").is_file():
            folder.mkdir(parents=True, exist_ok=True)
            for path in paths:
                image = change(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB))
                cv2.imwrite(str(folder / path.name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
            (folder / "done").write_text("")
        files += [folder / path.name for path in paths]
    return files


def replay(refusal, off_leaf: list[int], distance, share, label) -> dict[str, np.ndarray]:
    """``not_a_leaf`` per photo under each rule (see the module docstring), from the stored quantities, by the
    package's own :meth:`~agripatch.pipeline.refusal.Refusal.not_a_leaf`."""
    return {"every class": refusal.not_a_leaf(distance, share),
            "leaf classes": refusal.not_a_leaf(distance, share, np.asarray(label, np.int64), off_leaf)}


def score_model(path: Path, photo_sets: dict[str, list]) -> dict:
    """Every set through the model's own ``predict``; per set and rule the share ``not_a_leaf`` (and of the fruit
    photos, the top-1 of those accepted)."""
    import agripatch

    model = agripatch.load(path, device="cpu")
    predictor = model._predictor
    classes, refusal = model.classes, predictor.refusal
    off_leaf = list(predictor.config.off_leaf_classes)
    result = {"model": str(path), "off_leaf_classes": [classes[c] for c in off_leaf],
              "thresholds": {"far": refusal.distance_threshold, "near": refusal.near_threshold,
                             "min_plant_share": refusal.min_plant_share, "unsure": refusal.confidence_threshold},
              "sets": {}}
    for name, photos in photo_sets.items():
        records = [r for r in model.predict(photos) if "error" not in r]
        label = np.array([classes.index(r["label"]) for r in records])
        distance = np.array([r["ood_distance"] for r in records], float)
        share = np.array([r["plant_share"] for r in records], float)
        unsure = np.array([r["decision"] == "unsure" for r in records])
        entry = {"photos": len(records), "plant_share_median": float(np.median(share)),
                 "predict_not_a_leaf": float(np.mean([r["decision"] == "not_a_leaf" for r in records])),
                 "unsure": float(unsure.mean()), "rules": {}}
        truth = None
        if name.startswith("fruit"):
            truth = np.array([classes.index(next(f for f in FRUIT_CLASSES if Path(str(r["path"])).name.startswith(f)))
                              for r in records])
            entry["top1"] = float((label == truth).mean())
            entry["correct"] = (label == truth).astype(int).tolist()
        for rule, refused in replay(refusal, off_leaf, distance, share, label).items():
            row = {"not_a_leaf": float(refused.mean()), "refused": float((refused | unsure).mean()),
                   "refused_photos": (refused | unsure).astype(int).tolist()}
            if truth is not None:
                kept = ~(refused | unsure)
                row["top1_accepted"] = float((label == truth)[kept].mean()) if kept.any() else float("nan")
            entry["rules"][rule] = row
        result["sets"][name] = entry
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", required=True, help="model file path with {} for the seed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--per-class", type=int, default=60)
    parser.add_argument("--berry", type=float, nargs=2, default=(0.2, 0.3), metavar=("LOW", "HIGH"))
    parser.add_argument("--photos", type=Path, default=REPO / "benchmarks" / "work" / "fruit_scenes" / "bare_fruit")
    parser.add_argument("--name", default="bare_fruit")
    args = parser.parse_args(argv)

    from benchmarks import refusal as nonleaf

    sets: dict[str, list] = dict(make_photos(args.photos, args.per_class, tuple(args.berry)))
    sets["non-leaf: sample photos"] = nonleaf.sample_images()
    sets["non-leaf: their random crops"] = nonleaf.random_crops(nonleaf.sample_images())
    sets["non-leaf: synthetic soil/hand scenes"] = nonleaf.synthetic_scenes()
    sets["non-leaf: mulch alone"] = [mulch(np.random.default_rng(50_000 + i), MULCH[i % 3])
                                     for i in range(60)]
    runs = {}
    for seed in args.seeds.split(","):
        runs[seed] = score_model(Path(args.models.format(seed)), sets)
    print("| set | photos x seeds | plant share (median) | not_a_leaf, bare rule for every class / leaf classes only "
          "| refused in all | top-1 of the accepted fruit |\n|---|---|---|---|---|---|")
    summary = {}
    for name in sets:
        entries = [run["sets"][name] for run in runs.values()]
        row = {"photos": sum(e["photos"] for e in entries),
               "plant_share_median": float(np.median([e["plant_share_median"] for e in entries]))}
        for rule in ("every class", "leaf classes"):
            row[rule] = {k: float(np.mean([e["rules"][rule][k] for e in entries]))
                         for k in ("not_a_leaf", "refused") + (("top1_accepted",) if "top1" in entries[0] else ())}
        summary[name] = row
        top1 = (f"{row['every class']['top1_accepted']:.4f} / {row['leaf classes']['top1_accepted']:.4f}"
                if "top1_accepted" in row["every class"] else "")
        print(f"| {name} | {row['photos']} | {row['plant_share_median']:.3f} | {row['every class']['not_a_leaf']:.3f} / "
              f"{row['leaf classes']['not_a_leaf']:.3f} | {row['every class']['refused']:.3f} / "
              f"{row['leaf classes']['refused']:.3f} | {top1} |")
    from agripatch.engine.stats import paired_comparison
    from benchmarks.machine import cpu_description

    base = len(sets["fruit on mulch"])
    for name in ("fruit on mulch", "fruit on mulch, capture shifts"):
        # refused under each rule, [seeds x shifts, berries]: the bootstrap resamples berries
        arrays = [np.array([run["sets"][name]["rules"][rule]["refused_photos"] for run in runs.values()]).reshape(-1, base)
                  for rule in ("leaf classes", "every class")]
        paired = paired_comparison(*arrays)
        summary[name]["refused_leaf_classes_minus_every_class"] = asdict(paired)
        summary[name]["refused_per_seed"] = {rule: [run["sets"][name]["rules"][rule]["refused"] for run in runs.values()]
                                             for rule in ("every class", "leaf classes")}
        print(f"{name}: refused, leaf classes only minus every class {100 * paired.difference:+.2f} "
              f"[{100 * paired.ci_low:+.2f}, {100 * paired.ci_high:+.2f}] points ({paired.only_b} photo-seeds no "
              f"longer refused, {paired.only_a} newly)")

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.name}.json").write_text(json.dumps({"summary": summary, "runs": runs, "cpu": cpu_description(),
                                                       "berry": list(args.berry)}, indent=1))
    print(OUT / f"{args.name}.json")


if __name__ == "__main__":
    main()
