"""Temperature scaling, ECE and the exit rules built on them: exact numbers on small arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agripatch.pipeline.calibration import (
    apply_temperature,
    ece_if_calibrated,
    expected_calibration_error,
    fit_temperature,
    fit_temperatures,
    reliability_bins,
    temper_stages,
)
from agripatch.pipeline.config import CascadeConfig
from agripatch.pipeline.exits import (
    ExitPolicy,
    ExitPolicyError,
    ExitOutputs,
    choose_thresholds,
    floor_thresholds,
    simulate_exits,
)


def _overconfident(n: int = 4000, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits whose true calibration temperature is 2: labels drawn from softmax(z / 2), model says softmax(z)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, size=(n, classes))
    true = np.exp(z / 2) / np.exp(z / 2).sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=p) for p in true])
    model = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return model, labels, true


def test_apply_temperature_is_softmax_of_scaled_logits():
    z = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    p = torch.softmax(torch.tensor(z), 1).numpy()
    expected = torch.softmax(torch.tensor(z) / 1.7, 1).numpy()
    np.testing.assert_allclose(apply_temperature(p, 1.7), expected, rtol=1e-9)
    assert apply_temperature(p, 1.0) is p
    np.testing.assert_array_equal(apply_temperature(p, 0.3).argmax(1), p.argmax(1))  # the ranking never changes


def test_fit_temperature_recovers_the_true_temperature():
    probs, labels, _ = _overconfident()
    assert fit_temperature(probs, labels) == pytest.approx(2.0, rel=0.1)


def test_fit_temperature_lowers_the_calibration_error():
    probs, labels, _ = _overconfident()
    before = expected_calibration_error(probs.max(1), probs.argmax(1) == labels)
    tempered = apply_temperature(probs, fit_temperature(probs, labels))
    after = expected_calibration_error(tempered.max(1), tempered.argmax(1) == labels)
    assert before > 0.05 and after < 0.02


def test_fit_temperature_nothing_to_fit_and_bad_shapes():
    assert fit_temperature(np.zeros((0, 3)), []) == 1.0
    with pytest.raises(ValueError, match="labels"):
        fit_temperature(np.full((4, 3), 1 / 3), [0, 1])


def test_fit_temperatures_one_per_exit_and_temper_stages():
    probs, labels, _ = _overconfident(n=800)
    stages = np.stack([probs, apply_temperature(probs, 2.0)], axis=1)  # exit 1 is already calibrated
    temperatures = fit_temperatures(stages, labels)
    assert temperatures[0] == pytest.approx(2.0, rel=0.15) and temperatures[1] == pytest.approx(1.0, rel=0.15)
    tempered = temper_stages(stages, temperatures)
    assert tempered.shape == stages.shape
    np.testing.assert_allclose(tempered[:, 0], apply_temperature(probs, temperatures[0]))
    assert temper_stages(stages, None) is stages
    with pytest.raises(ValueError, match="temperatures"):
        temper_stages(stages, [1.0])


def test_ece_exact_value_and_bins():
    conf = np.array([0.95, 0.95, 0.95, 0.95, 0.55, 0.55])
    correct = np.array([1, 1, 1, 0, 1, 0])
    # bin (0.933, 1]: conf 0.95, acc 0.75 -> gap 0.2 x 4; bin (0.533, 0.6]: 0.55 vs 0.5 -> 0.05 x 2
    assert expected_calibration_error(conf, correct) == pytest.approx((4 * 0.2 + 2 * 0.05) / 6)
    bins = reliability_bins(conf, correct)
    assert len(bins) == 15 and sum(b["photos"] for b in bins) == 6
    assert bins[14]["accuracy"] == 0.75 and bins[0]["photos"] == 0 and bins[0]["accuracy"] is None
    assert expected_calibration_error(np.array([]), np.array([])) == 0.0


def test_cascade_tempers_each_exit_like_apply_temperature():
    """The cascade core's exit probabilities (both backends) are the untempered ones tempered by apply_temperature."""
    from agripatch.pipeline.core import CascadeCore, softmax

    def core(config):
        return CascadeCore(config, None, np.zeros((1, 4)), np.zeros(2))

    logits = np.array([[2.0, -1.0, 0.5], [0.1, 0.2, 0.3]], np.float32)
    plain = core(CascadeConfig(k=1)).finish(logits, 1)
    np.testing.assert_array_equal(plain, softmax(logits))
    warm = core(CascadeConfig(k=1, temperatures=[2.5, 0.5]))
    np.testing.assert_allclose(warm.finish(logits, 1), apply_temperature(plain, 2.5), rtol=1e-5)
    means = core(CascadeConfig(k=1, aggregate="mean_probs", temperatures=[2.5, 0.5]))
    np.testing.assert_allclose(means.finish(softmax(logits), 1), apply_temperature(softmax(logits), 2.5), rtol=1e-5)


