"""Can the full-image exit read the photo smaller? The `ibean` recipe's models (``recipe_default.py --dataset
ibean``, seeds 0-2) with their full-image exit reading the whole photo at each side, the network unchanged
(trained at 224), recalibrated on the validation photos as `agripatch calibrate` does, scored on the test photos
that chose nothing, paired against the side the network was trained at (issue 24: the photos that reach the
full-image exit pay the whole @224 network on top of the glance and 3 patches, over half of the cascade's MACs).

    python -m benchmarks.full_image_side --sides 160,176,192,224

Each (seed, side) is a copy of the model file under ``benchmarks/work/full_image_side/seed<n>/side<S>`` (cached:
rerunning reads finished evaluations). Writes benchmarks/results/full_image_side/ibean.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from benchmarks.protocol import train_and_evaluate
from benchmarks.recipe_default import paired_runs, read_evaluation

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "benchmarks" / "work" / "recipe_default" / "ibean"
WORK = REPO / "benchmarks" / "work" / "full_image_side"
OUT = REPO / "benchmarks" / "results" / "full_image_side" / "ibean.json"
#: the best full-image model of the protocol's iBean runs, on the same test photos and seeds
PROTOCOL, BASELINE = REPO / "benchmarks" / "results" / "protocol" / "ibean.json", "mobilenetv2_100@224"
#: the side the full-image exit's network was trained at (the recipe's data.baseline_size)
TRAINED_SIDE = 224


def side_copy(seed: int, side: int) -> Path:
    """The seed's model file with its full-image exit reading photos at ``side`` (the network as trained),
    recalibrated on the validation photos: exit temperatures and refusal refitted for what the exit now sees."""
    from agripatch.engine.calibrate import run_calibration
    from agripatch.io.torchfile import load_object, save_object

    model = WORK / f"seed{seed}" / f"side{side}" / "model.pt"
    if not model.is_file():
        obj = load_object(RUNS / f"seed{seed}" / "model.pt")
        obj["baseline"] = {**obj["baseline"], "input_size": side}
        staged = model.with_name("staged.pt")
        save_object(obj, staged)
        run_calibration(staged, RUNS / "data", log=lambda _: None)  # as `agripatch calibrate` does
        staged.replace(model)
    return model


def evaluate_side(seed: int, side: int) -> dict:
    """The test photos' default-exit results of the seed at ``side`` (evaluated once, by the protocol's own
    `train_and_evaluate`: the model file exists, so it only evaluates), in `recipe_default`'s form."""
    model = side_copy(seed, side)
    return read_evaluation(train_and_evaluate("ibean", RUNS / "data", model.parent, seed, []), seed)


def protocol_baseline(seeds: list[int]) -> tuple[np.ndarray, float]:
    """The @224 model's correctness [seeds, photos] (photos sorted by path, as `read_evaluation` sorts them) and
    its GMACs, from the protocol's runs of the same seeds."""
    stored = json.loads(PROTOCOL.read_text())["runs"]["baseline-224"]
    runs = [stored[str(seed)] for seed in seeds]
    correct = np.array([np.array(run["models"][BASELINE]["correct"], bool)[np.argsort(run["paths"])] for run in runs])
    return correct, float(np.mean([run["models"][BASELINE]["gmacs"] for run in runs]))


def side_row(per_seed: list[dict], trained: list[dict], baseline: np.ndarray, baseline_gmacs: float) -> dict:
    """One side's row: top-1, paired against the trained side and against the @224 model, cost, ECE, refusal."""
    correct = [r["correct"] for r in per_seed]
    gmacs = float(np.mean([r["gmacs"] for r in per_seed]))
    return {"top1": float(np.mean(correct)), "per_seed": [float(np.mean(c)) for c in correct],
            "vs_trained_side": paired_runs(correct, [r["correct"] for r in trained], 0),
            "vs_baseline": paired_runs(correct, list(baseline), 0),
            "gmacs": gmacs, "share_of_baseline": gmacs / baseline_gmacs,
            "ece": float(np.mean([r["ece"] for r in per_seed])), "refused": float(np.mean([r["refused"] for r in per_seed])),
            "exit_histograms": [r["exit_histogram"] for r in per_seed]}


def print_table(table: dict) -> None:
    """The rows as the markdown table in benchmarks/README.md."""
    print("| full-image exit side | top-1 (per seed) | vs 224 [95% CI] (gained / lost) | vs the @224 model [95% CI] | "
          "GMACs (share of @224) | ECE | refused |")
    print("|---|---|---|---|---|---|---|")
    for side, row in table.items():
        t, b = row["vs_trained_side"], row["vs_baseline"]
        print(f"| {side} | {row['top1']:.4f} ({' / '.join(f'{a:.4f}' for a in row['per_seed'])}) | "
              f"{t['difference_points']:+.2f} [{t['ci95_points'][0]:+.2f}, {t['ci95_points'][1]:+.2f}] "
              f"({t['gained']} / {t['lost']}) | {b['difference_points']:+.2f} [{b['ci95_points'][0]:+.2f}, "
              f"{b['ci95_points'][1]:+.2f}] | {row['gmacs']:.3f} ({row['share_of_baseline']:.0%}) | "
              f"{row['ece']:.3f} | {row['refused']:.1%} |")


def main(argv: list[str] | None = None) -> None:
    """Every (seed, side), then each side paired against the trained side and the @224 model on the same photos."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sides", default="160,176,192,224")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    sides, seeds = [int(s) for s in args.sides.split(",")], [int(s) for s in args.seeds.split(",")]
    runs = {side: [evaluate_side(seed, side) for seed in seeds] for side in sorted(set(sides) | {TRAINED_SIDE})}
    baseline, baseline_gmacs = protocol_baseline(seeds)
    table = {side: side_row(per_seed, runs[TRAINED_SIDE], baseline, baseline_gmacs) for side, per_seed in runs.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp = OUT.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"models": str(RUNS.relative_to(REPO)) + "/seed<n>/model.pt", "seeds": seeds,
                               "trained_side": TRAINED_SIDE, "baseline": BASELINE, "baseline_gmacs": baseline_gmacs,
                               "sides": table, "per_seed": runs}, indent=1) + "\n")
    tmp.replace(OUT)
    print_table(table)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
