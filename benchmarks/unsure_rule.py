"""Does the ``unsure`` cut-off hold on photos that chose nothing? Old rule against this version's, replayed.

    python -m benchmarks.unsure_rule --runs MODEL_1:VAL_EVAL_1:TEST_EVAL_1,MODEL_2:... --name NAME [--halves 2000]

Each run is a model file and two folders `agripatch evaluate` wrote for it (``--split val`` and ``--split test``),
whose ``stage_probs.npz`` are tempered by the file's temperatures. Each run's
photos are pooled and cut into random halves ``--halves`` times: the temperature of the last exit and the
``unsure`` cut-off are fitted on one half (as `train` fits them on its validation split) and applied to the other.
Per rule: the share of photos refused, how often one half refuses more than 2% (issue 24's target), and what
refusing did to the rest (wrong answers withheld against right ones lost). Writes
``benchmarks/results/unsure_rule/NAME.json``.

The rules: ``previous`` (refuse at most 1% of the validation photos, the cut-off that most raises their
accuracy: a threshold chosen on one or two photos), ``now`` (:func:`agripatch.pipeline.refusal.unsure_threshold`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agripatch.io.atomic import atomic_write_text
from agripatch.pipeline.bundle import load_model_file
from agripatch.pipeline.calibration import apply_temperature, fit_temperature
from agripatch.pipeline.refusal import unsure_threshold

RESULTS = Path(__file__).resolve().parent / "results" / "unsure_rule"
BUDGET = 0.01  # the recipes' refusal.confidence_quantile


def previous_threshold(confidences: np.ndarray, correct: np.ndarray, budget: float) -> float:
    """The rule before this version: within ``budget`` of the validation photos refused, the most accurate rest."""
    best, best_accuracy = 0.0, float(correct.mean())
    for threshold in np.unique(confidences):
        refused = confidences < threshold
        if refused.mean() > budget:
            break
        if refused.all():
            continue
        accuracy = float(correct[~refused].mean())
        if accuracy > best_accuracy + 1e-12:
            best, best_accuracy = float(threshold), accuracy
    return best


RULES = {"previous": previous_threshold, "now": unsure_threshold}


def _last_exit(folder: Path, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """A folder's last-exit probabilities with the model's ``temperature`` taken off, and the labels."""
    arrays = np.load(folder / "stage_probs.npz")
    return apply_temperature(arrays["probs"][:, -1], 1.0 / temperature), arrays["labels"]


def _last_temperature(model: Path) -> float:
    temperatures = load_model_file(model).pipeline.config.temperatures
    return float(temperatures[-1]) if temperatures else 1.0


def as_split(runs: list[tuple[Path, Path, Path]]) -> list[dict]:
    """Each rule fitted on each run's own validation photos and applied to its test photos (the model's own
    temperature, as `agripatch calibrate` leaves it): the cut-off, and the test photos refused, right and wrong."""
    rows = []
    for model, val, test in runs:
        temperature = _last_temperature(model)
        (pv, yv), (pt, yt) = _last_exit(val, 1.0), _last_exit(test, 1.0)  # as stored: already tempered
        row = {"model": str(model), "val_photos": int(len(yv)), "test_photos": int(len(yt)), "temperature": temperature}
        for name, rule in RULES.items():
            cut = rule(pv.max(axis=1), pv.argmax(axis=1) == yv, BUDGET)
            refused, correct = pt.max(axis=1) < cut, pt.argmax(axis=1) == yt
            row[name] = {"cut": cut, "refused": int(refused.sum()), "refused_right": int((refused & correct).sum())}
        rows.append(row)
    return rows


def replay(runs: list[tuple[Path, Path, Path]], halves: int, seed: int = 0) -> dict:
    """Every rule on ``halves`` random halves of each run's pooled val + test photos."""
    rng = np.random.default_rng(seed)
    per_rule = {name: {"refused": [], "wrong_withheld": [], "right_lost": [], "over_2pct": 0} for name in RULES}
    for model, val, test in runs:
        temperature = _last_temperature(model)
        (pv, yv), (pt, yt) = _last_exit(val, temperature), _last_exit(test, temperature)
        probs, labels = np.concatenate([pv, pt]), np.concatenate([yv, yt])
        n = len(labels)
        for _ in range(halves):
            order = rng.permutation(n)
            fit, use = order[: n // 2], order[n // 2:]
            tempered = apply_temperature(probs, fit_temperature(probs[fit], labels[fit]))
            confidence, correct = tempered.max(axis=1), tempered.argmax(axis=1) == labels
            for name, rule in RULES.items():
                cut = rule(confidence[fit], correct[fit], BUDGET)
                refused = confidence[use] < cut
                stats = per_rule[name]
                stats["refused"].append(float(refused.mean()))
                stats["wrong_withheld"].append(int((refused & ~correct[use]).sum()))
                stats["right_lost"].append(int((refused & correct[use]).sum()))
                stats["over_2pct"] += int(refused.mean() > 0.02)
    draws = len(runs) * halves
    return {name: {"refused_mean": float(np.mean(s["refused"])), "refused_p95": float(np.quantile(s["refused"], 0.95)),
                   "halves_over_2pct": s["over_2pct"] / draws,
                   "wrong_withheld_per_half": float(np.mean(s["wrong_withheld"])),
                   "right_lost_per_half": float(np.mean(s["right_lost"]))} for name, s in per_rule.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="MODEL:VAL_EVAL:TEST_EVAL triples, comma-separated (one per model file)")
    parser.add_argument("--name", required=True)
    parser.add_argument("--halves", type=int, default=2000)
    args = parser.parse_args()
    runs = [tuple(Path(p) for p in pair.split(":")) for pair in args.runs.split(",")]
    result = {"runs": [[str(p) for p in run] for run in runs], "halves": args.halves, "budget": BUDGET,
              "rules": replay(runs, args.halves), "as_split": as_split(runs)}
    print(f"{'rule':10} {'refused':>8} {'p95':>7} {'halves >2%':>11} {'wrong withheld':>15} {'right lost':>11}")
    for name, s in result["rules"].items():
        print(f"{name:10} {s['refused_mean']:8.2%} {s['refused_p95']:7.2%} {s['halves_over_2pct']:11.1%} "
              f"{s['wrong_withheld_per_half']:15.2f} {s['right_lost_per_half']:11.2f}")
    for row in result["as_split"]:
        print(row["model"], *(f"{name}: cut {row[name]['cut']:.3f}, {row[name]['refused']} of {row['test_photos']} test "
                               f"photos refused ({row[name]['refused_right']} right)" for name in RULES), sep="\n  ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.name}.json", json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
