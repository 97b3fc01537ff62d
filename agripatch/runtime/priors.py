"""The leaf prior's ranking rule in numpy (the plant-pixel shares themselves come out of the exported glance
graph, computed by :mod:`agripatch.pipeline.priors` in torch, so they are the same numbers).

With ``cell_prior="leaf"`` a cell whose box holds less than ``leaf_min_share`` plant pixels ranks after every
leafy cell; float32 like torch, so decisions match. Twin of ``pipeline.priors.apply_leaf_prior``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["LEAF_PENALTY", "apply_leaf_prior"]

LEAF_PENALTY = np.float32(1.0e4)


def apply_leaf_prior(scores: np.ndarray, share: np.ndarray, min_share: float) -> np.ndarray:
    """Scores [B, N] with every cell holding less than ``min_share`` plant pixels moved behind all leafy cells."""
    scores = np.asarray(scores, np.float32)
    return (scores - LEAF_PENALTY * (np.asarray(share) < min_share).astype(np.float32)).astype(np.float32)
