"""Severity metrics: Lin's CCC, MAE, bins (edges and exact fitting), accuracy, confusion, photo bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agripatch.engine.severity import (
    SEVERITY_NAMES,
    SeverityBins,
    bootstrap_ci,
    confusion,
    fit_bins,
    lins_ccc,
    mean_absolute_error,
    severity_accuracy,
)


def test_ccc_of_identical_vectors_is_one():
    x = np.array([0.0, 1.5, 2.0, 7.0, 30.0])
    assert lins_ccc(x, x) == pytest.approx(1.0, abs=1e-15)


def test_ccc_hand_computed_shift():
    # x = 1,2,3 and y = x + 1: cov = var = 2/3, mean gap 1 -> 2 (2/3) / (2/3 + 2/3 + 1) = 4/7
    assert lins_ccc([1, 2, 3], [2, 3, 4]) == pytest.approx(4 / 7, abs=1e-15)


def test_ccc_hand_computed_scale():
    # x = 0..3, y = 2x: var x 1.25, var y 5, cov 2.5, means 1.5 and 3 -> 5 / (1.25 + 5 + 2.25) = 10/17
    assert lins_ccc([0, 1, 2, 3], [0, 2, 4, 6]) == pytest.approx(10 / 17, abs=1e-15)


def test_ccc_reversed_is_minus_one_and_constant_is_nan():
    assert lins_ccc([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0, abs=1e-15)
    assert math.isnan(lins_ccc([2, 2], [2, 2]))
    with pytest.raises(ValueError):
        lins_ccc([1.0], [1.0])


def test_mae():
    assert mean_absolute_error([0, 2, 10], [1, 2, 7]) == pytest.approx(4 / 3, abs=1e-15)


def test_bins_edges_go_to_the_upper_class():
    bins = SeverityBins((1.0, 5.0, 10.0, 15.0))
    shares = [0.0, 0.999, 1.0, 4.99, 5.0, 9.99, 10.0, 15.0, 100.0]
    assert bins.classify(shares).tolist() == [0, 0, 1, 1, 2, 2, 3, 4, 4]
    assert bins.n_classes == 5 == len(SEVERITY_NAMES)
    with pytest.raises(ValueError):
        SeverityBins((5.0, 1.0))


def test_fit_bins_separable_cuts_at_midpoints():
    shares = [0, 0, 2, 3, 7, 8, 12, 20]
    classes = [0, 0, 1, 1, 2, 2, 3, 4]
    bins = fit_bins(shares, classes, source="toy")
    assert bins.cuts == (1.0, 5.0, 10.0, 16.0)
    assert bins.source == "toy"
    assert severity_accuracy(classes, bins.classify(shares)) == 1.0


def test_fit_bins_overlap_is_exact_optimum():
    # class 1 at 1, 2, 6 and class 2 at 4, 5: cutting at 3 misses only the 6 (cutting above 6 would miss 4 and 5);
    # the optimum is checked against brute force over every pair of cuts.
    shares = np.array([0.0, 1, 2, 6, 4, 5])
    classes = np.array([0, 1, 1, 1, 2, 2])
    bins = fit_bins(shares, classes, n_classes=3)
    got = severity_accuracy(classes, bins.classify(shares))
    cands = [-1.0] + sorted(set(shares.tolist())) + [99.0]
    brute = max(severity_accuracy(classes, np.searchsorted([a, b], shares, side="right"))
                for a in cands for b in cands if a <= b)
    assert got == brute == pytest.approx(5 / 6)
    assert bins.cuts == (0.5, 3.0)


def test_fit_bins_empty_top_class_gets_infinite_cut():
    bins = fit_bins([0, 1, 2], [0, 1, 2], n_classes=4)
    assert bins.cuts == (0.5, 1.5, float("inf"))


def test_confusion_rows_are_true_classes():
    cm = confusion([0, 1, 1, 4], [0, 2, 1, 4])
    assert cm.shape == (5, 5)
    assert cm[1, 2] == 1 and cm[1, 1] == 1 and cm[0, 0] == 1 and cm[4, 4] == 1 and cm.sum() == 4


def test_bootstrap_keeps_seeds_together_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    truth = rng.uniform(0, 20, 60)
    pred = np.stack([truth + rng.normal(0, 1, 60) for _ in range(3)])  # [seeds, photos]
    low, high = bootstrap_ci(mean_absolute_error, truth, pred, rounds=300)
    point = np.mean([mean_absolute_error(truth, p) for p in pred])
    assert low < point < high
    # identical seeds: the interval equals the one-seed interval
    one = bootstrap_ci(lins_ccc, truth, pred[0], rounds=200)
    three = bootstrap_ci(lins_ccc, truth, np.stack([pred[0]] * 3), rounds=200)
    assert one == pytest.approx(three)


def test_share_correction_fits_a_line_on_validation_leaves_and_never_goes_below_zero():
    from agripatch.engine.severity import ShareCorrection

    line = ShareCorrection.fit([1.0, 2.0, 3.0], [2.5, 4.5, 6.5])  # true = 2 x predicted + 0.5
    assert line.slope == pytest.approx(2.0) and line.intercept == pytest.approx(0.5)
    np.testing.assert_allclose(line([0.0, 10.0, -1.0]), [0.5, 20.5, 0.0])
    assert ShareCorrection.fit([3.0, 3.0], [1.0, 5.0]) == ShareCorrection()  # no spread: identity
