"""Scoring selected boxes against lesion masks: exact numbers on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from agripatch.engine.lesions import (
    boxes_mask,
    centre_box,
    judge_boxes,
    lesion_share,
    random_hit_rate,
)


def _mask() -> np.ndarray:
    mask = np.zeros((10, 20), dtype=bool)
    mask[0:2, 0:2] = True  # a 2 x 2 lesion in the top-left corner
    return mask


def test_lesion_share_counts_pixels_inside_the_box():
    assert lesion_share(_mask(), (0, 0, 4, 4)) == pytest.approx(4 / 16)
    assert lesion_share(_mask(), (5, 5, 9, 9)) == 0.0
    assert lesion_share(_mask(), (1, 1, 3, 3)) == pytest.approx(1 / 4)


def test_random_rate_is_exact_over_every_position():
    # 4 x 4 boxes: top-left positions x in 0..16, y in 0..6 (17 * 7 = 119); those overlapping the lesion
    # (x <= 1 and y <= 1) number 4, and any overlap is >= 1/16 of the box.
    assert random_hit_rate(_mask(), 4, 4, min_share=0.01) == pytest.approx(4 / 119)
    # Requiring 4/16 of the box: only the corner position holds the whole lesion.
    assert random_hit_rate(_mask(), 4, 4, min_share=0.25) == pytest.approx(1 / 119)


def test_centre_box_and_judgement():
    assert centre_box(10, 20, 4, 6) == (7.0, 3.0, 13.0, 7.0)
    verdict = judge_boxes(np.array([[8, 4, 12, 8], [0, 0, 4, 4]]), _mask())
    assert not verdict.top1 and verdict.any_k and not verdict.centre
    assert verdict.random_rate == pytest.approx(4 / 119) and verdict.top1_share == 0.0
    with pytest.raises(ValueError):
        judge_boxes(np.zeros((0, 4)), _mask())


def test_boxes_mask_is_the_union_of_boxes():
    mask = boxes_mask(5, 5, [(0, 0, 2, 2), (1, 1, 3, 3)])
    assert mask.sum() == 7 and mask[2, 2] and not mask[0, 3]
