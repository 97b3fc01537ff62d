"""`evaluate`'s refusal summary: per true class, through the one refusal rule, and its terminal line."""

from __future__ import annotations

import numpy as np

from agripatch.engine.evaluate import refusal_summary
from agripatch.engine.reports import refusal_text
from agripatch.engine.scoring import Scored
from agripatch.pipeline.exits import ExitOutputs
from agripatch.pipeline.refusal import Refusal


def _scored(features, shares, labels) -> Scored:
    outputs = ExitOutputs(np.zeros((len(labels), 1, 3), np.float32), np.zeros(1, np.int64),
                          np.asarray(features, np.float64), np.asarray(shares, np.float32))
    return Scored(outputs, np.asarray(labels), [f"{i}.jpg" for i in range(len(labels))])


def test_refusals_are_counted_per_true_class_and_off_leaf_answers_pass_the_bare_rule():
    # distances 1, 9, 9, 25, 1: photo 3 is far; photos 1 and 2 are between the thresholds and bare
    refusal = Refusal(np.array([[0.0, 0.0]]), np.eye(2), 16.0, 0.5, near_threshold=4.0, min_plant_share=0.05)
    features = [[1.0, 0.0], [3.0, 0.0], [3.0, 0.0], [5.0, 0.0], [1.0, 0.0]]
    scored = _scored(features, [0.5, 0.01, 0.01, 0.9, 0.5], [0, 1, 2, 2, 0])
    pred, confidence = np.array([0, 1, 2, 2, 1]), np.array([0.9, 0.9, 0.9, 0.9, 0.4])
    summary = refusal_summary(refusal, scored, pred, confidence, ["leaf", "spot", "fruit"], off_leaf=[2])
    assert summary["per_class"] == {"leaf": {"photos": 2, "not_a_leaf": 0, "unsure": 1},
                                    "spot": {"photos": 1, "not_a_leaf": 1, "unsure": 0},
                                    "fruit": {"photos": 2, "not_a_leaf": 1, "unsure": 0}}  # photo 2: an off-leaf answer
    assert (summary["photos"], summary["not_a_leaf"], summary["unsure"]) == (5, 2, 1)
    assert summary["refused_fraction"] == 0.6 and summary["accuracy_all"] == 0.8 and summary["accuracy_accepted"] == 1.0
    assert refusal_text(summary) == ("refusal: 3 of 5 photos refused (60.0%: not_a_leaf 2, unsure 1); top-1 0.8000 on "
                                     "all, 1.0000 on the accepted; most refused: spot 1 of 1, fruit 1 of 2, leaf 1 of 2")
    without = refusal_summary(refusal, scored, pred, confidence, ["leaf", "spot", "fruit"])
    assert without["per_class"]["fruit"]["not_a_leaf"] == 2  # the bare rule for every answer
