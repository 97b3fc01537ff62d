"""The refusal rule: exact distances, quantile thresholds, decisions, and a round trip through plain data."""

from __future__ import annotations

import numpy as np
import pytest

from agripatch.pipeline.refusal import NOT_A_LEAF, UNSURE, Refusal, distance_threshold, fit_refusal


def test_distances_are_the_smallest_mahalanobis_to_a_class_mean():
    refusal = Refusal(np.array([[0.0, 0.0], [10.0, 0.0]]), np.diag([1.0, 4.0]), 5.0, 0.5)
    d = refusal.distances(np.array([[1.0, 1.0], [9.0, 0.0], [5.0, 0.0]]))
    np.testing.assert_allclose(d, [1 + 4, 1, 25])


def test_decisions_refuse_far_photos_and_doubtful_ones():
    refusal = Refusal(np.array([[0.0, 0.0], [10.0, 0.0]]), np.eye(2), 4.0, 0.6)
    features = np.array([[0.5, 0.0], [5.0, 5.0], [9.5, 0.0]])
    assert refusal.decide(features, np.array([0.9, 0.99, 0.4])) == [None, NOT_A_LEAF, UNSURE]


def test_fit_sets_thresholds_from_validation_quantiles():
    rng = np.random.default_rng(0)
    x = np.r_[rng.normal(0, 1, (200, 4)), rng.normal(6, 1, (200, 4))]
    y = np.r_[np.zeros(200), np.ones(200)].astype(int)
    val = np.r_[rng.normal(0, 1, (100, 4)), rng.normal(6, 1, (100, 4))]
    conf = np.linspace(0.2, 1.0, 200)
    refusal = fit_refusal(x, y, val, conf, distance_quantile=0.95, confidence_quantile=0.05)
    assert refusal.distance_threshold == pytest.approx(distance_threshold(refusal.distances(val), 0.95))
    assert np.mean(refusal.distances(val) > refusal.distance_threshold) <= 0.05
    # 5% of new photos: 9 of the 200 validation photos refused ((9 + 1) / 201 <= 0.05), all under 1/2
    assert refusal.confidence_threshold == pytest.approx(conf[9])
    far = rng.normal(30, 1, (50, 4))
    assert all(d == NOT_A_LEAF for d in refusal.decide(far, np.ones(50)))
    assert refusal.fitted["train_photos"] == 400 and refusal.fitted["val_photos"] == 200


def test_round_trip_through_plain_data():
    refusal = Refusal(np.array([[1.0, 2.0]]), np.eye(2), 3.0, 0.4, {"train_photos": 7})
    back = Refusal.from_stored(refusal.to_stored())
    np.testing.assert_array_equal(back.class_means, refusal.class_means)
    assert back.distance_threshold == 3.0 and back.confidence_threshold == 0.4 and back.fitted == {"train_photos": 7}


def test_fit_needs_two_classes_and_validation_photos():
    with pytest.raises(ValueError):
        fit_refusal(np.zeros((4, 2)), np.zeros(4, int), np.zeros((2, 2)), np.ones(2))


def test_unsure_threshold_refuses_only_what_is_more_likely_wrong_within_the_budget():
    from agripatch.pipeline.refusal import UNSURE_CONFIDENCE, unsure_threshold

    conf = np.array([0.30, 0.40, 0.90, 0.95, 0.97, 0.99] * 20)  # 120 validation photos
    wrong_low = np.array([False, False, True, True, True, True] * 20)  # the least sure photos are the errors
    # Budget 40%: both groups under 1/2 fit (40 photos; 41/121 of new ones) -> the cut-off is 1/2 itself.
    assert unsure_threshold(conf, wrong_low, 0.4) == pytest.approx(UNSURE_CONFIDENCE)
    # Budget 20%: at most 23 validation photos (24/121 <= 0.2): only the 0.30 group, so the cut sits at 0.40.
    assert unsure_threshold(conf, wrong_low, 0.2) == pytest.approx(0.40)
    # The least sure photos are right: refusing them would lower the accuracy of the rest -> never unsure.
    assert unsure_threshold(conf, ~wrong_low, 0.4) == 0.0
    # Confident photos are never refused, however many are wrong: above 1/2 refusing costs more than it saves.
    assert unsure_threshold(np.full(120, 0.8), np.zeros(120, bool), 0.4) <= UNSURE_CONFIDENCE
    # Under 1 / budget - 1 validation photos nothing can be promised: never unsure.
    assert unsure_threshold(np.full(50, 0.1), np.zeros(50, bool), 0.01) == 0.0


