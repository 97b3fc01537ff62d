"""Two versions of a model, each scored by `agripatch evaluate` on the same photos: paired, run for run.

    python -m benchmarks.paired_evaluations --a EVAL_A1,EVAL_A2,... --b EVAL_B1,EVAL_B2,... --name NAME
        [--label-a now --label-b before]

Each argument is a folder `agripatch evaluate` wrote (its ``predictions.csv`` and ``summary.json``); run i of A is
paired with run i of B (the same seed), and every run must list the same photos. Prints and writes
``benchmarks/results/paired_evaluations/NAME.json``: the default cascade's top-1 per run, the paired difference
A - B over photos and runs with its 95% interval, GMACs, ECE and the share refused, per run.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from agripatch.engine.stats import paired_comparison
from agripatch.io.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results" / "paired_evaluations"


def _run(folder: Path) -> tuple[list[str], np.ndarray, dict]:
    """A run's photos, whether the cascade got each right, and its summary's headline numbers."""
    rows = list(csv.DictReader((folder / "predictions.csv").open()))
    summary = json.loads((folder / "summary.json").read_text())
    refusal = summary.get("refusal") or {}
    return ([r["path"] for r in rows], np.array([r["true"] == r["predicted"] for r in rows]),
            {"top1": summary["top1"], "gmacs": summary["mean_gmacs"], "ece": (summary.get("calibration") or {}).get("ece"),
             "refused": refusal.get("refused_fraction"), "exit_histogram": summary.get("exit_histogram")})


def compare(a: list[Path], b: list[Path], label_a: str = "a", label_b: str = "b") -> dict:
    """A against B, run i with run i, on the same photos ([runs, photos] paired comparison)."""
    if len(a) != len(b) or not a:
        raise SystemExit(f"need as many runs on each side, got {len(a)} and {len(b)}")
    runs_a, runs_b = [_run(f) for f in a], [_run(f) for f in b]
    if any(pa != runs_a[0][0] or pb != runs_a[0][0] for (pa, _, _), (pb, _, _) in zip(runs_a, runs_b)):
        raise SystemExit("the runs do not list the same photos (predictions.csv)")
    right_a, right_b = np.stack([r for _, r, _ in runs_a]), np.stack([r for _, r, _ in runs_b])
    paired = paired_comparison(right_a, right_b)
    return {"labels": [label_a, label_b], label_a: [str(f) for f in a], label_b: [str(f) for f in b],
            "photos": int(right_a.shape[1]), "runs": len(a), f"top1_{label_a}": float(right_a.mean()),
            f"top1_{label_b}": float(right_b.mean()), f"{label_a}_minus_{label_b}": paired.difference,
            "ci": [paired.ci_low, paired.ci_high], "gained": int((right_a & ~right_b).sum()),
            "lost": int((~right_a & right_b).sum()),
            f"per_run_{label_a}": [s for _, _, s in runs_a], f"per_run_{label_b}": [s for _, _, s in runs_b],
            f"mean_gmacs_{label_a}": float(np.mean([s["gmacs"] for _, _, s in runs_a])),
            f"mean_gmacs_{label_b}": float(np.mean([s["gmacs"] for _, _, s in runs_b]))}


def describe(c: dict) -> str:
    """One line for the terminal."""
    a, b = c["labels"]
    return (f"{c['photos']} photos x {c['runs']} runs: {a} {c[f'top1_{a}']:.4f} against {b} {c[f'top1_{b}']:.4f} "
            f"({c[f'{a}_minus_{b}']:+.4f} [{c['ci'][0]:+.4f}, {c['ci'][1]:+.4f}], {c['gained']} gained / {c['lost']} lost)")


def main(argv: list[str] | None = None) -> None:
    """Compare the two sides; print and store."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--a", required=True, help="comma-separated evaluate folders")
    parser.add_argument("--b", required=True, help="the same runs' folders of the other version")
    parser.add_argument("--label-a", default="a")
    parser.add_argument("--label-b", default="b")
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    c = compare([Path(f) for f in args.a.split(",")], [Path(f) for f in args.b.split(",")], args.label_a, args.label_b)
    print(describe(c))
    for label in c["labels"]:
        for i, run in enumerate(c[f"per_run_{label}"]):
            print(f"  {label} run {i}: top-1 {run['top1']:.4f}, {run['gmacs']:.3f} GMACs, ECE {run['ece']:.4f}, "
                  f"refused {run['refused']:.3f}, exits {run['exit_histogram']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.name}.json", json.dumps(c, indent=1) + "\n")
    print(f"wrote {RESULTS / f'{args.name}.json'}")


if __name__ == "__main__":
    main()
