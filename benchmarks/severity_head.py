"""Can more of the symptom map than its share classify BRACOL severity? A learned head on the map's statistics
against the cut-points on its share (issue 25: severity class >= 88% on the 285 `leaf/` test leaves).

    python -m benchmarks.severity_head

Every `leaf/` photo is read by the shipped map as the cascade reads it (:func:`benchmarks.severity_side.map_logits_at`,
at :data:`~agripatch.pipeline.severity.SHIPPED_SIDE`). Per leaf: the share, the hard (argmax) share, quantiles of
the symptom probability over the leafy cells, the share of leafy cells above several probabilities, and the leafy
area. A multinomial logistic regression (scikit-learn, standardised features) is fitted on the 1,192 TRAIN leaves,
its regularisation chosen on the 208 VALIDATION leaves (ties: the strongest), and scored once on the TEST leaves,
paired against the cut-points fitted on the same TRAIN leaves' shares (what the package does). Also reported: the
same head given each leaf's true stress (an upper bound for a head that knows the disease). Writes
benchmarks/results/severity/head.json.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np

from benchmarks.severity_side import LEAF, OUT, map_logits_at

STRENGTHS = (0.1, 1.0, 10.0)  # the logistic regression's C, strongest regularisation first


def map_features(logits: np.ndarray) -> list[float]:
    """What a head may read of one leaf's map [3, gh, gw]: its share (and log), the hard share, the symptom
    probability's quantiles over the leafy cells, the share of leafy cells above 0.1 .. 0.9, the leafy area."""
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    _, leaf, symptom = e / e.sum(axis=0, keepdims=True)
    share = 100 * symptom.sum() / max(leaf.sum() + symptom.sum(), 1e-9)
    leafy = (leaf + symptom) > 0.5
    within = symptom[leafy] / np.maximum(leaf[leafy] + symptom[leafy], 1e-6) if leafy.any() else np.zeros(1)
    hard = np.argmax(logits, axis=0)
    hard_share = 100 * (hard == 2).sum() / max((hard >= 1).sum(), 1)
    above = [float(np.mean(within > t)) for t in (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)]
    return [share, np.log(share + 0.1), hard_share, np.log(hard_share + 0.1), float(leafy.mean()),
            *np.quantile(within, [0.5, 0.75, 0.9, 0.95, 0.99]), float(within.max()), *above,
            *[float(np.log(a + 1e-3)) for a in above[::2]]]


def _head(strength: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=5000))


def _chosen(x: dict, y: dict) -> tuple[float, dict[str, float]]:
    """The C chosen on validation leaves (the strongest among the best), and every C's validation accuracy."""
    scores = {c: float(_head(c).fit(x["train"], y["train"]).score(x["val"], y["val"])) for c in STRENGTHS}
    return max(scores, key=lambda c: (scores[c], -c)), {str(c): v for c, v in scores.items()}


def main() -> None:
    """Read every leaf, fit the cuts and the heads on TRAIN, choose on VAL, score on TEST, write the JSON."""
    from agripatch.engine.severity import fit_bins
    from agripatch.engine.stats import paired_comparison
    from agripatch.pipeline.severity import SHIPPED_SIDE

    with open(LEAF / "severity.csv", newline="") as handle:
        rows = sorted(csv.DictReader(handle), key=lambda r: r["path"])
    logits = map_logits_at(SHIPPED_SIDE, [LEAF / r["path"] for r in rows])
    stresses = sorted({r["label"] for r in rows})
    x, y, stress = {}, {}, {}
    for split in ("train", "val", "test"):
        chosen = [i for i, r in enumerate(rows) if r["split"] == split]
        x[split] = np.array([map_features(logits[i]) for i in chosen])
        y[split] = np.array([int(rows[i]["severity"]) for i in chosen])
        stress[split] = np.eye(len(stresses))[[stresses.index(rows[i]["label"]) for i in chosen]]
    bins = fit_bins(x["train"][:, 0], y["train"])
    cuts = {split: bins.classify(x[split][:, 0]) == y[split] for split in ("val", "test")}
    result = {"side": SHIPPED_SIDE, "leaves": {k: len(v) for k, v in y.items()},
              "cuts": {"cuts": list(bins.cuts), "val": float(cuts["val"].mean()), "test": float(cuts["test"].mean())}}
    with_stress = {k: np.hstack([x[k], stress[k]]) for k in x}
    for name, features in (("map head", x), ("map head + true stress", with_stress)):
        strength, val_scores = _chosen(features, y)
        right = _head(strength).fit(features["train"], y["train"]).predict(features["test"]) == y["test"]
        c = paired_comparison(right[None].astype(float), cuts["test"][None].astype(float))
        result[name] = {"C": strength, "val_by_C": val_scores, "val": val_scores[str(strength)],
                        "test": float(right.mean()), "vs_cuts_points": 100 * c.difference,
                        "vs_cuts_ci95_points": [100 * c.ci_low, 100 * c.ci_high], "gained": c.only_a, "lost": c.only_b}
        print(f"{name}: C {strength}, val {val_scores[str(strength)]:.4f}, test {right.mean():.4f} (cuts "
              f"{cuts['test'].mean():.4f}; {100 * c.difference:+.2f} [{100 * c.ci_low:+.2f}, {100 * c.ci_high:+.2f}])")
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "head.json"
    path.with_suffix(".json.tmp").write_text(json.dumps(result, indent=1) + "\n")
    path.with_suffix(".json.tmp").replace(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
