from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import box_iou, nms

from agripatch.pipeline import cells
from agripatch.pipeline.boxes import scale_boxes
from agripatch.pipeline.select import crop_patches

# Selection and box scaling are numpy (both backends call them); these tests feed them torch data and check
# them against torchvision's own box_iou and nms, so the fronts below only convert.
Selection = cells.CellSelection


def score_map(cam, logits, mode="predicted"):
    mode = mode.numpy() if isinstance(mode, torch.Tensor) else mode
    return torch.from_numpy(cells.score_map(cam.numpy(), logits.numpy(), mode))


def cell_scores(cam, logits, mode="predicted"):
    return score_map(cam, logits, mode).flatten(1)


def select_cells(scores, boxes, k, iou_threshold):
    return Selection(*(torch.from_numpy(a) for a in cells.select_cells(scores.numpy(), boxes.numpy(), k, iou_threshold)))


def map_boxes(boxes, from_hw, to_hw):
    as_array = lambda hw: hw.double().numpy() if isinstance(hw, torch.Tensor) else hw  # noqa: E731
    mapped = torch.from_numpy(scale_boxes(boxes.double().numpy(), as_array(from_hw), as_array(to_hw)))
    return mapped.to(boxes.dtype if boxes.is_floating_point() else torch.float32)

ZERO = (0.0, 0.0, 0.0)
ONE = (1.0, 1.0, 1.0)


def grid_boxes(height: int = 32, width: int = 32) -> torch.Tensor:
    """Boxes of a padding-free conv3/s2 -> conv3/s2 trunk: 7 px receptive field, stride 4."""
    gh, gw = ((height - 3) // 2 - 2) // 2 + 1, ((width - 3) // 2 - 2) // 2 + 1
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    x0, y0 = 4 * xs.reshape(-1), 4 * ys.reshape(-1)
    return torch.stack([x0, y0, x0 + 7, y0 + 7], dim=1).float()


# ------------------------------------------------------------------ cell_scores / score_map


class TestCellScores:
    def test_modes(self):
        cam = torch.randn(2, 3, 2, 3)
        logits = torch.tensor([[0.0, 5.0, 1.0], [9.0, 0.0, 1.0]])
        predicted = cell_scores(cam, logits, "predicted")
        assert predicted.shape == (2, 6)
        torch.testing.assert_close(predicted[0], cam[0, 1].flatten(), rtol=0, atol=0)
        torch.testing.assert_close(predicted[1], cam[1, 0].flatten(), rtol=0, atol=0)
        torch.testing.assert_close(cell_scores(cam, logits, "max"), cam.amax(1).flatten(1), rtol=0, atol=0)
        torch.testing.assert_close(cell_scores(cam, logits, 2), cam[:, 2].flatten(1), rtol=0, atol=0)
        given = cell_scores(cam, logits, torch.tensor([2, 1]))
        torch.testing.assert_close(given, torch.stack([cam[0, 2], cam[1, 1]]).flatten(1), rtol=0, atol=0)

    def test_row_major(self):
        cam = torch.arange(6.0).view(1, 1, 2, 3)
        assert score_map(cam, torch.zeros(1, 1)).shape == (1, 2, 3)
        assert cell_scores(cam, torch.zeros(1, 1)).tolist() == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]]

    @pytest.mark.parametrize("mode", ["mean", 3, -1, torch.tensor([0, 0, 0])])
    def test_bad_mode(self, mode):
        with pytest.raises(ValueError):
            cell_scores(torch.randn(2, 3, 2, 2), torch.randn(2, 3), mode)

    def test_bad_shapes(self):
        with pytest.raises(ValueError):
            cell_scores(torch.randn(2, 3, 4), torch.randn(2, 3))
        with pytest.raises(ValueError):
            cell_scores(torch.randn(2, 3, 2, 2), torch.randn(2, 4))


# ------------------------------------------------------------------ select_cells


