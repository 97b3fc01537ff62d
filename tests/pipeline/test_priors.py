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


def test_off_leaf_classes_are_those_whose_own_top_cell_is_bare_on_most_photos():
    """A class is off the leaf when more than half of its photos' own top cells hold too few plant pixels: exactly
    half is not more than half, and a class without photos is never one."""
    import numpy as np

    from agripatch.pipeline.cells import off_leaf_classes

    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
    shares = np.array([0.9, 0.1, 0.8, 0.0, 0.2, 0.05, 0.7, 0.1, 0.6])  # class 0: 1/3 bare, 1: 3/4, 2: 1/2
    assert off_leaf_classes(shares, labels, 4, 0.3) == [1]
    assert off_leaf_classes(shares, labels, 4, 0.75) == [1, 2]  # at 0.75 class 2's 0.6 is bare too, class 0's 0.8 not
    assert off_leaf_classes(shares, labels, 4, 0.0) == []
    with pytest.raises(ValueError, match="one top-cell share per label"):
        off_leaf_classes(shares[:3], labels, 4, 0.3)


def test_a_photo_ranked_for_an_off_leaf_class_counts_every_cell_as_plant():
    import numpy as np

    from agripatch.pipeline.cells import apply_share_prior, map_classes, plant_shares_for

    share = np.array([[0.0, 0.9, 0.1], [0.0, 0.9, 0.1]], np.float32)
    scores = np.array([[3.0, 1.0, 2.0], [3.0, 1.0, 2.0]], np.float32)
    logits = np.array([[0.1, 2.0], [2.0, 0.1]], np.float32)  # photo 0 predicted class 1, photo 1 class 0
    classes = map_classes(logits, "predicted")
    assert classes.tolist() == [1, 0] and map_classes(logits, "max").tolist() == [1, 0]
    assert map_classes(logits, np.array([0, 0])).tolist() == [0, 0] and map_classes(logits, 1).tolist() == [1, 1]
    read = plant_shares_for(share, classes, [1])
    np.testing.assert_array_equal(read, [[1.0, 1.0, 1.0], share[1]])
    np.testing.assert_array_equal(plant_shares_for(share, classes, []), share)
    np.testing.assert_array_equal(plant_shares_for(share.mean(axis=1), classes, [1]), [1.0, share[1].mean()])  # photos'
    ranked = apply_share_prior(scores, read, 0.3)
    assert np.argsort(-ranked[0], kind="stable").tolist() == [0, 2, 1]  # the class map's own order
    assert np.argsort(-ranked[1], kind="stable").tolist() == [1, 0, 2]  # the leafy cell first
    with pytest.raises(ValueError, match="class index out of range"):
        map_classes(logits, np.array([0, 2]))
