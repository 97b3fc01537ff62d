"""Should the full-image exit come sooner? Replayed from stored exits, no network run (issue 24, MACs).

    python -m benchmarks.full_image_sooner --runs MODEL_1:VAL_EVAL_1:TEST_EVAL_1,... --name NAME

On the `ibean` recipe the photos that reach the full-image exit pay for the glance, all K patches and the
full-image model (2.1x the @224 model's MACs), and exits 2..K stop almost none of them. This replays a cascade
whose full-image exit follows patch m (m = 0..K) instead of patch K, from each run's `agripatch evaluate` outputs
(``stage_probs.npz`` of ``--split val`` and ``--split test``, tempered by the model file's temperatures, which
are taken off): with ``mean_logits`` aggregation, the exit's answer ``softmax((mean of views 0..m + full-image
logits) / 2)`` is ``softmax((log p_m + 2 log p_full - log p_K) / 2)`` of the untempered exits, up to constants
that softmax ignores. Temperatures are refitted on the validation photos, every exit but the last stops at
calibrated confidence 0.97 (the default). Paired against m = K on the same photos and runs, on the validation
photos (where a choice would be made) and the test photos. Writes ``benchmarks/results/full_image_sooner/NAME.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agripatch.engine.stats import paired_comparison
from agripatch.io.atomic import atomic_write_text
from agripatch.pipeline.bundle import load_model_file
from agripatch.pipeline.calibration import apply_temperature, fit_temperatures, temper_stages
from agripatch.pipeline.config import DEFAULT_TARGET_CONFIDENCE
from agripatch.pipeline.exits import simulate_exits

RESULTS = Path(__file__).resolve().parent / "results" / "full_image_sooner"


def untempered(folder: Path, temperatures: list[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A folder's exits [N, S, C] with the model's temperatures taken off, the labels and the exit costs."""
    arrays = np.load(folder / "stage_probs.npz")
    probs = arrays["probs"].astype(np.float64)
    raw = np.stack([apply_temperature(probs[:, s], 1.0 / t) for s, t in enumerate(temperatures)], axis=1)
    return raw, arrays["labels"], arrays["stage_macs"]


def sooner(probs: np.ndarray, m: int) -> np.ndarray:
    """Exits 0..m as they are, then the full-image exit as if it followed patch m: [N, m + 2, C]."""
    k = probs.shape[1] - 2
    logs = np.log(np.maximum(probs, 1e-300))
    full = (logs[:, m] + 2 * logs[:, k + 1] - logs[:, k]) / 2
    full = np.exp(full - full.max(axis=1, keepdims=True))
    return np.concatenate([probs[:, : m + 1], (full / full.sum(axis=1, keepdims=True))[:, None]], axis=1)


def replay(runs: list[tuple[Path, Path, Path]]) -> dict:
    """Per m: which photos each run gets right and its mean GMACs, on the validation and test photos."""
    out: dict[int, dict[str, list]] = {}
    for model, val, test in runs:
        temperatures = load_model_file(model).pipeline.config.temperatures
        (pv, yv, macs), (pt, yt, _) = untempered(val, temperatures), untempered(test, temperatures)
        k = pv.shape[1] - 2
        for m in range(k + 1):
            fitted = fit_temperatures(sooner(pv, m), yv)
            costs = np.r_[macs[: m + 1], macs[m] + macs[k + 1] - macs[k]]
            row = out.setdefault(m, {"val_right": [], "test_right": [], "val_gmacs": [], "test_gmacs": []})
            for split, probs, labels in (("val", pv, yv), ("test", pt, yt)):
                tempered = temper_stages(sooner(probs, m), fitted).astype(np.float32)
                pred, _, spent = simulate_exits(tempered, costs, DEFAULT_TARGET_CONFIDENCE)
                row[f"{split}_right"].append(pred == labels)
                row[f"{split}_gmacs"].append(float(spent.mean() / 1e9))
    return out


def summarise(out: dict) -> dict:
    """Top-1, GMACs and the paired difference against the full-image exit after the last patch, per split."""
    last = max(out)
    table = {}
    for m, row in out.items():
        entry = {}
        for split in ("val", "test"):
            right, base = np.stack(row[f"{split}_right"]), np.stack(out[last][f"{split}_right"])
            paired = paired_comparison(right, base)
            entry[split] = {"top1": float(right.mean()), "gmacs": float(np.mean(row[f"{split}_gmacs"])),
                            "minus_last": paired.difference, "ci": [paired.ci_low, paired.ci_high],
                            "gained": int((right & ~base).sum()), "lost": int((~right & base).sum())}
        table[str(m)] = entry
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", required=True, help="MODEL:VAL_EVAL:TEST_EVAL triples, comma-separated")
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    runs = [tuple(Path(p) for p in triple.split(":")) for triple in args.runs.split(",")]
    table = summarise(replay(runs))
    for m, entry in table.items():
        print(f"full-image exit after patch {m}: " + " | ".join(
            f"{split} {e['top1']:.4f} at {e['gmacs']:.3f} GMACs, {100 * e['minus_last']:+.2f} "
            f"[{100 * e['ci'][0]:+.2f}, {100 * e['ci'][1]:+.2f}] ({e['gained']} gained / {e['lost']} lost)"
            for split, e in entry.items()))
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / f"{args.name}.json",
                      json.dumps({"runs": [[str(p) for p in r] for r in runs], "after_patch": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