def test_unsure_threshold_refuses_at_most_the_budget_of_new_photos():
    from agripatch.pipeline.refusal import unsure_threshold

    # Confidences uniform on (0, 1): a new photo is refused with probability equal to the cut-off, so the mean
    # cut-off over many validation splits is the expected share of new photos refused: (1 + 1) / (199 + 1).
    rng = np.random.default_rng(0)
    cuts = [unsure_threshold(rng.uniform(size=199), None, 0.01) for _ in range(4000)]
    assert np.mean(cuts) == pytest.approx(0.01, abs=0.0008)


def test_distance_threshold_is_the_log_normal_quantile():
    rng = np.random.default_rng(1)
    d = np.exp(rng.normal(3.0, 0.5, 20000))
    assert distance_threshold(d, 0.99) == pytest.approx(np.exp(3.0 + 2.3263 * 0.5), rel=0.02)
    assert distance_threshold(np.full(5, 7.0), 0.99) == pytest.approx(7.0)


def test_distance_threshold_ignores_a_few_outlying_validation_photos():
    rng = np.random.default_rng(2)
    clean = np.exp(rng.normal(3.0, 0.4, 93))
    spoiled = np.r_[clean[:-2], 300.0, 400.0]  # two odd photos, as on iBean's 93-photo validation split
    assert distance_threshold(spoiled, 0.99) == pytest.approx(distance_threshold(clean, 0.99), rel=0.05)
    assert np.quantile(spoiled, 0.99) > 1.5 * distance_threshold(spoiled, 0.99)  # the empirical one is not robust


@pytest.mark.parametrize("bad", [dict(distances=np.array([]), quantile=0.99), dict(distances=np.ones(3), quantile=1.0)])
def test_distance_threshold_rejects_bad_input(bad):
    with pytest.raises(ValueError):
        distance_threshold(**bad)


def test_somewhat_far_photos_without_plant_tissue_are_not_a_leaf():
    """Between the near and the far threshold only a bare photo (plant share below the minimum) is refused."""
    refusal = Refusal(np.array([[0.0, 0.0]]), np.eye(2), 16.0, 0.0, near_threshold=4.0, min_plant_share=0.05)
    features = np.array([[1.0, 0.0], [3.0, 0.0], [3.0, 0.0], [5.0, 0.0]])  # distances 1, 9, 9, 25
    shares = np.array([0.0, 0.5, 0.01, 0.9])
    assert refusal.decide(features, np.ones(4), shares) == [None, None, NOT_A_LEAF, NOT_A_LEAF]
    assert refusal.decide(features, np.ones(4)) == [None, None, None, NOT_A_LEAF]  # shares unknown: distance only
    assert refusal.judge(features[2], 1.0, 0.01)[0] == NOT_A_LEAF and refusal.judge(features[2], 1.0, 0.5)[0] is None


def test_photos_answered_with_an_off_leaf_class_are_not_held_to_the_plant_share():
    """A berry on straw holds no green: answered with an off-leaf class it passes the bare rule, not the far one."""
    refusal = Refusal(np.array([[0.0, 0.0]]), np.eye(2), 16.0, 0.0, near_threshold=4.0, min_plant_share=0.05)
    features = np.array([[3.0, 0.0], [3.0, 0.0], [5.0, 0.0], [3.0, 0.0]])  # distances 9, 9, 25, 9
    shares, labels = np.array([0.01, 0.01, 0.01, 0.5]), np.array([2, 0, 2, 0])
    assert refusal.decide(features, np.ones(4), shares, labels, [2]) == [None, NOT_A_LEAF, NOT_A_LEAF, None]
    assert refusal.decide(features, np.ones(4), shares, labels) == [NOT_A_LEAF, NOT_A_LEAF, NOT_A_LEAF, None]
    assert refusal.judge(features[0], 1.0, 0.01, 2, [2])[0] is None
    assert refusal.judge(features[0], 1.0, 0.01, 0, [2])[0] == NOT_A_LEAF
    with pytest.raises(ValueError, match="labels"):
        refusal.decide(features, np.ones(4), shares, None, [2])