class TestSelectCells:
    def test_smoke_cardinality(self):
        boxes = grid_boxes()
        scores = torch.randn(3, boxes.shape[0])
        sel = select_cells(scores, boxes, 4, 0.25)
        assert isinstance(sel, Selection)
        assert sel.indices.shape == (3, 4) and sel.indices.dtype == torch.long
        assert sel.boxes.shape == (3, 4, 4) and sel.scores.shape == (3, 4) and sel.from_nms.shape == (3, 4)
        torch.testing.assert_close(sel.boxes, boxes[sel.indices], rtol=0, atol=0)
        torch.testing.assert_close(sel.scores, scores.gather(1, sel.indices), rtol=0, atol=0)
        # Every box inside the 32 x 32 input, the K cells distinct.
        assert (sel.boxes[..., :2] >= 0).all() and (sel.boxes[..., 2:] <= 32).all()
        assert all(len(set(row)) == 4 for row in sel.indices.tolist())

    @pytest.mark.parametrize("threshold", [0.0, 0.1, 0.25, 0.5])
    def test_iou_at_most_threshold_and_sorted(self, threshold):
        boxes = grid_boxes()  # 7 x 7 grid, plenty of room for 5 separated cells
        scores = torch.randn(6, boxes.shape[0])
        sel = select_cells(scores, boxes, 5, threshold)
        assert sel.from_nms.all()
        for b in range(6):
            iou = box_iou(sel.boxes[b], sel.boxes[b])
            off_diagonal = iou[~torch.eye(5, dtype=torch.bool)]
            assert (off_diagonal <= threshold).all()
            assert (sel.scores[b][:-1] >= sel.scores[b][1:]).all()

    @pytest.mark.parametrize("threshold", [0.05, 0.2, 0.5, 0.8])
    def test_equals_torchvision_nms(self, threshold):
        torch.manual_seed(3)
        xy = torch.rand(40, 2) * 50
        wh = torch.rand(40, 2) * 20 + 1
        boxes = torch.cat([xy, xy + wh], 1)
        scores = torch.rand(5, 40)
        for k in (1, 3):
            sel = select_cells(scores, boxes, k, threshold)
            for b in range(5):
                keep = nms(boxes, scores[b], threshold)
                if keep.numel() >= k:
                    assert sel.indices[b].tolist() == keep[:k].tolist()
                    assert sel.from_nms[b].all()

    def test_fill_when_nms_keeps_too_few(self):
        # Three identical boxes and one far away: NMS keeps 2 of 4; K = 4 fills with the rest.
        boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]])
        scores = torch.tensor([[0.5, 0.9, 0.7, 0.1]])
        sel = select_cells(scores, boxes, 4, 0.5)
        assert sel.indices.tolist() == [[1, 3, 2, 0]]  # survivors by score, then fillers by score
        assert sel.from_nms.tolist() == [[True, True, False, False]]
        torch.testing.assert_close(sel.scores, torch.tensor([[0.9, 0.1, 0.7, 0.5]]), rtol=0, atol=0)

    def test_fill_on_grid(self):
        boxes = grid_boxes(11, 15)  # 2 x 3 grid of 7 px boxes at stride 4: every neighbour overlaps
        scores = torch.tensor([[6.0, 5.0, 4.0, 3.0, 2.0, 1.0]])
        sel = select_cells(scores, boxes, 6, 0.0)
        # Any overlap suppresses: only cells 0 and 2 (x 0..7 and 8..15) are disjoint.
        assert sel.indices.tolist() == [[0, 2, 1, 3, 4, 5]]
        assert sel.from_nms.tolist() == [[True, True, False, False, False, False]]

    def test_batched_equals_one_at_a_time(self):
        boxes = grid_boxes()
        scores = torch.randint(0, 4, (7, boxes.shape[0])).float()  # many ties on purpose
        batched = select_cells(scores, boxes, 6, 0.25)
        for b in range(7):
            single = select_cells(scores[b : b + 1], boxes, 6, 0.25)
            for field_batched, field_single in zip(batched, single):
                assert torch.equal(field_batched[b : b + 1], field_single)

    def test_ties_prefer_lowest_index(self):
        boxes = torch.tensor([[0.0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]])
        sel = select_cells(torch.zeros(1, 3), boxes, 3, 0.5)
        assert sel.indices.tolist() == [[0, 1, 2]]

    def test_k_equals_n(self):
        boxes = grid_boxes(11, 11)  # 2 x 2
        sel = select_cells(torch.randn(2, 4), boxes, 4, 0.25)
        assert sorted(sel.indices[0].tolist()) == [0, 1, 2, 3]

    def test_exceptions(self):
        boxes = grid_boxes(11, 11)
        with pytest.raises(ValueError, match="cannot select"):
            select_cells(torch.randn(1, 4), boxes, 5, 0.25)
        with pytest.raises(ValueError):
            select_cells(torch.randn(1, 4), boxes, 0, 0.25)
        with pytest.raises(ValueError):
            select_cells(torch.randn(4), boxes, 1, 0.25)
        with pytest.raises(ValueError):
            select_cells(torch.randn(1, 5), boxes, 1, 0.25)
        with pytest.raises(ValueError):
            select_cells(torch.randn(1, 4), boxes, 1, 1.5)
        with pytest.raises(ValueError):
            select_cells(torch.tensor([[0.0, float("nan"), 1.0, 2.0]]), boxes, 1, 0.25)


