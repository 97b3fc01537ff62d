"""Teach AnchorNet where the disease is: a loss that puts the true class's evidence on the lesion cells.

AnchorNet learns from image labels alone; its class map then lights up whatever correlates with a class in
the training photos (a leaf's healthy tissue, the background), and the cascade reads those cells. Where
lesion masks exist, each cell is known to hold a lesion or not (its box's lesion share against ``LESION_SHARE``, the
localisation benchmark's hit rule), and the loss asks the class map of the photo's class to rank
lesion cells first: over the cells of one photo, a softmax of that class's per-cell scores, and the loss is
minus the log of the mass on lesion cells (the selection's top-1 choice, made differentiable). Photos
without a mask, or without a lesion cell (healthy leaves), add nothing.

Measured on coffee_bracol highres (the `coffee` recipe, weight 0.3, 3 seeds, leaf prior): the top-1 patch lands on
a lesion on 0.96 of the diseased test leaves instead of 0.81 without masks (benchmarks/README.md, Localisation).
"""

from __future__ import annotations

import torch
from torch import Tensor

from agripatch.engine.lesions import LESION_SHARE
from agripatch.pipeline.priors import box_means

__all__ = ["lesion_cells", "lesion_focus_loss"]


def lesion_cells(masks: Tensor, cell_boxes: Tensor, min_share: float = LESION_SHARE) -> Tensor:
    """Which cells hold a lesion: 0/1 masks [B, H, W] at the network input and cell boxes [N, 4] -> bool [B, N]."""
    return box_means(masks.float(), cell_boxes) >= min_share


def lesion_focus_loss(cell_scores: Tensor, labels: Tensor, lesions: Tensor) -> Tensor:
    """Mean over photos with a lesion cell of ``-log`` (softmax mass of the true class's cells on lesion cells).

    Args:
        cell_scores: [B, C, N] per-cell class scores (AnchorNet's class map, any scale: the softmax is over N).
        labels: [B] true classes.
        lesions: [B, N] bool, the lesion cells (:func:`lesion_cells`); rows without any are skipped.

    Returns:
        A scalar; exactly 0 (still attached to the graph) when no photo has a lesion cell.
    """
    if cell_scores.ndim != 3 or lesions.shape != (cell_scores.shape[0], cell_scores.shape[2]):
        raise ValueError(f"need cell_scores [B, C, N] and lesions [B, N], got {tuple(cell_scores.shape)} "
                         f"and {tuple(lesions.shape)}")
    rows = lesions.any(dim=1)
    if not rows.any():
        return cell_scores.sum() * 0.0
    scores = cell_scores[rows, labels[rows]]  # [R, N]
    scores = scores.to(torch.promote_types(scores.dtype, torch.float32))  # bf16 autocast: the softmax in fp32
    on_lesion = scores.masked_fill(~lesions[rows], float("-inf"))
    return (torch.logsumexp(scores, dim=1) - torch.logsumexp(on_lesion, dim=1)).mean()
