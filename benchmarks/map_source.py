"""Which decode the symptom map shrinks (issues 25 and 28): the glance's reduced decode, where it is large enough,
against the cascade's larger decode (the rule before), on the same model file, photos and run.

    python -m benchmarks.map_source --model RUN/model.pt --coffee ../shared/data/coffee_bracol \
        [--ibean ../shared/data/ibean/train --ibean-photos 120] [--rounds 3] [--precision float32] [--out FILE]

Each photo is decoded once as `predict` and `evaluate` decode it (the cascade's size, plus the glance's reduced
decode where that is another one); the cascade then runs twice per round on the same items, rounds interleaved:
as the package does now, and with the items' glance decode dropped, so the map shrinks the cascade's decode as
it did before. Reported per photo set: the severity each way (largest and mean change of the share, severity
classes changed, Lin's concordance and mean absolute error against the BRACOL masks, class accuracy against
BRACOL's severity classes), whether any diagnosis or exit changed, and the "symptom map" part of the model time
(best round). Writes benchmarks/results/severity/map_source.json, with the CPU model and flags.
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
OUT = REPO / "benchmarks" / "results" / "severity" / "map_source.json"
RULES = ("glance decode", "cascade decode")


def _sets_and_truth(coffee: Path) -> tuple[dict[str, list[Path]], tuple[dict[str, float], dict[str, int]]]:
    """The official high-res validation and test leaves (BRACOL's split, as ``symptom_map.splits`` reads it), and
    per leaf id the masks' symptom share (percent) and BRACOL's severity class."""
    from benchmarks.symptom_map import splits

    highres, leaf = splits(coffee)
    sets = {f"highres_{split}": [coffee / "highres" / r["path"] for r in highres if r["split"] == split]
            for split in ("val", "test")}
    with open(coffee / "lesion_masks" / "lesion_masks.csv", newline="") as handle:
        shares = {r["id"]: 100 * float(r["symptom_fraction_of_leaf"]) for r in csv.DictReader(handle)}
    return sets, (shares, {leaf_id: int(r["severity"]) for leaf_id, r in leaf.items()})


def _run(predictor, items: list[dict], batch: int) -> tuple[list, float]:
    """The cascade's predictions on ``items`` and the seconds of its "symptom map" part."""
    from agripatch.pipeline.timing import PartTimes

    times = PartTimes()
    predictor.profile(times)
    results = []
    for start in range(0, len(items), batch):
        results.extend(predictor.run(items[start:start + batch]))
    predictor.profile(None)
    return results, float(times.seconds.get("symptom map", 0.0))


def measure_set(predictor, name: str, photos: list[Path], rounds: int, batch: int,
                truth: tuple[dict[str, float], dict[str, int]] | None) -> dict:
    """Both rules on one photo set (see the module docstring)."""
    import numpy as np

    from agripatch.engine.severity import lins_ccc, mean_absolute_error

    items = [predictor.item(p, i) for i, p in enumerate(photos)]
    variants = {RULES[0]: items, RULES[1]: [{k: v for k, v in item.items() if k != "reduced"} for item in items]}
    seconds: dict[str, list[float]] = {rule: [] for rule in RULES}
    results: dict[str, list] = {}
    for _ in range(rounds):
        for rule in RULES:
            results[rule], took = _run(predictor, variants[rule], batch)
            seconds[rule].append(took)
    share = {rule: np.array([r.severity.share for r in results[rule]]) for rule in RULES}
    klass = {rule: np.array([r.severity.index for r in results[rule]]) for rule in RULES}
    answers = {rule: [(int(r.label), int(r.stage)) for r in results[rule]] for rule in RULES}
    out = {"photos": len(photos), "kept_glance_decode": sum("reduced" in item for item in items),
           "map_ms_per_photo": {rule: 1e3 * min(s) / len(photos) for rule, s in seconds.items()},
           "map_seconds": seconds,
           "share_change_max": float(np.abs(share[RULES[0]] - share[RULES[1]]).max()),
           "share_change_mean": float(np.abs(share[RULES[0]] - share[RULES[1]]).mean()),
           "classes_changed": int((klass[RULES[0]] != klass[RULES[1]]).sum()),
           "answers_or_exits_changed": sum(a != b for a, b in zip(answers[RULES[0]], answers[RULES[1]])),
           "shares": {rule: share[rule].round(4).tolist() for rule in RULES},
           "paths": [str(p) for p in photos]}
    if truth is not None:
        masks, classes = truth
        ids = [p.stem for p in photos]
        with_mask = [i for i, leaf in enumerate(ids) if leaf in masks]
        mask_share = np.array([masks[ids[i]] for i in with_mask])
        with_class = [i for i, leaf in enumerate(ids) if leaf in classes]
        true_class = np.array([classes[ids[i]] for i in with_class])
        out["against_masks"] = {rule: {"leaves": len(with_mask), "ccc": lins_ccc(mask_share, share[rule][with_mask]),
                                       "mae": mean_absolute_error(mask_share, share[rule][with_mask])}
                                for rule in RULES}
        out["severity_class_accuracy"] = {rule: {"leaves": len(with_class),
                                                 "accuracy": float((klass[rule][with_class] == true_class).mean())}
                                          for rule in RULES}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="a model file that measures severity")
    parser.add_argument("--coffee", type=Path, default=REPO.parent / "shared" / "data" / "coffee_bracol")
    parser.add_argument("--ibean", type=Path, default=None, help="also time iBean photos (no severity truth)")
    parser.add_argument("--ibean-photos", type=int, default=120)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=None, help="photos per call (default: predict's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=("auto", "float32", "bfloat16"))
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    import torch

    from agripatch.pipeline.config import PREDICT_BATCH_SIZE
    from agripatch.predict.predictor import Predictor

    torch.set_num_threads(args.threads)
    predictor = Predictor.from_file(args.model, device="cpu", severity=True, precision=args.precision)
    batch = args.batch or PREDICT_BATCH_SIZE
    sets, truth = _sets_and_truth(args.coffee)
    if args.ibean is not None:
        every = sorted(args.ibean.rglob("*.jpg"))
        sets["ibean"] = every[::max(1, len(every) // args.ibean_photos)][:args.ibean_photos]  # all classes
    report = {"model": str(args.model), "precision": predictor.precision, "rounds": args.rounds, "batch": batch,
              "threads": torch.get_num_threads(), "cpu": cpu_description(), "sets": {}}
    for name, photos in sets.items():
        report["sets"][name] = measure_set(predictor, name, photos, args.rounds, batch,
                                           None if name == "ibean" else truth)
        r = report["sets"][name]
        line = (f"{name}: {r['photos']} photos, glance decode kept for {r['kept_glance_decode']}; map ms/photo "
                + " / ".join(f"{rule} {ms:.3f}" for rule, ms in r["map_ms_per_photo"].items())
                + f"; share change max {r['share_change_max']:.3f} mean {r['share_change_mean']:.3f}; classes changed "
                f"{r['classes_changed']}; answers or exits changed {r['answers_or_exits_changed']}")
        if "against_masks" in r:
            line += "; " + "; ".join(f"{rule}: CCC {m['ccc']:.4f} MAE {m['mae']:.3f} class "
                                     f"{r['severity_class_accuracy'][rule]['accuracy']:.4f}"
                                     for rule, m in r["against_masks"].items())
        print(line, flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
