"""Where a lesion can be: a leaf prior on AnchorNet's cells, from the glance's own pixels.

A diseased spot is ON a leaf. AnchorNet's class map alone also lights up soil, hands and colour cards
when the training photos made them correlate with a class (iBean's rust photos show more soil), so the
top cell can be no leaf at all. The prior measures, for every cell box of the glance, the share of plant
pixels (excess green ``2g - r - b`` of the chromaticity above a threshold, dark pixels excluded): lesions
sit inside green tissue, so a lesion cell still holds plenty of it, while soil, skin, sky, white sheets
and most of a colour card hold none. Cells below ``min_share`` are ranked after every leafy cell (their
own order kept; :func:`agripatch.pipeline.cells.apply_share_prior`), so a photo without any leafy cell is
ranked exactly as without the prior.

Everything here is plain tensor arithmetic on the glance (exportable to ONNX with the glance network).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["box_means", "leaf_share", "plant_mask"]

_EXCESS_GREEN = 0.08  # chromaticity 2g - r - b: healthy leaves 0.3-0.5, yellowed ~0.2, soil/skin/white <= 0
_MIN_BRIGHTNESS = 0.12  # mean of r, g, b in 0..1: deep shadow carries no colour to judge


def plant_mask(glance: Tensor) -> Tensor:
    """[B, 3, H, W] RGB in 0..1 -> [B, H, W] float, 1 where the pixel looks like plant tissue."""
    total = glance.sum(dim=1)
    chroma = glance / total.clamp_min(1e-6).unsqueeze(1)
    excess_green = 2 * chroma[:, 1] - chroma[:, 0] - chroma[:, 2]
    return ((excess_green > _EXCESS_GREEN) & (total > 3 * _MIN_BRIGHTNESS)).to(glance.dtype)


def box_means(mask: Tensor, boxes: Tensor) -> Tensor:
    """Mean of ``mask`` [B, H, W] inside each integer box [N, 4] (x0, y0, x1, y1, end-exclusive) -> [B, N]."""
    b, h, w = mask.shape
    integral = torch.zeros(b, h + 1, w + 1, dtype=torch.float32, device=mask.device)
    integral[:, 1:, 1:] = mask.float().cumsum(1).cumsum(2)
    x0, y0, x1, y1 = boxes.round().long().clamp_min(0).unbind(1)
    x1, y1 = x1.clamp_max(w), y1.clamp_max(h)
    x0, y0 = torch.minimum(x0, x1), torch.minimum(y0, y1)
    total = integral[:, y1, x1] - integral[:, y0, x1] - integral[:, y1, x0] + integral[:, y0, x0]
    area = ((x1 - x0) * (y1 - y0)).clamp_min(1).float()
    return total / area


def leaf_share(glance: Tensor, cell_boxes: Tensor) -> Tensor:
    """Share of plant pixels in every cell box: [B, 3, H, W] glance, [N, 4] boxes -> [B, N]."""
    return box_means(plant_mask(glance), cell_boxes.to(glance.device))