def test_config_checks_temperatures():
    with pytest.raises(ValueError, match="temperatures"):
        CascadeConfig(k=2, temperatures=[1.0, 1.0])
    with pytest.raises(ValueError, match="positive"):
        CascadeConfig(k=1, temperatures=[1.0, 0.0])
    assert CascadeConfig(k=1).temperature(1) == 1.0


def test_floor_thresholds_raises_every_exit_but_the_last():
    assert floor_thresholds([0.3, 0.6, 0.2, 0.1], 0.5) == [0.5, 0.6, 0.5, 0.1]
    assert floor_thresholds([0.3, 0.2], None) == [0.3, 0.2]


def _stage_outputs() -> tuple[ExitOutputs, np.ndarray]:
    probs = np.array([[[0.9, 0.1], [0.95, 0.05]],
                      [[0.55, 0.45], [0.2, 0.8]],
                      [[0.7, 0.3], [0.6, 0.4]]], dtype=np.float32)
    return ExitOutputs(probs, np.array([10, 30])), np.array([0, 1, 0])


def test_target_policy_needs_no_labels_and_respects_the_floor():
    outputs, labels = _stage_outputs()
    choice = choose_thresholds(ExitPolicy(target_confidence=0.8), 2, outputs)
    assert choice.thresholds == [0.8, 0.8] and choice.exit_histogram == [1, 2] and choice.accuracy is None
    assert "calibrated confidence 0.8" in choice.how
    floored = choose_thresholds(ExitPolicy(target_confidence=0.5), 2, outputs, labels, floor=0.6)
    assert floored.thresholds == [0.6, 0.5] and floored.exit_histogram == [2, 1]
    assert not ExitPolicy(target_confidence=0.9).needs_outputs
    with pytest.raises(ExitPolicyError, match="target confidence"):
        ExitPolicy(target_confidence=1.5)


def test_a_target_that_would_cost_more_than_the_full_image_model_is_lowered_to_fit():
    """The ceiling (the full-image model's MACs) lowers a target confidence to the highest shared threshold that
    fits; it leaves alone a target that fits, one no threshold can fit, the floor, and every other rule."""
    outputs, labels = _stage_outputs()  # exits cost 10 and 30; at 0.97 every photo reads both (mean 30)
    target = ExitPolicy(target_confidence=0.97)
    capped = choose_thresholds(target, 2, outputs, labels, ceiling_macs=25)
    assert capped.thresholds == pytest.approx([0.9, 0.9]) and capped.exit_histogram == [1, 2]
    assert capped.mean_macs == pytest.approx(70 / 3) and capped.accuracy == 1.0
    assert "lowered to 0.900" in capped.how and "0.000 GMACs" in capped.how
    assert choose_thresholds(target, 2, outputs, labels, ceiling_macs=30).thresholds == [0.97, 0.97]
    assert choose_thresholds(target, 2, outputs, labels, ceiling_macs=5).thresholds == [0.97, 0.97]  # below the glance
    floored = choose_thresholds(target, 2, outputs, labels, floor=0.95, ceiling_macs=25)  # unsure stays decided last
    assert floored.thresholds == [0.97, 0.97] and floored.mean_macs == 30
    given = choose_thresholds(ExitPolicy(thresholds=(0.99,)), 2, outputs, labels, ceiling_macs=15)
    assert given.thresholds == [0.99, 0.99]


