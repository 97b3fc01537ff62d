"""The cells' plant shares: BoxMeans (two matrix products, what the glance runs and exports, and box_means through it)
equals each box's pixels summed one by one, exactly, for AnchorNet's grid cells and for arbitrary boxes."""

from __future__ import annotations

import pytest
import torch

from agripatch.models.anchornet import create_anchornet
from agripatch.pipeline.priors import BoxMeans, box_means


def _one_by_one(mask: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """Each box's mean, summing its pixels slice by slice (rounded, clipped edges; an empty box counts 1 pixel)."""
    h, w = mask.shape[-2:]
    out = torch.zeros(mask.shape[0], len(boxes))
    for n, box in enumerate(boxes.round().long().tolist()):
        x0, y0, x1, y1 = max(box[0], 0), max(box[1], 0), min(box[2], w), min(box[3], h)
        x0, y0 = min(x0, x1), min(y0, y1)
        area = max((x1 - x0) * (y1 - y0), 1)
        out[:, n] = mask[:, y0:y1, x0:x1].sum(dim=(1, 2)) / float(area)
    return out


def test_box_means_on_anchornet_cells_equal_their_pixels_summed():
    torch.manual_seed(0)
    boxes = create_anchornet("anchornet_mbv2_s8", num_classes=3).cell_boxes(160, 160)
    mask = (torch.rand(4, 160, 160) > 0.6).float()
    expected = _one_by_one(mask, boxes)
    assert expected.shape == (4, boxes.shape[0])
    assert torch.equal(BoxMeans(boxes, 160, 160)(mask), expected)
    assert torch.equal(box_means(mask, boxes), expected)


def test_box_means_on_arbitrary_boxes_edges_and_empty_boxes():
    torch.manual_seed(1)
    mask = (torch.rand(2, 37, 53) > 0.5).float()
    boxes = torch.tensor([[0, 0, 53, 37], [10.4, 3.6, 20.2, 30.9], [-5, -5, 4, 4], [50, 30, 90, 90], [7, 7, 7, 20],
                          [10.4, 3.6, 20.2, 30.9]])
    ours = BoxMeans(boxes, 37, 53)(mask)
    assert torch.equal(ours, _one_by_one(mask, boxes))
    assert torch.equal(box_means(mask, boxes), ours)
    assert ours[0, 0] == mask[0].mean() and ours[0, 4] == 0  # the whole mask; an empty box


def test_box_means_refuses_masks_of_another_size():
    with pytest.raises(ValueError, match="16 x 16"):
        BoxMeans(torch.tensor([[0, 0, 4, 4]]), 16, 16)(torch.zeros(1, 8, 8))