# ------------------------------------------------------------------ map_boxes


class TestMapBoxes:
    def test_exact_4x(self):
        boxes = torch.tensor([[1.0, 2.0, 5.0, 6.0], [0.0, 0.0, 32.0, 32.0]])
        out = map_boxes(boxes, (32, 32), (128, 128))
        assert out.tolist() == [[4.0, 8.0, 20.0, 24.0], [0.0, 0.0, 128.0, 128.0]]
        assert out.dtype == torch.float32

    def test_anisotropic(self):
        # x scales by W_to / W_from = 60 / 20 = 3, y by H_to / H_from = 20 / 10 = 2.
        out = map_boxes(torch.tensor([[2.0, 1.0, 4.0, 5.0]]), (10, 20), (20, 60))
        assert out.tolist() == [[6.0, 2.0, 12.0, 10.0]]

    def test_per_image_sizes(self):
        boxes = torch.tensor([[[0.0, 0, 7, 7], [4, 8, 11, 15]], [[0.0, 0, 7, 7], [4, 8, 11, 15]]])
        out = map_boxes(boxes, (32, 32), torch.tensor([[64, 32], [32, 96]]))
        assert out[0].tolist() == [[0.0, 0, 7, 14], [4, 16, 11, 30]]
        assert out[1].tolist() == [[0.0, 0, 21, 7], [12, 8, 33, 15]]

    def test_round_trip(self):
        torch.manual_seed(0)
        xy = torch.rand(3, 5, 2) * 20
        boxes = torch.cat([xy, xy + torch.rand(3, 5, 2) * 10], -1).double()
        sizes = torch.tensor([[480, 640], [3000, 4000], [37, 91]])
        there = map_boxes(boxes, (30, 30), sizes)
        back = map_boxes(there, sizes, (30, 30))
        assert back.dtype == torch.float64
        torch.testing.assert_close(back, boxes, rtol=1e-12, atol=1e-12)

    def test_clamped_inside(self):
        out = map_boxes(torch.tensor([[-2.0, -1.0, 40.0, 12.0]]), (32, 32), (64, 64))
        assert out.tolist() == [[0.0, 0.0, 64.0, 24.0]]

    def test_exceptions(self):
        boxes = torch.zeros(2, 3, 4)
        with pytest.raises(ValueError):
            map_boxes(torch.zeros(2, 3), (4, 4), (8, 8))
        with pytest.raises(ValueError):
            map_boxes(boxes, (4, 4), torch.tensor([[8, 8], [8, 8], [8, 8]]))
        with pytest.raises(ValueError):
            map_boxes(boxes, (4, 4, 4), (8, 8))
        with pytest.raises(ValueError):
            map_boxes(boxes, (0, 4), (8, 8))


# ------------------------------------------------------------------ crop_patches


