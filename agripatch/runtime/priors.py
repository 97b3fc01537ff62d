"""The leaf prior on AnchorNet's cells in numpy: the twin of :mod:`agripatch.pipeline.priors` for the runtime.

With ``cell_prior="leaf"`` a cell whose box holds less than ``leaf_min_share`` plant pixels (excess green
``2g - r - b`` of the chromaticity above 0.08, brightness above 0.12) ranks after every leafy cell. The
arithmetic is float32 in torch's order, so threshold decisions match. Keep in sync with pipeline/priors.py.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LEAF_PENALTY", "apply_leaf_prior", "box_means", "leaf_share", "plant_mask"]

LEAF_PENALTY = np.float32(1.0e4)
_EXCESS_GREEN = 0.08
_MIN_BRIGHTNESS = 0.12
_F32 = np.float32


def plant_mask(glance: np.ndarray) -> np.ndarray:
    """[B, 3, H, W] RGB in 0..1 -> [B, H, W] float32, 1 where the pixel looks like plant tissue."""
    g = np.asarray(glance, np.float32)
    total = (g[:, 0] + g[:, 1]) + g[:, 2]
    chroma = g / np.maximum(total, _F32(1e-6))[:, None]
    excess = (_F32(2) * chroma[:, 1] - chroma[:, 0]) - chroma[:, 2]
    return ((excess > _EXCESS_GREEN) & (total > 3 * _MIN_BRIGHTNESS)).astype(np.float32)


def box_means(mask: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Mean of ``mask`` [B, H, W] inside each integer box [N, 4] (x0, y0, x1, y1, end-exclusive) -> [B, N]."""
    b, h, w = mask.shape
    integral = np.zeros((b, h + 1, w + 1), np.float32)
    integral[:, 1:, 1:] = mask.astype(np.float32).cumsum(1).cumsum(2)
    x0, y0, x1, y1 = np.maximum(np.round(np.asarray(boxes, np.float32)).astype(np.int64), 0).T
    x1, y1 = np.minimum(x1, w), np.minimum(y1, h)
    x0, y0 = np.minimum(x0, x1), np.minimum(y0, y1)
    total = integral[:, y1, x1] - integral[:, y0, x1] - integral[:, y1, x0] + integral[:, y0, x0]
    area = np.maximum((x1 - x0) * (y1 - y0), 1).astype(np.float32)
    return (total / area).astype(np.float32)


def leaf_share(glance: np.ndarray, cell_boxes: np.ndarray) -> np.ndarray:
    """Share of plant pixels in every cell box: [B, 3, H, W] glance, [N, 4] boxes -> [B, N]."""
    return box_means(plant_mask(glance), cell_boxes)


def apply_leaf_prior(scores: np.ndarray, share: np.ndarray, min_share: float) -> np.ndarray:
    """Scores [B, N] with every cell holding less than ``min_share`` plant pixels moved behind all leafy cells."""
    scores = np.asarray(scores, np.float32)
    return (scores - LEAF_PENALTY * (share < min_share).astype(np.float32)).astype(np.float32)
