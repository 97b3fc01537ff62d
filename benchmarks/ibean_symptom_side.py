"""Should the `ibean` recipe rank its cells by the symptom map, read small? (issue 25 item 3, at issue 24's cost)

    python -m benchmarks.ibean_symptom_side --sides 96,128,224

The `ibean` recipe ranks AnchorNet's cells with the leaf prior. On diseased high-res coffee leaves (another crop)
its top patch lands on a lesion less often than a random box; the symptom prior puts it there, but the package's
map read at its own 224-px side costs 0.164 GMACs on a square photo, as much as the whole iBean cascade. This reads
the same map at smaller sides (long side of the photo as the map sees it) as the prior of `recipe_default.py`'s
three `ibean` models, switched on at inference (the models were trained with the leaf prior, as
`symptom_prior.py` measured with the earlier map), and reports for each side:

* top-1 patch on a lesion on the 39 diseased high-res coffee test leaves (`localisation.judge`), beside the leaf
  prior, the centre box and a random box;
* top-1 on the iBean validation and test photos, paired against the leaf prior over seeds and photos, and the
  GMACs a photo with the map included.

Evaluations are cached under benchmarks/work/symptom_prior/ibean_side*; writes
benchmarks/results/symptom_prior/ibean_sides.json and prints a table. ``--synthetic-field --sides 128,224``
instead judges `synth_field.py`'s `ibean` runs on their diseased field test scenes (small lesions among cards and
hands), writing benchmarks/results/localisation/synthetic_field_map_sides.json. ``--calibrated 128`` instead runs
`agripatch calibrate --symptom-prior --map-side 128` on a copy of each model (exits and refusal refitted on its
validation photos, as a user would switch), scores the copy with `agripatch evaluate` on the test photos and pairs it
with the leaf prior, writing benchmarks/results/symptom_prior/ibean_calibrated_map128.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
MODELS = "benchmarks/work/recipe_default/ibean/seed{}/model.pt"
DATA = REPO / "benchmarks" / "work" / "recipe_default" / "ibean" / "data"
COFFEE = REPO.parent / "shared" / "data" / "coffee_bracol"
WORK = REPO / "benchmarks" / "work" / "symptom_prior"
OUT = REPO / "benchmarks" / "results" / "symptom_prior" / "ibean_sides.json"
SYNTH = REPO / "benchmarks" / "work" / "synth_field"
FIELD_OUT = REPO / "benchmarks" / "results" / "localisation" / "synthetic_field_map_sides.json"


def with_side(bundle, side: int | None):
    """The bundle ranking cells with the shipped map read at long side ``side`` (None: as trained, leaf prior)."""
    if side is not None:
        bundle.pipeline = bundle.pipeline.with_symptom_prior(side)
    return bundle


def evaluate(seed: int, split: str, side: int | None) -> dict:
    """One model's evaluation on ``split`` with the map at ``side`` (cached), as `recipe_default.read_evaluation`
    reads it: per sorted path the correctness, top-1, and the GMACs of the exits and of the map."""
    from benchmarks.recipe_default import read_evaluation

    dest = WORK / f"ibean_side{side or 'leaf'}_s{seed}_{split}"
    if not (dest / "summary.json").is_file():
        from agripatch.engine.evaluate import EvaluateOptions, evaluate_bundle
        from agripatch.pipeline.bundle import load_model_file

        model = REPO / MODELS.format(seed)
        bundle = with_side(load_model_file(model), side)
        evaluate_bundle(bundle, EvaluateOptions(model=model, data=DATA, out=dest, split=split, device="cpu"),
                        log=lambda *a: None)
    return read_evaluation(dest, seed)


def localise(seed: int, side: int | None) -> dict:
    """Top-1 patch on a lesion on the diseased high-res coffee test leaves for one model and side."""
    from agripatch.pipeline.bundle import load_model_file
    from benchmarks.localisation import coffee_items, judge

    bundle = with_side(load_model_file(REPO / MODELS.format(seed)), side)
    return judge(bundle, coffee_items(COFFEE, "test"), "symptom" if side else "leaf")["summary"]


def synthetic_field(sides: list[int | None], seeds: list[int]) -> dict:
    """Top-1 patch on a lesion on the 80 diseased synthetic field test scenes (lesions 2-6% of the photo, among
    cards and hands) for `synth_field.py`'s `ibean` runs, per side, beside the centre box with its paired interval."""
    from agripatch.pipeline.bundle import load_model_file
    from benchmarks.localisation import bootstrap_ci, judge, synth_items

    items = synth_items(SYNTH / "test")
    out = {}
    for side in sides:
        runs = [judge(with_side(load_model_file(SYNTH / "runs" / f"seed{seed}" / "model.pt"), side), items,
                      "symptom" if side else "leaf") for seed in seeds]
        top1 = np.concatenate([[p["top1"] for p in run["photos"]] for run in runs]).astype(float)
        centre = np.concatenate([[p["centre"] for p in run["photos"]] for run in runs]).astype(float)
        name = f"symptom@{side}" if side else "leaf"
        out[name] = {"top1_per_seed": [run["summary"]["top1"] for run in runs], "centre": float(centre.mean()),
                     "top1": float(top1.mean()), "top1_minus_centre": float((top1 - centre).mean()),
                     "top1_minus_centre_ci": bootstrap_ci(top1 - centre)}
        print(name, out[name], flush=True)
    return out