class TestCropPatches:
    def test_scale_one_is_slicing_exact(self):
        image = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
        boxes = torch.tensor([[[4.0, 3.0, 12.0, 11.0], [22.0, 12.0, 30.0, 20.0]]])
        mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
        out = crop_patches([image], boxes, 8, mean, std)
        assert out.shape == (2, 3, 8, 8) and out.dtype == torch.float32
        m, s = torch.tensor(mean).view(3, 1, 1), torch.tensor(std).view(3, 1, 1)
        x = image.float() / 255.0
        torch.testing.assert_close(out[0], (x[:, 3:11, 4:12] - m) / s, rtol=0, atol=0)
        torch.testing.assert_close(out[1], (x[:, 12:20, 22:30] - m) / s, rtol=0, atol=0)

    def test_box_in_4x_original(self):
        small = torch.rand(3, 16, 16)
        big = small.repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)  # 64 x 64, nearest
        box_small = torch.tensor([[[2.0, 4.0, 10.0, 12.0]]])
        box_big = map_boxes(box_small, (16, 16), (64, 64))
        out = crop_patches([big], box_big, 8, ZERO, ONE)[0]
        # The 32 x 32 box shrunk to 8 x 8 gives back the small photo's crop.
        torch.testing.assert_close(out, small[:, 4:12, 2:10], rtol=0, atol=1e-6)

    def test_downscale_is_area_resize(self):
        big = torch.rand(3, 64, 64)
        out = crop_patches([big], torch.tensor([[[8.0, 16.0, 40.0, 48.0]]]), 8, ZERO, ONE)[0]
        area = F.interpolate(big[None, :, 16:48, 8:40], size=(8, 8), mode="area")[0]
        torch.testing.assert_close(out, area, rtol=0, atol=1e-6)

    def test_downscale_averages_not_aliases(self):
        # One bright column in four: every 4 x 4 block averages to 0.25; point sampling the bin
        # centre (between columns 1 and 2 of each block) would see 0 everywhere.
        stripes = (torch.arange(64) % 4 == 0).float().expand(3, 64, 64)
        out = crop_patches(stripes[None], torch.tensor([[[0.0, 0.0, 32.0, 32.0]]]), 8, ZERO, ONE)
        torch.testing.assert_close(out, torch.full((1, 3, 8, 8), 0.25), rtol=0, atol=1e-6)

    def test_different_sizes_in_one_call(self):
        a = torch.randint(0, 256, (3, 20, 30), dtype=torch.uint8)
        b = torch.rand(3, 50, 40)
        boxes = torch.tensor([[[0.0, 0, 6, 6], [24, 14, 30, 20]], [[34.0, 44, 40, 50], [10, 10, 16, 16]]])
        out = crop_patches([a, b], boxes, 6, ZERO, ONE)
        assert out.shape == (4, 3, 6, 6)
        a01 = a.float() / 255
        expected = [a01[:, 0:6, 0:6], a01[:, 14:20, 24:30], b[:, 44:50, 34:40], b[:, 10:16, 10:16]]
        for got, want in zip(out, expected):
            torch.testing.assert_close(got, want, rtol=0, atol=0)

    def test_batch_tensor_input(self):
        images = torch.rand(2, 3, 12, 12)
        boxes = torch.tensor([[[0.0, 0, 4, 4]], [[8.0, 8, 12, 12]]])
        out = crop_patches(images, boxes, 4, ZERO, ONE)
        torch.testing.assert_close(out, torch.stack([images[0, :, :4, :4], images[1, :, 8:, 8:]]), rtol=0, atol=0)

    def test_exceptions(self):
        image = torch.rand(3, 10, 10)
        with pytest.raises(ValueError):
            crop_patches([image, image], torch.zeros(1, 1, 4) + torch.tensor([0.0, 0, 2, 2]), 4, ZERO, ONE)
        with pytest.raises(ValueError):
            crop_patches([image], torch.tensor([[[2.0, 2, 2, 5]]]), 4, ZERO, ONE)
        with pytest.raises(ValueError):
            crop_patches([image], torch.tensor([[0.0, 0, 2, 2]]), 4, ZERO, ONE)
        with pytest.raises(ValueError):
            crop_patches([torch.rand(1, 10, 10)], torch.tensor([[[0.0, 0, 2, 2]]]), 4, ZERO, ONE)
        with pytest.raises(ValueError):
            crop_patches([torch.zeros(3, 10, 10, dtype=torch.int32)], torch.tensor([[[0.0, 0, 2, 2]]]), 4, ZERO, ONE)


