"""Does a full-image last exit pay (issue 24, item 4)? The protocol's cascades with and without it, on their test photos.

    python -m benchmarks.full_image_exit --dataset ibean [--seeds 0,1,2]
    python -m benchmarks.full_image_exit --dataset coffee_highres_seed0 --seeds 0 \\
        --run benchmarks/work/profile/coffee_highres_seed0 --data ../shared/data/coffee_bracol/highres

For each seed of the protocol's ``cascade24`` runs (``benchmarks/work/protocol/<dataset>/runs/cascade24/seed<s>``):
copy the run, resume it with its baseline stage on (the cascade's stages are complete, so only the full-image
model trains, on the same photos and seed), then ``agripatch calibrate --full-image-exit`` on the run's
validation photos (every exit's temperature and threshold refitted, nothing chosen on test photos) and
``agripatch evaluate`` both model files on the test split. Paired over photos and seeds (bootstrap interval):
the cascade with the full-image exit against the same cascade without it and against the full-image model
alone. Writes ``benchmarks/results/full_image_exit/<dataset>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = REPO / "benchmarks" / "work" / "protocol"
WORK = REPO / "benchmarks" / "work" / "full_image_exit"
OUT = REPO / "benchmarks" / "results" / "full_image_exit"


def agripatch(*args: str) -> None:
    """Run the CLI; stop with its output when it fails."""
    done = subprocess.run([sys.executable, "-m", "agripatch", *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"agripatch {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")


def prepare(dataset: str, seed: int, run: Path | None = None, data: Path | None = None,
            overrides: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """The seed's run with its baseline trained and a full-image-exit copy of its model file (``run`` and ``data``:
    an existing run trained with its baseline, and its dataset, instead of the protocol's; ``overrides``: recipe
    values for the baseline's training, e.g. its size)."""
    source = PROTOCOL / dataset / "runs" / "cascade24" / f"seed{seed}"
    data = data or PROTOCOL / dataset / "data"
    if run is None:
        run = WORK / dataset / f"seed{seed}"
    elif not (run / "baseline_done").is_file():
        (run / "baseline_done").write_text("trained with its baseline\n")
    if not (run / "model.pt").is_file() or not (run / "baseline_done").is_file():
        if run.exists():
            shutil.rmtree(run)
        shutil.copytree(source, run, ignore=shutil.ignore_patterns("eval_test", "model.pt"))
        if overrides:  # values only the baseline reads: written into the copy, so --resume sees the same recipe
            from agripatch.recipes import load_recipe

            (run / "recipe.yaml").write_text(load_recipe(run / "recipe.yaml", list(overrides)).to_yaml())
        agripatch("train", "--recipe", str(run / "recipe.yaml"), "--data", str(data), "--out", str(run), "--resume",
                  "stages.baseline.enabled=true", *overrides)
        (run / "baseline_done").write_text("yes\n")
    full = run / "model_full_image.pt"
    if not full.is_file():
        agripatch("calibrate", str(run / "model.pt"), "--data", str(data), "--out", str(full), "--full-image-exit")
    for model, name in ((run / "model.pt"), "eval_plain"), (full, "eval_full_image"):
        if not (run / name / "summary.json").is_file():
            agripatch("evaluate", str(model), "--data", str(data), "--split", "test", "--out", str(run / name))
    return run, data


def correctness(run: Path) -> tuple[list[str], dict[str, np.ndarray]]:
    """The test photos' paths (sorted) and, per photo, right or wrong for the plain cascade, the full-image-exit
    cascade and the full-image model alone."""
    out, paths = {}, []
    for name, key in (("eval_plain", "cascade"), ("eval_full_image", "full image exit")):
        with open(run / name / "predictions.csv", newline="") as handle:
            rows = sorted(csv.DictReader(handle), key=lambda r: r["path"])
        paths = [r["path"] for r in rows]
        out[key] = np.array([r["predicted"] == r["true"] for r in rows])
        if key == "cascade":
            out["baseline"] = np.array([r["baseline_predicted"] == r["true"] for r in rows])
    return paths, out


def main(argv: list[str] | None = None) -> None:
    """Prepare every seed, then compare paired."""
    from agripatch.engine.stats import paired_comparison

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--run", type=Path, help="one existing run trained with its baseline (one seed), instead of "
                                                 "the protocol's runs")
    parser.add_argument("--data", type=Path, help="that run's dataset")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="recipe value for the baseline's training (e.g. data.baseline_size=256); repeatable")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    per_seed, summaries = [], []
    for seed in seeds:
        run, _ = prepare(args.dataset, seed, args.run, args.data, tuple(args.set))
        paths, correct = correctness(run)
        per_seed.append(correct)
        full = json.loads((run / "eval_full_image" / "summary.json").read_text())
        plain = json.loads((run / "eval_plain" / "summary.json").read_text())
        summaries.append({"seed": seed, "full_image_exit": {k: full[k] for k in ("top1", "mean_gmacs", "exit_histogram",
                                                                                 "thresholds")},
                          "cascade": {k: plain[k] for k in ("top1", "mean_gmacs", "exit_histogram", "thresholds")},
                          "baseline_gmacs": plain["what_you_get"][-1]["gmacs"],
                          "refused": {"full_image_exit": full.get("refusal", {}).get("refused_fraction"),
                                      "cascade": plain.get("refusal", {}).get("refused_fraction")},
                          "ece": {"full_image_exit": full["calibration"]["ece"], "cascade": plain["calibration"]["ece"]},
                          # per test photo (sorted paths), for the README's table (benchmarks.protocol.summary_block)
                          "paths": paths, "correct": {key: [int(v) for v in value] for key, value in correct.items()}})
    stack = {key: np.stack([s[key] for s in per_seed]) for key in per_seed[0]}
    comparisons = {}
    for a, b in (("full image exit", "cascade"), ("full image exit", "baseline"), ("cascade", "baseline")):
        c = paired_comparison(stack[a], stack[b])
        comparisons[f"{a} - {b}"] = {"a": c.accuracy_a, "b": c.accuracy_b, "difference": c.difference,
                                     "ci_low": c.ci_low, "ci_high": c.ci_high, "only_a": c.only_a, "only_b": c.only_b}
    gmacs = {k: float(np.mean([s[k]["mean_gmacs"] for s in summaries])) for k in ("full_image_exit", "cascade")}
    gmacs["baseline"] = float(np.mean([s["baseline_gmacs"] for s in summaries]))
    result = {"dataset": args.dataset, "seeds": seeds, "overrides": args.set, "photos": int(stack["cascade"].shape[1]), "gmacs": gmacs,
              "comparisons": comparisons, "per_seed": summaries}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{args.dataset}.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.dataset}: {result['photos']} test photos x {len(seeds)} seeds; GMACs {gmacs}")
    for name, c in comparisons.items():
        print(f"  {name}: {c['a']:.4f} vs {c['b']:.4f}, {100 * c['difference']:+.2f} "
              f"[{100 * c['ci_low']:+.2f}, {100 * c['ci_high']:+.2f}] points")


if __name__ == "__main__":
    main()