def test_fit_calibration_keeps_a_target_within_the_full_image_model():
    """Training and `agripatch calibrate` pass the full-image model's MACs: the fitted exits spend at most that on
    the validation photos; without it the target stands."""
    from agripatch.engine.calibrate import fit_calibration
    from agripatch.recipes import RefusalConfig

    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=(200, 3)).astype(np.float32)  # unsure everywhere
    outputs, labels = ExitOutputs(probs, np.array([10, 40, 100])), rng.integers(0, 3, 200)
    free = fit_calibration(outputs, labels, ExitPolicy(target_confidence=0.97), 3, None, RefusalConfig(), [0.9] * 3)
    capped = fit_calibration(outputs, labels, ExitPolicy(target_confidence=0.97), 3, None, RefusalConfig(), [0.9] * 3,
                             ceiling_macs=60)
    assert free.thresholds == [0.97] * 3 and free.val_mean_macs > 60
    assert max(capped.thresholds) < 0.97 and capped.val_mean_macs <= 60 and "lowered" in capped.how
    assert capped.temperatures == free.temperatures


def test_budget_never_exits_below_the_floor():
    outputs, _ = _stage_outputs()
    choice = choose_thresholds(ExitPolicy(budget_gmacs=1e-9 * 20), 2, outputs, floor=0.6)
    assert choice.thresholds[0] >= 0.6
    pred, stage, macs = simulate_exits(outputs.probs, outputs.exit_macs, choice.thresholds)
    assert macs.mean() <= 20 and not ((stage == 0) & (outputs.probs[:, 0].max(1) < 0.6)).any()
    with pytest.raises(ExitPolicyError, match="cheapest possible prediction"):
        choose_thresholds(ExitPolicy(budget_gmacs=1e-9 * 12), 2, outputs, floor=0.95)


def test_a_perfect_validation_split_does_not_drive_the_temperature_to_zero():
    """Every photo right: the likelihood alone wants T -> 0 (confidence 1 everywhere); the prior stops it."""
    probs = np.tile([[0.9, 0.05, 0.05]], (40, 1))
    t = fit_temperature(probs, np.zeros(40, dtype=int))
    assert 0.2 < t < 1.0
    assert apply_temperature(probs, t).max() < 0.9999


def test_plant_share_is_the_mean_of_the_cells_leaf_share():
    """What the refusal rule reads as a photo's plant tissue: the leaf prior's cell shares, averaged."""
    from agripatch.models import create_anchornet
    from agripatch.pipeline.cascade import PatchPipeline
    from agripatch.pipeline.priors import leaf_share

    anchornet = create_anchornet("anchornet_lite0_s8", num_classes=2, pretrained=False, input_size=128)
    classifier = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2))
    pipe = PatchPipeline(anchornet, classifier, config=CascadeConfig(k=1, glance_size=128, patch_size=16),
                         classifier_mean=(0.5,) * 3, classifier_std=(0.5,) * 3)
    green = np.zeros((128, 128, 3), np.uint8)
    green[:, :64] = (40, 160, 40)
    located = pipe.locate([green])
    cells = anchornet.cell_boxes(128, 128)
    expected = leaf_share(torch.from_numpy(green).permute(2, 0, 1)[None].float() / 255, cells).mean()
    assert located.plant_share.shape == (1,) and float(located.plant_share[0]) == pytest.approx(float(expected))
    assert 0.3 < float(located.plant_share[0]) < 0.7


def test_ece_if_calibrated_is_zero_for_certain_answers_and_seeded():
    assert np.array_equal(ece_if_calibrated(np.ones(30), draws=50), np.zeros(50))  # confidence 1: always right
    a = ece_if_calibrated(np.full(40, 0.8), draws=100, seed=3)
    assert a.shape == (100,) and np.array_equal(a, ece_if_calibrated(np.full(40, 0.8), draws=100, seed=3))
    assert ece_if_calibrated(np.array([]), draws=7).shape == (7,)


def test_ece_if_calibrated_matches_the_binomial_expectation():
    # One bin (every confidence 0.5): the ECE is |0.5 - k / n| with k ~ Binomial(n, 0.5); its exact mean.
    from math import comb

    n = 20
    exact = sum(comb(n, k) * 0.5 ** n * abs(0.5 - k / n) for k in range(n + 1))
    draws = ece_if_calibrated(np.full(n, 0.5), draws=20000, seed=1)
    assert draws.mean() == pytest.approx(exact, abs=0.003)
    assert exact > 0.08  # 20 photos: a perfect model's ECE is far above a 0.03 target


def test_ece_if_calibrated_shrinks_with_more_photos():
    rng = np.random.default_rng(0)
    few, many = rng.uniform(0.6, 1.0, 50), rng.uniform(0.6, 1.0, 2000)
    assert ece_if_calibrated(many).mean() < ece_if_calibrated(few).mean() / 3