def test_grid_boxes_geometry(anchornet_cls):
    """The test AnchorNet's boxes are its true receptive fields (a gradient check)."""
    net = anchornet_cls().eval()
    x = torch.rand(1, 3, 19, 15, requires_grad=True)
    _, cam = net.forward_cam(x)
    boxes = net.cell_boxes(19, 15)
    torch.testing.assert_close(boxes, grid_boxes(19, 15), rtol=0, atol=0)
    gh, gw = cam.shape[2:]
    assert boxes.shape == (gh * gw, 4)
    for i, j in itertools.product(range(gh), range(gw)):
        (grad,) = torch.autograd.grad(cam[0, :, i, j].sum(), x, retain_graph=True)
        ys, xs = grad.abs().sum(1)[0].nonzero(as_tuple=True)
        x0, y0, x1, y1 = boxes[i * gw + j].tolist()
        assert xs.min() >= x0 and xs.max() < x1 and ys.min() >= y0 and ys.max() < y1


@pytest.mark.parametrize("seed", range(4))
def test_crop_patches_equals_torchvision_roi_align(seed):
    """The matrix crop is roi_align(aligned=True, sampling_ratio=ceil(largest side / S)) to float32 rounding, on
    photos of any size, boxes partly outside, non-square boxes and every slot alone."""
    from torchvision.ops import roi_align

    g = torch.Generator().manual_seed(seed)
    for trial in range(6):
        h, w = (int(v) for v in torch.randint(20, 300, (2,), generator=g))
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=g)
        xy = torch.rand(3, 2, generator=g) * torch.tensor([w, h]) - 4
        wh = torch.rand(3, 2, generator=g) * torch.tensor([w, h]) * 0.8 + 1
        boxes = torch.cat([xy, xy + wh], 1)
        size = int(torch.randint(4, 96, (1,), generator=g))
        grid = max(1, math.ceil(float((boxes[:, 2:] - boxes[:, :2]).max()) / size))
        ref = roi_align(image.float()[None] / 255.0, [boxes], output_size=(size, size), spatial_scale=1.0,
                        sampling_ratio=grid, aligned=True)
        ours = crop_patches([image], boxes[None], size, ZERO, ONE)
        torch.testing.assert_close(ours, ref, rtol=0, atol=3e-6)
        for k in range(3):
            torch.testing.assert_close(crop_patches([image], boxes[None], size, ZERO, ONE, slot=k), ours[k:k + 1],
                                       rtol=0, atol=0)


def test_crop_patches_is_float32_inside_a_bf16_autocast():
    """The patch stage crops inside its training step's autocast (bf16 on CPUs with AMX): the crop still runs, in
    float32, giving the pixels it gives outside (CPU autocast once turned its sparse products into bf16 ones, which
    do not exist, and the patch stage failed)."""
    image = torch.randint(0, 256, (3, 300, 200), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    boxes = torch.tensor([[[10.0, 20.0, 190.0, 250.0], [-5.0, 0.0, 60.0, 70.0]]])
    plain = crop_patches([image], boxes, 32, ZERO, ONE)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = crop_patches([image], boxes, 32, ZERO, ONE)
    assert inside.dtype == torch.float32
    torch.testing.assert_close(inside, plain, rtol=0, atol=0)


def test_box_weights_are_remembered_within_a_memory_bound(monkeypatch):
    from agripatch.pipeline import crop

    first = crop.box_weights(np.array([3.0, 4.0, 40.0, 30.0]), 16, 3, 50, 60)
    assert crop.box_weights(np.array([3.0, 4.0, 40.0, 30.0]), 16, 3, 50, 60) is first  # built once
    assert not first.wy.flags.writeable  # shared: nobody may change it
    monkeypatch.setattr(crop, "CACHE_BYTES", 3 * crop._nbytes(first))
    for x in range(20):
        crop.box_weights(np.array([x, 4.0, 40.0 + x, 30.0]), 16, 3, 50, 80)
    assert crop._cached_bytes <= 3 * crop._nbytes(first) and len(crop._CACHE) <= 4