def test_fit_sets_the_near_threshold_and_files_without_it_keep_the_old_rule():
    import json

    rng = np.random.default_rng(1)
    x, y = rng.normal(0, 1, (100, 3)), np.r_[np.zeros(50), np.ones(50)].astype(int)
    val = rng.normal(0, 1, (60, 3))
    refusal = fit_refusal(x, y, val, np.ones(60), distance_quantile=0.9999)
    assert refusal.near_threshold == pytest.approx(distance_threshold(refusal.distances(val), 0.99))
    assert refusal.near_threshold < refusal.distance_threshold and refusal.min_plant_share == 0.05
    old = {k: v for k, v in refusal.to_stored().items() if k not in ("near_threshold", "min_plant_share")}
    legacy = Refusal.from_stored(json.loads(json.dumps(old)))
    assert legacy.near_threshold == float("inf") and legacy.min_plant_share == 0.0
    back = Refusal.from_stored(json.loads(json.dumps(legacy.to_stored(), allow_nan=False)))  # strict JSON
    assert back.near_threshold == float("inf")


def test_the_recipes_quarter_turns_are_the_views_the_refusal_reads():
    from agripatch.pipeline.refusal import trained_turns

    def spec(*names):
        return {"transform": {"__class_fullname__": "Compose",
                              "transforms": [{"__class_fullname__": name, "p": 0.5} for name in names]}}

    assert trained_turns(spec("HorizontalFlip", "RandomRotate90", "ColorJitter")) == (1, 2, 3)
    assert trained_turns(spec("HorizontalFlip", "VerticalFlip")) == ()
    assert trained_turns(None) == trained_turns({}) == ()


def test_only_leafy_photos_the_rule_refuses_are_judged_on_their_views():
    from agripatch.pipeline.refusal import VIEW_MIN_PLANT_SHARE

    refusal = Refusal(np.zeros((2, 1)), np.eye(1), 9.0, 0.5, near_threshold=4.0, min_plant_share=0.05,
                      view_turns=(1, 2, 3))
    distances = np.array([1.0, 5.0, 5.0, 20.0, 20.0])
    shares = np.array([0.9, 0.9, 0.01, VIEW_MIN_PLANT_SHARE, VIEW_MIN_PLANT_SHARE - 0.01])
    # accepted; between the thresholds but leafy (accepted); bare (refused, not leafy); far and leafy; far, not leafy
    assert refusal.needs_views(distances, shares).tolist() == [False, False, False, True, False]
    assert not refusal.needs_views(distances, None).any()
    refusal.view_turns = ()
    assert refusal.view_count == 0 and not refusal.needs_views(distances, shares).any()
    refusal.view_exposure = 0.2  # the re-exposed glance alone is a view too
    assert refusal.view_count == 1
    assert refusal.needs_views(distances, shares).tolist() == [False, False, False, True, False]
    assert refusal.view_names == ["exposure"]
    refusal.view_turns = (1, 2, 3)
    assert refusal.view_count == 4 and refusal.view_names == ["turn90", "turn180", "turn270", "exposure"]


def test_view_turns_survive_the_model_file_and_older_files_have_none():
    refusal = Refusal(np.zeros((2, 3)), np.eye(3), 9.0, 0.5, view_turns=(1, 2, 3))
    stored = refusal.to_stored()
    assert stored["view_turns"] == [1, 2, 3] and Refusal.from_stored(stored).view_turns == (1, 2, 3)
    del stored["view_turns"]
    assert Refusal.from_stored(stored).view_turns == ()


def test_view_exposure_survives_the_model_file_and_its_thresholds_and_older_files_have_none():
    from agripatch.pipeline.refusal import with_thresholds

    refusal = Refusal(np.zeros((2, 3)), np.eye(3), 9.0, 0.5, view_exposure=0.25)
    stored = refusal.to_stored()
    assert stored["view_exposure"] == 0.25 and Refusal.from_stored(stored).view_exposure == 0.25
    refitted = with_thresholds(refusal, np.random.default_rng(0).normal(size=(20, 3)), np.full(20, 0.9))
    assert refitted.view_exposure == 0.25
    del stored["view_exposure"]
    assert Refusal.from_stored(stored).view_exposure == 0.0 and Refusal.from_stored(stored).view_count == 0


def test_judge_uses_a_distance_the_cascade_computed_instead_of_computing_it_again():
    refusal = Refusal(np.zeros((2, 2)), np.eye(2), 9.0, 0.5)
    near = np.array([1.0, 0.0])
    assert refusal.judge(near, 0.9) == (None, 1.0)
    # the cascade judged the photo on a view 16 away: that distance decides and is reported
    assert refusal.judge(near, 0.9, distance=16.0) == (NOT_A_LEAF, 16.0)
    assert refusal.judge(None, 0.9, distance=16.0) == (None, None)  # no features: the confidence alone
