"""Do the selected patches land on the disease? Score boxes against real lesion masks, beside chance.

A box *lands on a lesion* when at least ``min_share`` of its pixels are lesion pixels (default 1%: a
rust spot of ~30 px in a 380 x 190 px patch). Every selected box is judged beside two boxes of exactly
the same size that know nothing of the photo: one at the photo's centre, and one at a uniformly random
position inside the photo (its hit rate is computed exactly over every position, with an integral image,
not sampled). A selector is only worth its name when it beats both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["LESION_SHARE", "BoxJudgement", "boxes_mask", "centre_box", "judge_boxes", "lesion_share", "random_hit_rate"]

#: A box is on a lesion when at least this share of its pixels is lesion: the benchmark's hit rule, and the
#: rule by which training's lesion loss calls a cell a lesion cell (:mod:`agripatch.engine.lesion_focus`).
LESION_SHARE = 0.01


def _integral(mask: np.ndarray) -> np.ndarray:
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.float64)
    out[1:, 1:] = np.asarray(mask, dtype=np.float64).cumsum(0).cumsum(1)
    return out


def _int_box(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(round(float(v))) for v in box)
    x0, x1 = max(0, min(x0, width)), max(0, min(x1, width))
    y0, y1 = max(0, min(y0, height)), max(0, min(y1, height))
    return x0, y0, max(x1, x0), max(y1, y0)


def lesion_share(mask: np.ndarray, box: Sequence[float]) -> float:
    """Share of lesion pixels (``mask`` true) inside ``box`` (x0, y0, x1, y1, end-exclusive, rounded)."""
    x0, y0, x1, y1 = _int_box(box, *mask.shape)
    area = (x1 - x0) * (y1 - y0)
    return float(mask[y0:y1, x0:x1].sum()) / area if area else 0.0


def centre_box(height: int, width: int, box_h: float, box_w: float) -> tuple[float, float, float, float]:
    """A box of the given size centred in the photo (clamped inside it)."""
    box_w, box_h = min(box_w, width), min(box_h, height)
    x0, y0 = (width - box_w) / 2, (height - box_h) / 2
    return x0, y0, x0 + box_w, y0 + box_h


def random_hit_rate(mask: np.ndarray, box_h: float, box_w: float, min_share: float) -> float:
    """Probability that a box of this size at a uniformly random position inside the photo lands on a lesion."""
    height, width = mask.shape
    bh, bw = max(1, min(int(round(box_h)), height)), max(1, min(int(round(box_w)), width))
    ii = _integral(mask)
    sums = ii[bh:, bw:] - ii[:-bh, bw:] - ii[bh:, :-bw] + ii[:-bh, :-bw]  # every top-left position
    return float((sums / (bh * bw) >= min_share).mean())


def boxes_mask(height: int, width: int, boxes: Sequence[Sequence[float]]) -> np.ndarray:
    """A lesion mask from annotated lesion boxes (their union)."""
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        x0, y0, x1, y1 = _int_box(box, height, width)
        mask[y0:y1, x0:x1] = True
    return mask


@dataclass
class BoxJudgement:
    """One photo's verdict: did the top box / any of the K boxes land on a lesion, and how did chance do."""

    top1: bool
    any_k: bool
    centre: bool
    random_rate: float
    top1_share: float
    leaf_share_top1: float | None = None


def judge_boxes(boxes: np.ndarray, lesions: np.ndarray, *, min_share: float = LESION_SHARE,
                leaf: np.ndarray | None = None) -> BoxJudgement:
    """Judge the selected boxes [K, 4] (best first, in the mask's pixels) against a lesion mask [H, W].

    The centre and random boxes take the top box's size. ``leaf`` (optional mask) also reports how much of
    the top box is leaf.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("no box to judge")
    height, width = lesions.shape
    shares = [lesion_share(lesions, box) for box in boxes]
    top = boxes[0]
    box_w, box_h = top[2] - top[0], top[3] - top[1]
    return BoxJudgement(
        top1=shares[0] >= min_share,
        any_k=any(share >= min_share for share in shares),
        centre=lesion_share(lesions, centre_box(height, width, box_h, box_w)) >= min_share,
        random_rate=random_hit_rate(lesions, box_h, box_w, min_share),
        top1_share=shares[0],
        leaf_share_top1=None if leaf is None else lesion_share(leaf, top),
    )