def calibrated(side: int, seeds: list[int]) -> dict:
    """Each model switched by `agripatch calibrate --symptom-prior --map-side side` (a copy, refitted on its
    validation photos), then `agripatch evaluate` on the test photos, paired with the leaf prior's evaluations."""
    from agripatch.engine.calibrate import run_calibration
    from agripatch.engine.evaluate import EvaluateOptions, run_evaluation
    from agripatch.engine.stats import paired_comparison
    from benchmarks.recipe_default import read_evaluation

    runs = []
    for seed in seeds:
        copy = WORK / f"ibean_calibrated{side}_s{seed}" / "model.pt"
        dest = copy.parent / "eval_test"
        if not (dest / "summary.json").is_file():
            if not copy.is_file():
                copy.parent.mkdir(parents=True, exist_ok=True)
                run_calibration(REPO / MODELS.format(seed), DATA, out=copy, symptom_prior=True, map_side=side,
                                log=lambda *a: None)
            run_evaluation(EvaluateOptions(model=copy, data=DATA, out=dest, split="test", device="cpu"))
        runs.append(read_evaluation(dest, seed))
    leaf = [evaluate(seed, "test", None) for seed in seeds]
    if any(run["paths"] != leaf[0]["paths"] for run in runs + leaf):
        raise SystemExit("the test evaluations do not list the same photos")
    cmp = paired_comparison(np.array([r["correct"] for r in runs], float), np.array([r["correct"] for r in leaf], float))
    per_seed = [{"seed": r["seed"], "top1": r["top1"], "cascade_gmacs": r["cascade_gmacs"],
                 "map_gmacs": r["symptom_map_gmacs"], "refused_fraction": r["refused"],
                 "exit_histogram": r["exit_histogram"]} for r in runs]
    print(f"calibrated at {side}: top-1 {cmp.accuracy_a:.4f} against the leaf prior's {cmp.accuracy_b:.4f}, "
          f"{100 * cmp.difference:+.2f} [{100 * cmp.ci_low:+.2f}, {100 * cmp.ci_high:+.2f}] ({cmp.only_a} / {cmp.only_b})")
    return {"what": f"agripatch calibrate <recipe_default ibean seed s>/model.pt --data <its data> --symptom-prior "
                    f"--map-side {side} (a copy), then agripatch evaluate on the test split; paired against the same "
                    f"models as trained (leaf prior), benchmarks/work/symptom_prior/ibean_sideleaf_s*_test",
            "photos": runs[0]["photos"], "per_seed": per_seed, **cmp.__dict__, "seeds": len(seeds)}


def main(argv: list[str] | None = None) -> None:
    from agripatch.engine.stats import paired_comparison

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sides", default="96,128,224")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--synthetic-field", action="store_true", help="instead: the synthetic field scenes "
                        f"(`synth_field.py`'s runs), written to {FIELD_OUT.relative_to(REPO)}")
    parser.add_argument("--calibrated", type=int, default=None, metavar="SIDE", help="instead: each model switched by "
                        "`agripatch calibrate --symptom-prior --map-side SIDE`, then evaluated on the test photos")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    sides: list[int | None] = [None] + [int(s) for s in args.sides.split(",")]
    from agripatch.io.atomic import atomic_write_text

    if args.calibrated:
        out = OUT.parent / f"ibean_calibrated_map{args.calibrated}.json"
        atomic_write_text(out, json.dumps(calibrated(args.calibrated, seeds), indent=1) + "\n")
        return
    if args.synthetic_field:
        what = ("benchmarks/work/synth_field models (the ibean recipe trained on synthetic field scenes, seeds 0-2), "
                "their 80 diseased test scenes; the shipped map read at each side as the symptom prior, switched at "
                "inference (benchmarks.ibean_symptom_side.with_side); localisation.judge")
        atomic_write_text(FIELD_OUT, json.dumps({"what": what, **synthetic_field(sides, seeds)}, indent=1))
        return
    result: dict = {"models": MODELS, "seeds": seeds, "sides": {}}
    leaf = {split: [evaluate(seed, split, None) for seed in seeds] for split in ("val", "test")}
    print("| prior | coffee top-1 on a lesion (per seed) | centre / random | split | top-1 | vs leaf prior [95% CI] "
          "(gained / lost) | GMACs (map) |")
    print("|---|---|---|---|---|---|---|")
    for side in sides:
        name = f"symptom@{side}" if side else "leaf"
        loc = [localise(seed, side) for seed in seeds]
        entry = {"coffee_top1": [s["top1"] for s in loc], "centre": loc[0]["centre"], "random": loc[0]["random"]}
        for split in ("val", "test"):
            runs = [evaluate(seed, split, side) for seed in seeds]
            paths = runs[0]["paths"]
            if any(run["paths"] != paths for run in runs + leaf[split]):
                raise SystemExit(f"the {split} evaluations do not list the same photos")
            cmp = paired_comparison(np.array([run["correct"] for run in runs], float),
                                    np.array([run["correct"] for run in leaf[split]], float))
            gmacs = [run["cascade_gmacs"] for run in runs]
            map_gmacs = [run["symptom_map_gmacs"] for run in runs]
            entry[split] = {"photos": len(paths), "top1": [run["top1"] for run in runs], **cmp.__dict__,
                            "cascade_gmacs": gmacs, "map_gmacs": map_gmacs}
            print(f"| {name} | {np.mean(entry['coffee_top1']):.3f} ({' / '.join(f'{x:.3f}' for x in entry['coffee_top1'])}) "
                  f"| {entry['centre']:.3f} / {entry['random']:.3f} | {split} ({len(paths)} x {len(seeds)}) "
                  f"| {cmp.accuracy_a:.4f} | {100 * cmp.difference:+.2f} [{100 * cmp.ci_low:+.2f}, {100 * cmp.ci_high:+.2f}] "
                  f"({cmp.only_a} / {cmp.only_b}) | {np.mean(gmacs) + np.mean(map_gmacs):.3f} ({np.mean(map_gmacs):.3f}) |")
        result["sides"][name] = entry
    atomic_write_text(OUT, json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
