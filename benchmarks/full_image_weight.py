"""Should the full-image exit's weight be fitted per model instead of half each? (issue 24 item 4)

    python -m benchmarks.full_image_weight --name coffee_leaf_ibean_recipe \
        --runs "benchmarks/work/recipe_default/coffee_leaf_ibean_recipe/seed{0,1,2}"

The full-image exit answers with the mean of the patches' aggregate and the full-image model's logits ("A
full-image last exit"). With ``mean_logits`` both parts can be read back from a run's stored exits, up to a constant
per photo that softmax ignores: the patches' part is exit k's log-probabilities, the whole photo's is twice the last
exit's minus exit k's. So a weight w on the whole photo gives ``(1 - 2w) log p_k + 2w log p_last``. For each run,
w is chosen on its validation outputs (``val_outputs.npz``, untempered) by likelihood over a grid, each w with its
own temperature from the package's ``fit_temperature``; the test photos' stored exits (tempered, untempered back by
the model file's temperatures) are then answered with the fitted w, half each and the whole photo alone, keeping
every photo's exit as the model file's thresholds give it. Pooled over the runs, paired against half each. Writes
``benchmarks/results/cost_ceiling/<name>_full_image_weight.json``.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "results" / "cost_ceiling"
GRID = [round(0.05 * i, 2) for i in range(21)]


def _log(probs: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(probs.astype(np.float64), 1e-30))


def _log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def fitted_weight(patches: np.ndarray, whole: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """The weight on the whole photo (and its temperature) with the best validation likelihood: ``patches`` and
    ``whole`` are exit k's and the last exit's untempered log-probabilities."""
    from agripatch.pipeline.calibration import fit_temperature

    best = None
    for w in GRID:
        z = (1 - 2 * w) * patches + 2 * w * whole
        t = fit_temperature(np.exp(_log_softmax(z)), labels)
        nll = -_log_softmax(z / t)[np.arange(len(labels)), labels].mean()
        if best is None or nll < best[0]:
            best = (nll, w, t)
    return best[1], float(best[2])


def replay_run(run: Path) -> dict:
    """One run's fitted weight and its test photos' correctness with each weight."""
    from agripatch.pipeline.bundle import load_model_file
    from agripatch.pipeline.exits import simulate_exits

    config = load_model_file(run / "model.pt").pipeline.config
    if not config.full_image_exit or config.aggregate != "mean_logits":
        raise SystemExit(f"{run}: needs a full-image exit and mean_logits aggregation")
    k, temps = config.k, np.asarray(config.temperatures, np.float64)
    val, test = np.load(run / "val_outputs.npz"), np.load(run / "eval_test" / "stage_probs.npz")
    w, t = fitted_weight(_log(val["probs"][:, k]), _log(val["probs"][:, k + 1]), val["labels"])
    patches, whole = temps[k] * _log(test["probs"][:, k]), temps[k + 1] * _log(test["probs"][:, k + 1])
    pred, stage, _ = simulate_exits(test["probs"], test["stage_macs"], config.thresholds)
    at_last = stage == k + 1
    out = {"run": str(run), "weight": w, "temperature": t, "photos_at_full_image_exit": int(at_last.sum())}
    for name, weight in (("half", 0.5), ("fitted", w), ("whole_photo", 1.0)):
        answer = pred.copy()
        answer[at_last] = ((1 - 2 * weight) * patches + 2 * weight * whole)[at_last].argmax(axis=1)
        out[name] = (answer == test["labels"]).tolist()
    return out


def main(argv: list[str] | None = None) -> None:
    """Replay every run, pair each weight with half each, write the JSON and print the lines."""
    from agripatch.io.atomic import atomic_write_text
    from benchmarks.cost_ceiling import expand
    from benchmarks.recipe_default import paired_runs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="run folders, one brace group: RUNS/seed{0,1,2}")
    parser.add_argument("--name", required=True)
    args = parser.parse_args(argv)
    runs = [replay_run(run) for run in expand(args.runs)]
    result = {"what": __doc__.splitlines()[0], "command": f"python -m benchmarks.full_image_weight --name "
              f"{args.name} --runs \"{args.runs}\"", "runs": runs}
    for name in ("fitted", "whole_photo"):
        c = paired_runs([np.array(r[name], float) for r in runs], [np.array(r["half"], float) for r in runs], 0)
        result[f"{name}_vs_half"] = c
        weights = " / ".join(f"{r['weight']:.2f}" for r in runs)
        print(f"{name} against half each: {c['ours']:.4f} vs {c['theirs']:.4f}, {c['difference_points']:+.2f} "
              f"[{c['ci95_points'][0]:+.2f}, {c['ci95_points'][1]:+.2f}] points ({c['gained']} gained, {c['lost']} "
              f"lost); weights {weights}")
    OUT.mkdir(parents=True, exist_ok=True)
    atomic_write_text(OUT / f"{args.name}_full_image_weight.json", json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
