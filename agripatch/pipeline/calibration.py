"""Confidence that means what it says: per-exit temperature scaling and how far confidence is from accuracy.

Each exit of the cascade (the glance, then the mean of the glance and the first s patches) gets one
temperature, fitted on the validation photos by minimising the negative log-likelihood (Guo et al., "On
Calibration of Modern Neural Networks", ICML 2017). One number per exit cannot overfit a few hundred photos
the way a threshold chosen among twenty can, it never changes which class an exit predicts, and afterwards a
confidence of 0.9 is right about nine times in ten, so one target confidence can serve every exit, model and
dataset. Pure numpy (fitting, ECE, offline replay); the two cascades apply a temperature with the same
arithmetic in their own tensor library (their ``_finish``), and tests pin both to :func:`apply_temperature`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "ECE_BINS",
    "apply_temperature",
    "ece_if_calibrated",
    "expected_calibration_error",
    "fit_temperature",
    "fit_temperatures",
    "reliability_bins",
    "temper_stages",
]

#: Bins of the expected calibration error and the reliability diagram (equal width over 0..1).
ECE_BINS = 15

_LOG_T = np.linspace(np.log(0.05), np.log(20.0), 241)  # the temperatures tried: 0.05 .. 20, log-spaced


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)`` over the last axis: the same class ranking, sharper (T < 1) or
    softer (T > 1). For probabilities that are ``softmax(z)`` this is exactly ``softmax(z / T)``."""
    p = np.asarray(probs)
    if temperature == 1.0:
        return p
    logits = np.log(np.maximum(p.astype(np.float64), 1e-30)) / float(temperature)
    logits -= logits.max(axis=-1, keepdims=True)
    out = np.exp(logits)
    return (out / out.sum(axis=-1, keepdims=True)).astype(p.dtype if np.issubdtype(p.dtype, np.floating) else np.float64)


def _nll(log_probs: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    z = log_probs / temperature
    z = z - z.max(axis=1, keepdims=True)
    return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(labels)), labels]))


def fit_temperature(probs: np.ndarray, labels: Sequence[int] | np.ndarray) -> float:
    """The temperature in 0.05..20 that minimises the negative log-likelihood of ``labels`` under
    ``probs`` [N, C] (a fine log-spaced grid: the NLL is smooth and one-dimensional, no optimiser needed),
    with a standard normal prior on log T worth one photo: a validation split the exit gets entirely right
    (a few dozen lab photos) would otherwise drive T to its lower bound and every confidence to 1.
    1.0 when there is nothing to fit (no photos, or every photo already at probability 1)."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    if p.ndim != 2 or len(p) != len(y):
        raise ValueError(f"need probabilities [N, C] and N labels, got {p.shape} and {y.shape}")
    if len(y) == 0:
        return 1.0
    log_probs = np.log(np.maximum(p, 1e-30))
    losses = np.array([_nll(log_probs, y, float(np.exp(t))) + t * t / (2 * len(y)) for t in _LOG_T])
    best = int(np.argmin(losses))
    if np.allclose(losses, losses[best]):
        return 1.0
    return float(np.exp(_LOG_T[best]))


def fit_temperatures(stage_probs: np.ndarray, labels: Sequence[int] | np.ndarray) -> list[float]:
    """One temperature per exit of ``stage_probs`` [N, S, C] (:func:`fit_temperature` on each)."""
    probs = np.asarray(stage_probs)
    if probs.ndim != 3:
        raise ValueError(f"stage_probs must be [N, S, C], got shape {probs.shape}")
    return [fit_temperature(probs[:, s], labels) for s in range(probs.shape[1])]


def temper_stages(stage_probs: np.ndarray, temperatures: Sequence[float] | None) -> np.ndarray:
    """``stage_probs`` [N, S, C] with exit s tempered by ``temperatures[s]`` (unchanged when None)."""
    probs = np.asarray(stage_probs)
    if temperatures is None:
        return probs
    if len(temperatures) != probs.shape[1]:
        raise ValueError(f"need {probs.shape[1]} temperatures, got {len(temperatures)}")
    return np.stack([apply_temperature(probs[:, s], t) for s, t in enumerate(temperatures)], axis=1)


def _bin_index(confidences: np.ndarray, bins: int) -> np.ndarray:
    """Each confidence's equal-width bin: (lo, hi], with 0 joining the first bin."""
    return np.clip(np.ceil(confidences * bins).astype(np.int64) - 1, 0, bins - 1)


def reliability_bins(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin: its range, photo count, mean confidence and accuracy (empty bins kept,
    with None, so a diagram shows where no photo fell)."""
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    hit = np.asarray(correct, dtype=np.float64).reshape(-1)
    index = _bin_index(conf, bins)
    out = []
    for b in range(bins):
        mask = index == b
        n = int(mask.sum())
        out.append({"low": b / bins, "high": (b + 1) / bins, "photos": n,
                    "confidence": float(conf[mask].mean()) if n else None,
                    "accuracy": float(hit[mask].mean()) if n else None})
    return out


def expected_calibration_error(confidences: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error: the photo-weighted mean gap between confidence and accuracy over
    ``bins`` equal-width bins (0 = every confidence is the accuracy it promises)."""
    table = reliability_bins(confidences, correct, bins)
    n = sum(b["photos"] for b in table)
    if n == 0:
        return 0.0
    return float(sum(b["photos"] * abs(b["confidence"] - b["accuracy"]) for b in table if b["photos"]) / n)


def ece_if_calibrated(confidences: np.ndarray, bins: int = ECE_BINS, draws: int = 2000, seed: int = 0) -> np.ndarray:
    """The ECEs a perfectly calibrated model would show with these ``confidences``: ``draws`` times, each photo
    is right with probability equal to its confidence ("consistency resampling", Bröcker and Smith, Weather and
    Forecasting 2007). On a few dozen photos even a perfect model's ECE is several points, so a measured ECE is
    read against this spread, not against zero. Returns the [draws] ECEs (seeded: the same photos give the
    same spread)."""
    conf = np.asarray(confidences, dtype=np.float64).reshape(-1)
    if len(conf) == 0:
        return np.zeros(draws)
    index = _bin_index(conf, bins)
    members = np.zeros((len(conf), bins))
    members[np.arange(len(conf)), index] = 1.0
    hits = (np.random.default_rng(seed).random((draws, len(conf))) < conf).astype(np.float64)
    return np.abs(conf @ members - hits @ members).sum(axis=1) / len(conf)  # sum over bins of |conf - hits|
