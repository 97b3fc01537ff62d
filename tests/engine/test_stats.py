"""Paired comparisons: exact McNemar numbers and bootstrap intervals that include or exclude zero."""

from __future__ import annotations

import numpy as np
import pytest

from agripatch.engine.stats import mcnemar_exact, paired_comparison


def test_mcnemar_exact_matches_the_binomial_tail():
    # 0 vs 6 discordant: p = 2 * 0.5**6 = 0.03125; 1 vs 1: 1.0; nothing discordant: 1.0
    assert mcnemar_exact(0, 6) == pytest.approx(0.03125)
    assert mcnemar_exact(6, 0) == pytest.approx(0.03125)
    assert mcnemar_exact(1, 1) == pytest.approx(1.0)
    assert mcnemar_exact(0, 0) == 1.0


def test_identical_models_show_no_difference():
    correct = np.random.default_rng(0).integers(0, 2, (3, 200))
    result = paired_comparison(correct, correct)
    assert result.difference == 0 and result.ci_low == 0 and result.ci_high == 0
    assert result.only_a == result.only_b == 0 and result.verdict == "no difference shown"


def test_a_clearly_better_excludes_zero():
    b = np.zeros((2, 300))
    a = b.copy()
    a[:, :60] = 1  # A right on 60 photos more, in both seeds
    result = paired_comparison(a, b)
    assert result.difference == pytest.approx(0.2)
    assert result.ci_low > 0.1 and result.verdict == "A better"
    assert result.only_a == 120 and result.only_b == 0 and result.seeds == 2 and result.photos == 300


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError):
        paired_comparison(np.ones(3), np.ones(4))
