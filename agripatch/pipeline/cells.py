"""Which of AnchorNet's cells the cascade reads, in numpy (both backends and training call these).

1. :func:`score_map` reduces the class activation map to one score per cell: the map of the predicted class
   (the paper's rule: look where the network sees the disease it believes in), the maximum over classes, or a
   given class per photo (training ranks by the true or a random class);
2. :func:`apply_share_prior` moves cells with too small a share of something behind every other cell: plant
   pixels (the leaf prior; shares from the glance, :mod:`agripatch.pipeline.priors`) or symptoms (the symptom
   prior; shares from the symptom map, :func:`cell_symptom_shares`); a photo ranked for a class whose evidence
   lies off the green leaf (fruit, flowers: :func:`off_leaf_classes`, fitted by training) counts every cell as
   plant (:func:`plant_shares_for`), so the leaf prior does not push its patches off the diseased organ;
3. :func:`select_cells` keeps K cells by greedy IoU suppression on the grid's fixed boxes.

Selection is a few hundred comparisons per photo, so it runs on the CPU in float32 whatever device the
networks use; the IoU is float32 like ``torchvision.ops.box_iou``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["LEAF_PENALTY", "OFF_LEAF_MAJORITY", "CellSelection", "apply_share_prior", "bare_top_cell_shares",
           "cell_symptom_shares",
           "leafy_symptom_shares", "map_classes", "off_leaf_classes", "overlaps", "plant_shares_for", "score_map",
           "select_cells"]

#: Subtracted from the score of a cell without enough leaf: larger than any class-map spread, still finite.
LEAF_PENALTY = np.float32(1.0e4)

#: A class is off-leaf when more than this share of its training photos have their own class map's top cell on
#: fewer plant pixels than a leafy cell holds (iBean's and coffee's classes: at most 6% and 0%).
OFF_LEAF_MAJORITY = 0.5


class CellSelection(NamedTuple):
    """K cells per photo, best first: row-major ``indices`` [B, K] int64, their glance ``boxes`` [B, K, 4]
    float32, ``scores`` [B, K] float32 and ``from_nms`` [B, K] (False for fillers)."""

    indices: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    from_nms: np.ndarray


def map_classes(logits: np.ndarray, mode: str | int | np.ndarray = "predicted") -> np.ndarray:
    """The class [B] whose map ranks each photo's cells under ``mode`` (see :func:`score_map`); under ``"max"``,
    whose map is every class's, the predicted class (what the off-leaf classes are checked against)."""
    logits = np.asarray(logits)
    b, c = logits.shape
    if isinstance(mode, str):
        if mode not in ("predicted", "max"):
            raise ValueError(f"unknown score mode {mode!r}: use 'predicted', 'max' or a class index")
        classes = logits.argmax(axis=1) if b else np.zeros(0, np.int64)
    elif isinstance(mode, (int, np.integer)) and not isinstance(mode, bool):
        classes = np.full(b, int(mode), np.int64)
    elif isinstance(mode, np.ndarray) and mode.dtype.kind in "iu":
        classes = mode.reshape(-1).astype(np.int64)
        if classes.size != b:
            raise ValueError(f"need one class per image ({b}), got {classes.size}")
    else:
        raise ValueError(f"unknown score mode {mode!r}: use 'predicted', 'max' or a class index")
    if classes.size and (classes.min() < 0 or classes.max() >= c):
        raise ValueError(f"class index out of range [0, {c})")
    return classes.astype(np.int64)


def score_map(cam: np.ndarray, logits: np.ndarray, mode: str | int | np.ndarray = "predicted") -> np.ndarray:
    """[B, C, gh, gw] class map -> [B, gh, gw] score map.

    ``mode``: ``"predicted"`` (the arg-max class of ``logits``, first maximum on ties), ``"max"`` (the maximum
    over classes, cell by cell) or class indices (one int, or [B] ints: e.g. the true class in training).
    """
    cam, logits = np.asarray(cam), np.asarray(logits)
    if cam.ndim != 4 or logits.shape != cam.shape[:2]:
        raise ValueError(f"cam must be [B, C, gh, gw] and logits [B, C], got {cam.shape} and {logits.shape}")
    classes = map_classes(logits, mode)
    if isinstance(mode, str) and mode == "max":
        return cam.max(axis=1)
    return cam[np.arange(cam.shape[0]), classes]


