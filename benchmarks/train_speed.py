"""How long the `ibean` recipe takes to train on this machine, fp32 beside bf16, in one run.

    python -m benchmarks.train_speed                     # both precisions, one after the other
    python -m benchmarks.train_speed --modes fp32        # one of them

Each mode trains the whole recipe (every stage, baseline included) from scratch on ../shared/data/ibean/train
with a 20% stratified validation split (seed 0), in a fresh process (the precision is chosen per process
with AGRIPATCH_CPU_BF16), and reports the wall minutes of every stage (training loops and their validation, from
metrics.csv) and the best validation top-1 of every stage, plus the calibrated cascade on val.
Nothing else may run on the machine meanwhile: two torch jobs on 2 cores slow each other several times.
Writes benchmarks/results/train_speed.json (``--out``), with the CPU model and flags, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def stage_rows(run: Path) -> dict[str, dict[str, float]]:
    """Per stage: summed training seconds, epochs and best validation accuracy, from metrics.csv."""
    out: dict[str, dict[str, float]] = {}
    with open(run / "metrics.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            s = out.setdefault(row["stage"], {"seconds": 0.0, "epochs": 0, "best_val": 0.0})
            s["seconds"] += float(row["seconds"]) + float(row.get("val_seconds") or 0.0)
            s["epochs"] += 1
            s["best_val"] = max(s["best_val"], float(row["val_acc"]))
    return out


def main(argv: list[str] | None = None) -> None:
    """Train the recipe once per mode and report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="fp32,bf16")
    parser.add_argument("--recipe", default="ibean")
    parser.add_argument("--work", type=Path, default=REPO / "benchmarks" / "work" / "train_speed")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "train_speed.json")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args(argv)

    from benchmarks.machine import cpu_description
    from benchmarks.protocol import SHARED, validation_root

    root = validation_root(SHARED / "ibean" / "train", args.work / "data")  # all 1,167 photos, 20% val, seed 0
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    for mode in args.modes.split(","):
        run = args.work / f"run-{mode}"
        env = {**os.environ, "AGRIPATCH_CPU_BF16": "1" if mode == "bf16" else "0", "NO_ALBUMENTATIONS_UPDATE": "1"}
        start = time.perf_counter()
        if not (run / "model.pt").is_file():
            subprocess.run([sys.executable, "-m", "agripatch", "train", "--recipe", args.recipe, "--data", str(root),
                            "--out", str(run), *(["--resume"] if (run / "recipe.yaml").is_file() else []),
                            *args.overrides], check=True, env=env)
        wall = (time.perf_counter() - start) / 60
        results[mode] = {"wall_minutes": wall, "stages": stage_rows(run), "cpu": cpu_description()}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
    print("| mode | stage | epochs | minutes | best val top-1 |\n|---|---|---|---|---|")
    for mode, r in results.items():
        for stage, s in r["stages"].items():
            print(f"| {mode} | {stage} | {s['epochs']} | {s['seconds'] / 60:.2f} | {s['best_val']:.4f} |")
        print(f"| {mode} | total (wall, incl. setup and calibration) | | {r['wall_minutes']:.2f} | |")


if __name__ == "__main__":
    main()
