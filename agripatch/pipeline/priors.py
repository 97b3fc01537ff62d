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

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["BoxMeans", "box_means", "leaf_share", "plant_mask"]

_EXCESS_GREEN = 0.08  # chromaticity 2g - r - b: healthy leaves 0.3-0.5, yellowed ~0.2, soil/skin/white <= 0
_MIN_BRIGHTNESS = 0.12  # mean of r, g, b in 0..1: deep shadow carries no colour to judge


def plant_mask(glance: Tensor) -> Tensor:
    """[B, 3, H, W] RGB in 0..1 -> [B, H, W] float, 1 where the pixel looks like plant tissue."""
    total = glance.sum(dim=1)
    chroma = glance / total.clamp_min(1e-6).unsqueeze(1)
    excess_green = 2 * chroma[:, 1] - chroma[:, 0] - chroma[:, 2]
    return ((excess_green > _EXCESS_GREEN) & (total > 3 * _MIN_BRIGHTNESS)).to(glance.dtype)


def box_means(mask: Tensor, boxes: Tensor) -> Tensor:
    """Mean of ``mask`` [B, H, W] inside each integer box [N, 4] (x0, y0, x1, y1, end-exclusive; rounded and clipped
    to the mask) -> [B, N], through :class:`BoxMeans` laid out for these boxes."""
    return BoxMeans(boxes, mask.shape[-2], mask.shape[-1]).to(mask.device)(mask)


def leaf_share(glance: Tensor, cell_boxes: Tensor) -> Tensor:
    """Share of plant pixels in every cell box: [B, 3, H, W] glance, [N, 4] boxes -> [B, N]."""
    return box_means(plant_mask(glance), cell_boxes.to(glance.device))


class BoxMeans(nn.Module):
    """:func:`box_means` for boxes fixed in advance on ``height`` x ``width`` masks, as two small matrix products.

    AnchorNet's cells share a few row ranges and a few column ranges, so the sums of all N boxes are the
    ``[rows, columns]`` table ``Ay @ mask @ Ax.T`` (``Ay`` and ``Ax`` the 0/1 indicators of the distinct ranges),
    read at each box's entry. The glance exports this to ONNX as MatMul and Gather nodes: the integral image it
    replaces became cumulative sums, scatters and transposes there, about a third of the glance graph's time. Sums
    of 0/1 pixels are whole numbers, exact in float32, so the shares are exact means.
    """

    def __init__(self, boxes: Tensor, height: int, width: int):
        super().__init__()
        x0, y0, x1, y1 = _clamped(torch.as_tensor(boxes).detach().cpu(), height, width)
        ranges_y, row = np.unique(torch.stack([y0, y1], 1).numpy(), axis=0, return_inverse=True)
        ranges_x, column = np.unique(torch.stack([x0, x1], 1).numpy(), axis=0, return_inverse=True)
        ys, xs = np.arange(height), np.arange(width)
        ay = ((ys[None] >= ranges_y[:, :1]) & (ys[None] < ranges_y[:, 1:])).astype(np.float32)
        ax = ((xs[None] >= ranges_x[:, :1]) & (xs[None] < ranges_x[:, 1:])).astype(np.float32)
        self.size = (int(height), int(width))
        self.register_buffer("ay", torch.from_numpy(ay), persistent=False)
        self.register_buffer("ax_t", torch.from_numpy(np.ascontiguousarray(ax.T)), persistent=False)
        index = row.reshape(-1) * len(ranges_x) + column.reshape(-1)
        self.register_buffer("index", torch.from_numpy(index.astype(np.int64)), persistent=False)
        self.register_buffer("area", ((x1 - x0) * (y1 - y0)).clamp_min(1).float(), persistent=False)

    def forward(self, mask: Tensor) -> Tensor:
        """Mean of ``mask`` [B, H, W] inside each box -> [B, N]."""
        if tuple(mask.shape[-2:]) != self.size:
            raise ValueError(f"these boxes were laid out on {self.size[0]} x {self.size[1]} masks, got "
                             f"{tuple(mask.shape[-2:])}")
        table = torch.matmul(torch.matmul(self.ay, mask.float()), self.ax_t)  # [B, rows, columns]
        return table.flatten(1).index_select(1, self.index) / self.area


def _clamped(boxes: Tensor, height: int, width: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Integer box edges inside a ``height`` x ``width`` mask: rounded, clipped, empty when inverted."""
    x0, y0, x1, y1 = boxes.round().long().clamp_min(0).unbind(1)
    x1, y1 = x1.clamp_max(width), y1.clamp_max(height)
    return torch.minimum(x0, x1), torch.minimum(y0, y1), x1, y1
