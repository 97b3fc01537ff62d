"""Is configuration A really better than B? Paired comparisons on the same photos.

Two models scored on the same test photos (over one or more training seeds) are compared photo by photo:
the accuracy difference with a 95% bootstrap interval that resamples PHOTOS (all seeds of a photo stay
together, since seeds share photos and are not independent draws of them), and the exact McNemar test on
the photos where the two disagree. "Better" needs the interval to exclude zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PairedComparison", "mcnemar_exact", "paired_comparison"]


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts (A right and B wrong, and the reverse)."""
    from scipy.stats import binomtest

    n = int(only_a) + int(only_b)
    if n == 0:
        return 1.0
    return float(binomtest(int(only_a), n, 0.5).pvalue)


@dataclass
class PairedComparison:
    """A minus B on the same photos: mean accuracy difference, its 95% interval, and McNemar's test.

    ``only_a`` / ``only_b`` count (photo, seed) pairs one model gets right and the other wrong;
    ``p_mcnemar`` pools them over seeds (an approximation when seeds > 1; the interval is the criterion).
    """

    accuracy_a: float
    accuracy_b: float
    difference: float
    ci_low: float
    ci_high: float
    only_a: int
    only_b: int
    p_mcnemar: float
    photos: int
    seeds: int

    @property
    def verdict(self) -> str:
        """``A better``, ``B better`` or ``no difference shown`` from the interval."""
        if self.ci_low > 0:
            return "A better"
        if self.ci_high < 0:
            return "B better"
        return "no difference shown"


def paired_comparison(correct_a: np.ndarray, correct_b: np.ndarray, *, rounds: int = 10000,
                      seed: int = 0) -> PairedComparison:
    """Compare per-photo correctness arrays [seeds, photos] (or [photos]) of two models on the same photos."""
    a = np.atleast_2d(np.asarray(correct_a, dtype=np.float64))
    b = np.atleast_2d(np.asarray(correct_b, dtype=np.float64))
    if a.shape != b.shape:
        raise ValueError(f"correctness arrays differ in shape: {a.shape} vs {b.shape}")
    if a.size == 0:
        raise ValueError("no photos to compare")
    per_photo = (a - b).mean(axis=0)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, per_photo.size, size=(rounds, per_photo.size))
    means = per_photo[picks].mean(axis=1)
    only_a, only_b = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
    return PairedComparison(
        accuracy_a=float(a.mean()), accuracy_b=float(b.mean()), difference=float(per_photo.mean()),
        ci_low=float(np.quantile(means, 0.025)), ci_high=float(np.quantile(means, 0.975)),
        only_a=only_a, only_b=only_b, p_mcnemar=mcnemar_exact(only_a, only_b),
        photos=int(per_photo.size), seeds=int(a.shape[0]),
    )
