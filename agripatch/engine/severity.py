"""How well a leaf's symptom share is measured, and the severity class it implies (issue 25), torch-free.

BRACOL grades a coffee leaf by the share of its area with symptoms into five classes (healthy, very low, low,
high, very high). A symptom map (:mod:`agripatch.models.symptom_map`) measures the share; this module turns a
share into a class with cut-points (:class:`SeverityBins`, fitted by :func:`fit_bins` on training leaves whose
class and share are both known, never on test leaves) and scores both against the truth: the share by its mean
absolute error and Lin's concordance correlation coefficient (agreement with the identity line, not only
correlation), the class by accuracy and a confusion matrix. Intervals resample photos (:func:`bootstrap_ci`),
keeping a photo's training seeds together, as :mod:`agripatch.engine.stats` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agripatch.pipeline.severity import SEVERITY_NAMES, SeverityBins

__all__ = [
    "SEVERITY_NAMES",
    "TRUTH_FILE",
    "SeverityBins",
    "ShareCorrection",
    "bootstrap_ci",
    "confusion",
    "fit_bins",
    "lins_ccc",
    "mean_absolute_error",
    "read_severity_truth",
    "severity_report",
    "severity_accuracy",
]

def fit_bins(shares: Sequence[float] | np.ndarray, classes: Sequence[int] | np.ndarray, n_classes: int = 5,
             source: str = "fitted") -> SeverityBins:
    """The ordered cut-points that classify the most of these leaves right (exact, by dynamic programming).

    Cuts fall midway between consecutive distinct shares (below the smallest share: at it; above the largest:
    ``inf``, an empty top class); among equally accurate cut sets the one found first (lowest cuts) is kept.
    """
    shares = np.asarray(shares, dtype=np.float64)
    classes = np.asarray(classes, dtype=np.int64)
    if shares.shape != classes.shape or shares.ndim != 1 or shares.size == 0:
        raise ValueError(f"need two equal-length non-empty 1-d arrays, got {shares.shape} and {classes.shape}")
    if classes.min() < 0 or classes.max() >= n_classes:
        raise ValueError(f"classes must be in 0..{n_classes - 1}")
    values, index = np.unique(shares, return_inverse=True)
    m = len(values)
    counts = np.zeros((n_classes, m), dtype=np.int64)
    np.add.at(counts, (classes, index), 1)
    prefix = np.concatenate([np.zeros((n_classes, 1), np.int64), counts.cumsum(axis=1)], axis=1)  # [K, m + 1]
    # best[k][t]: most leaves right with classes 0..k placed below position t (class k ends at t)
    best = np.empty((n_classes, m + 1), dtype=np.int64)
    start = np.zeros((n_classes, m + 1), dtype=np.int64)  # where class k begins in that best placement
    best[0] = prefix[0]
    for k in range(1, n_classes):
        run_value, run_arg = None, 0
        for t in range(m + 1):
            candidate = best[k - 1][t] - prefix[k][t]
            if run_value is None or candidate > run_value:
                run_value, run_arg = candidate, t
            best[k][t] = prefix[k][t] + run_value
            start[k][t] = run_arg
    positions, t = [], m
    for k in range(n_classes - 1, 0, -1):
        t = int(start[k][t])
        positions.append(t)
    positions.reverse()
    cuts = []
    for t in positions:
        if t == 0:
            cuts.append(float(values[0]))
        elif t == m:
            cuts.append(float("inf"))
        else:
            cuts.append(float((values[t - 1] + values[t]) / 2))
    return SeverityBins(tuple(cuts), source)


@dataclass(frozen=True)
class ShareCorrection:
    """A straight-line correction of measured shares (``slope * share + intercept``, never below 0), fitted on
    validation leaves whose mask shares are known: a symptom map that compresses large shares keeps their order,
    so one line restores their scale without touching the test leaves."""

    slope: float = 1.0
    intercept: float = 0.0

    @classmethod
    def fit(cls, predicted: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> ShareCorrection:
        """Least squares of the true shares on the predicted ones (identity when they do not vary)."""
        x, y = np.asarray(predicted, np.float64), np.asarray(true, np.float64)
        if x.size < 2 or float(np.var(x)) == 0.0:
            return cls()
        slope, intercept = np.polyfit(x, y, 1)
        return cls(float(slope), float(intercept))

    def __call__(self, shares: Sequence[float] | np.ndarray) -> np.ndarray:
        return np.maximum(self.slope * np.asarray(shares, np.float64) + self.intercept, 0.0)


def severity_accuracy(true: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray) -> float:
    """Share of leaves whose predicted class is the true one."""
    true, pred = np.asarray(true), np.asarray(pred)
    if true.shape != pred.shape or true.size == 0:
        raise ValueError("need two equal-length non-empty class arrays")
    return float((true == pred).mean())


def confusion(true: Sequence[int] | np.ndarray, pred: Sequence[int] | np.ndarray, n_classes: int = 5) -> np.ndarray:
    """Confusion matrix ``[true, predicted]`` over classes ``0..n_classes-1`` (sklearn's, every class a row)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(np.asarray(true), np.asarray(pred), labels=list(range(n_classes)))


def mean_absolute_error(true: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> float:
    """Mean absolute difference (in the inputs' unit: share points when shares are percent)."""
    true, pred = np.asarray(true, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if true.shape != pred.shape or true.size == 0:
        raise ValueError("need two equal-length non-empty arrays")
    return float(np.abs(true - pred).mean())


def lins_ccc(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Lin's concordance correlation coefficient (Lin 1989), population moments:
    ``2 cov(x, y) / (var x + var y + (mean x - mean y)^2)``; 1 only when ``y == x``; NaN when both are the same
    constant (0 / 0)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.size < 2:
        raise ValueError("need two equal-length 1-d arrays of at least 2 values")
    mx, my = x.mean(), y.mean()
    cov = ((x - mx) * (y - my)).mean()
    denominator = x.var() + y.var() + (mx - my) ** 2
    return float(2 * cov / denominator) if denominator > 0 else float("nan")


def bootstrap_ci(statistic: Callable[..., float], *arrays: np.ndarray, rounds: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over photos resampled with replacement.

    Each array is ``[photos]`` or ``[seeds, photos]`` (the same photos in every array); a resample draws photo
    indices once and applies them to every array and seed, the statistic is computed per seed and averaged
    over seeds (seeds are not independent draws of photos, so they are never resampled apart).
    """
    arrays2 = [np.atleast_2d(np.asarray(a)) for a in arrays]
    photos = arrays2[0].shape[1]
    if any(a.shape[1] != photos for a in arrays2) or photos == 0:
        raise ValueError("every array needs the same (non-zero) number of photos on its last axis")
    seeds = max(a.shape[0] for a in arrays2)
    arrays2 = [np.broadcast_to(a, (seeds, photos)) for a in arrays2]
    rng = np.random.default_rng(seed)
    values = np.empty(rounds)
    for r in range(rounds):
        pick = rng.integers(0, photos, size=photos)
        values[r] = np.mean([statistic(*(a[s, pick] for a in arrays2)) for s in range(seeds)])
    alpha = (1 - level) / 2
    return float(np.nanquantile(values, alpha)), float(np.nanquantile(values, 1 - alpha))


#: The file `evaluate` reads a dataset's true severity from: ``DATA/severity.csv`` with ``path`` and ``severity``
#: (class index or name) and, optionally, ``share`` (percent of the leaf with symptoms, e.g. from masks).
TRUTH_FILE = "severity.csv"


def read_severity_truth(path: Path, names: Sequence[str]) -> dict[str, tuple[int, float | None]]:
    """True severity by photo path from a ``severity.csv`` (see :data:`TRUTH_FILE`): (class index, share or None).

    Raises :class:`~agripatch.errors.DatasetError` naming the file and the row when a class is neither an index
    below ``len(names)`` nor one of ``names``.
    """
    import csv

    from agripatch.errors import DatasetError

    truth: dict[str, tuple[int, float | None]] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not {"path", "severity"} <= set(reader.fieldnames or []):
            raise DatasetError(f"{path} needs the columns path and severity (it has {reader.fieldnames})")
        for line, row in enumerate(reader, start=2):
            value = str(row["severity"]).strip()
            index = int(value) if value.isdigit() else (list(names).index(value) if value in names else -1)
            if not 0 <= index < len(names):
                raise DatasetError(f"{path} line {line}: severity {value!r} is not one of 0..{len(names) - 1} or "
                                   f"{', '.join(names)}")
            share = row.get("share")
            truth[row["path"]] = (index, float(share) if share not in (None, "") else None)
    return truth


def severity_report(shares: Sequence[float], predicted: Sequence[int], paths: Sequence[str], names: Sequence[str],
                    truth: dict[str, tuple[int, float | None]] | None = None) -> dict:
    """`evaluate`'s severity: the predicted shares and classes, and against ``truth`` (by path) the class accuracy
    with its 95% interval over photos, the confusion matrix ``[true][predicted]``, and, where true shares are known,
    the shares' mean absolute error and Lin's concordance."""
    shares, predicted = np.asarray(shares, np.float64), np.asarray(predicted, np.int64)
    report: dict = {"photos": int(shares.size), "mean_share": float(shares.mean()) if shares.size else None,
                    "classes": {name: int((predicted == i).sum()) for i, name in enumerate(names)}}
    matched = [i for i, path in enumerate(paths) if truth and str(path) in truth]
    if not matched:
        return report
    true = np.array([truth[str(paths[i])][0] for i in matched])
    pred = predicted[matched]
    report["labelled"] = {"photos": len(matched), "accuracy": severity_accuracy(true, pred),
                          "accuracy_ci95": list(bootstrap_ci(lambda t, p: float((t == p).mean()), true, pred)),
                          "confusion": confusion(true, pred, len(names)).tolist(), "names": list(names)}
    with_share = [(truth[str(paths[i])][1], shares[i]) for i in matched if truth[str(paths[i])][1] is not None]
    if len(with_share) >= 2:
        t, p = np.array(with_share).T
        report["labelled"].update(share_photos=len(with_share), share_mae=mean_absolute_error(t, p),
                                  share_ccc=lins_ccc(t, p))
    return report