def bare_top_cell_shares(top_shares: np.ndarray, labels: np.ndarray, num_classes: int,
                         min_share: float) -> dict[int, float]:
    """Per class with photos (``labels`` [N]): the share of its photos whose own class map's top cell holds less
    than ``min_share`` plant pixels (``top_shares`` [N])."""
    shares, labels = np.asarray(top_shares, np.float64).reshape(-1), np.asarray(labels, np.int64).reshape(-1)
    if shares.shape != labels.shape:
        raise ValueError(f"need one top-cell share per label, got {shares.shape} and {labels.shape}")
    bare = shares < min_share
    return {c: float(bare[labels == c].mean()) for c in range(int(num_classes)) if (labels == c).any()}


def off_leaf_classes(top_shares: np.ndarray, labels: np.ndarray, num_classes: int, min_share: float) -> list[int]:
    """The classes whose evidence lies off the green leaf: more than :data:`OFF_LEAF_MAJORITY` of their photos
    have their own class map's top cell holding less than ``min_share`` plant pixels (:func:`bare_top_cell_shares`).
    Fitted on the training photos once AnchorNet is trained; a fruit or flower class of a field set is one, a leaf
    disease is not (iBean's and coffee's top cells are leafy on 94-100% of photos)."""
    bare = bare_top_cell_shares(top_shares, labels, num_classes, min_share)
    return [c for c, share in bare.items() if share > OFF_LEAF_MAJORITY]


def plant_shares_for(share: np.ndarray, classes: np.ndarray, off_leaf: list[int] | tuple[int, ...]) -> np.ndarray:
    """Plant shares as the leaf rules read them: the cells' [B, N] for the cell priors, the photos' [B] for the
    refusal's bare rule. A photo ranked for (or answered with) an off-leaf class (``classes`` [B],
    :func:`off_leaf_classes`) counts as all plant: its class map alone ranks its cells, and lacking green does not
    make it ``not_a_leaf``."""
    share = np.asarray(share, np.float32)
    if not len(off_leaf):
        return share
    exempt = np.isin(np.asarray(classes).reshape(-1), np.asarray(off_leaf, np.int64))
    return np.where(exempt.reshape((-1,) + (1,) * (share.ndim - 1)), np.float32(1.0), share).astype(np.float32)


def apply_share_prior(scores: np.ndarray, share: np.ndarray, min_share: float) -> np.ndarray:
    """Scores [B, N] with every cell whose ``share`` (of plant pixels, or of symptoms) is below ``min_share`` moved
    behind all the others (their own order kept, so a photo without any such cell ranks as without the prior)."""
    scores = np.asarray(scores, np.float32)
    return (scores - LEAF_PENALTY * (np.asarray(share) < min_share).astype(np.float32)).astype(np.float32)


def leafy_symptom_shares(symptom: np.ndarray, plant: np.ndarray, leaf_min_share: float) -> np.ndarray:
    """Each cell's symptom share [B, N] relative to the photo's most symptomatic leafy cell, counting only cells with
    at least ``leaf_min_share`` plant pixels (``plant`` [B, N]); a photo with no leafy cell counts every cell.

    The symptom map learnt symptoms from leaves on plain sheets: in field photos it also fires on colour cards
    and hands (brown, red and yellow patches off the leaf), which then ranked first. The plant pixels of the
    glance keep the prior on the leaf (`benchmarks/README.md`, "Synthetic field scenes")."""
    symptom = np.asarray(symptom, np.float32)
    leafy = np.asarray(plant) >= leaf_min_share
    leafy |= ~leafy.any(axis=1, keepdims=True)
    counted = np.where(leafy, symptom, np.float32(0.0))
    return (counted / np.maximum(counted.max(axis=1, keepdims=True), np.float32(1e-6))).astype(np.float32)


