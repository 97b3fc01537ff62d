"""Cell ranking and greedy selection in numpy: the twins of ``score_map`` and ``select_cells`` in
:mod:`agripatch.pipeline.select`, for the torch-free runtime.

Same rules: the score map is the CAM of the arg-max class (``predicted``) or the maximum over classes
(``max``); K cells are picked greedily, a cell being suppressed when its IoU with a picked one is
``> iou_threshold`` (IoU in float32 like ``torchvision.ops.box_iou``); ties go to the lowest cell index; when
suppression leaves fewer than K candidates the remaining slots take the best cells not yet picked (fillers).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["CellSelection", "overlaps", "score_map", "select_cells"]


class CellSelection(NamedTuple):
    """K cells per photo, best first: row-major ``indices`` [B, K] int64, their glance ``boxes`` [B, K, 4]
    float32, ``scores`` [B, K] float32 and ``from_nms`` [B, K] (False for fillers)."""

    indices: np.ndarray
    boxes: np.ndarray
    scores: np.ndarray
    from_nms: np.ndarray


def score_map(cam: np.ndarray, logits: np.ndarray, mode: str = "predicted") -> np.ndarray:
    """[B, C, gh, gw] CAM -> [B, gh, gw] score map: the predicted class's map, or the maximum over classes."""
    if cam.ndim != 4 or logits.shape != cam.shape[:2]:
        raise ValueError(f"cam must be [B, C, gh, gw] and logits [B, C], got {cam.shape} and {logits.shape}")
    if mode == "max":
        return cam.max(axis=1)
    if mode != "predicted":
        raise ValueError(f"unknown score mode {mode!r}: use 'predicted' or 'max'")
    classes = logits.argmax(axis=1)  # first maximum, like torch.argmax
    return cam[np.arange(cam.shape[0]), classes]


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
    """K cells per photo by greedy IoU suppression on the grid's fixed boxes, fillers when it runs dry.

    ``scores`` [B, N] finite float32 (row-major cells), ``boxes`` [N, 4]; see the module docstring for the
    rules, which are those of :func:`agripatch.pipeline.select.select_cells`.
    """
    scores = np.asarray(scores, np.float32)
    boxes = np.asarray(boxes, np.float32)
    if scores.ndim != 2 or boxes.shape != (scores.shape[1], 4):
        raise ValueError(f"scores must be [B, N] and boxes [N, 4], got {scores.shape} and {boxes.shape}")
    b, n = scores.shape
    if not 1 <= k <= n:
        raise ValueError(f"cannot select k={k} cells from a grid of {n} cells")
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
