"""evaluate's calibration summary: the ECE read against what a perfectly calibrated model shows on as many photos."""

from __future__ import annotations

import numpy as np

from agripatch.engine.evaluate import calibration_summary
from agripatch.engine.reports import calibration_text


def test_an_overconfident_model_is_beyond_chance_and_a_calibrated_one_is_not():
    rng = np.random.default_rng(0)
    conf = rng.uniform(0.7, 1.0, 300)
    calibrated = calibration_summary(conf, rng.random(300) < conf)
    overconfident = calibration_summary(np.full(300, 0.99), rng.random(300) < 0.8)
    assert calibrated["ece_if_calibrated"]["p_value"] > 0.05
    assert overconfident["ece_if_calibrated"]["p_value"] == 0.0
    assert overconfident["ece"] > overconfident["ece_if_calibrated"]["p95"]
    assert "beyond chance" in calibration_text(overconfident) and "within what chance" in calibration_text(calibrated)


def test_few_photos_put_a_perfect_models_ece_far_from_zero():
    conf = np.full(49, 0.93)  # a high-res test split: 49 leaves at the confidence these models give
    summary = calibration_summary(conf, np.arange(49) < 46)  # 46 / 49 right: 0.939, close to the promise
    assert summary["ece"] < 0.01 + summary["ece_if_calibrated"]["mean"]
    assert summary["ece_if_calibrated"]["mean"] > 0.02 and summary["ece_if_calibrated"]["p_value"] > 0.5