def cell_symptom_shares(cell_boxes: np.ndarray, glance_size: int, symptom: np.ndarray) -> np.ndarray:
    """Mean symptom probability [N] of the symptom map's cells under each AnchorNet cell box.

    ``cell_boxes`` [N, 4] are in glance pixels; the glance and the symptom map ``symptom`` [gh, gw] both cover the
    whole photo, so a box's share of the glance is its share of the map. Each box is widened to whole map cells
    (at least one).
    """
    symptom = np.asarray(symptom, np.float64)
    gh, gw = symptom.shape
    integral = np.zeros((gh + 1, gw + 1))
    integral[1:, 1:] = symptom.cumsum(0).cumsum(1)
    b = np.clip(np.asarray(cell_boxes, np.float64) / float(glance_size), 0.0, 1.0)
    x0 = np.minimum(np.floor(b[:, 0] * gw).astype(np.int64), gw - 1)
    y0 = np.minimum(np.floor(b[:, 1] * gh).astype(np.int64), gh - 1)
    x1 = np.clip(np.ceil(b[:, 2] * gw).astype(np.int64), x0 + 1, gw)
    y1 = np.clip(np.ceil(b[:, 3] * gh).astype(np.int64), y0 + 1, gh)
    total = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
    return (total / ((x1 - x0) * (y1 - y0))).astype(np.float32)


def overlaps(boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """[N, N] bool: IoU(i, j) > threshold, with the IoU computed in float32 as torchvision does."""
    b = np.asarray(boxes, np.float32)
    area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = np.maximum(b[:, None, :2], b[None, :, :2])
    rb = np.minimum(b[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, np.float32(0), None)
    inter = wh[..., 0] * wh[..., 1]
    union = area[:, None] + area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = (inter / union).astype(np.float32)
    return iou > np.float32(iou_threshold)


def select_cells(scores: np.ndarray, boxes: np.ndarray, k: int, iou_threshold: float) -> CellSelection:
    """K cells per photo by greedy IoU suppression on the grid's fixed boxes, as :func:`torchvision.ops.nms` (a
    cell is dropped when its IoU with a kept, higher-scoring cell is ``> iou_threshold``) stopped after K picks.

    There are always K cells: when suppression leaves fewer, the remaining slots take the best cells not yet
    picked (``from_nms`` False: they may overlap). Ties go to the lowest cell index, and the boxes are the same
    for every photo, so a batch gives exactly what its photos give one at a time.

    Args:
        scores: [B, N] finite cell scores (row-major cells).
        boxes: [N, 4] cell boxes (x0, y0, x1, y1).
        k: cells per photo, 1 <= k <= N.
        iou_threshold: in [0, 1]; 1 disables suppression.
    """
    scores = np.asarray(scores, np.float32)
    boxes = np.asarray(boxes, np.float32)
    if scores.ndim != 2 or boxes.shape != (scores.shape[1], 4):
        raise ValueError(f"scores must be [B, N] and boxes [N, 4], got {scores.shape} and {boxes.shape}")
    b, n = scores.shape
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < k:
        raise ValueError(f"cannot select k={k} cells from a grid of {n} cells")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    near = overlaps(boxes, iou_threshold)
    rows = np.arange(b)
    picked = np.zeros((b, n), bool)
    suppressed = np.zeros((b, n), bool)
    indices, from_nms = [], []
    for _ in range(k):
        candidates = ~(picked | suppressed)
        has_candidate = candidates.any(axis=1)
        pool = np.where(has_candidate[:, None], candidates, ~picked)
        choice = np.where(pool, scores, -np.inf).argmax(axis=1)  # first maximum: the lowest index wins ties
        picked[rows, choice] = True
        suppressed |= near[choice]
        indices.append(choice)
        from_nms.append(has_candidate)
    idx = np.stack(indices, axis=1).astype(np.int64)
    return CellSelection(idx, boxes[idx], np.take_along_axis(scores, idx, axis=1), np.stack(from_nms, axis=1))
