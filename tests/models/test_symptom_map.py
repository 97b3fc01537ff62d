"""Symptom map: shapes, exact cell -> photo box geometry (by gradient), cell targets, severity_share, tiny overfit."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from agripatch.models.geometry import GeometryError, measure_locality
from agripatch.models.symptom_map import (
    SymptomMap,
    cell_targets,
    create_symptom_map,
    list_symptom_maps,
)
from agripatch.pipeline.severity import CHANNELS, severity_share


@functools.cache
def _model(name: str) -> SymptomMap:
    torch.manual_seed(1)
    return create_symptom_map(name).double().eval()


def test_registry_and_geometry_cfg():
    assert list_symptom_maps() == ["symptom_map_lite0_s8", "symptom_map_mbv2_s8"]
    cfg = _model("symptom_map_lite0_s8").cfg
    assert (cfg["receptive_field"], cfg["stride"], cfg["pad_before"], cfg["pad_after"]) == (67, 8, 30, 29)
    assert tuple(cfg["classes"]) == CHANNELS  # the network's channels are the ones severity reads
    cfg = _model("symptom_map_mbv2_s8").cfg
    assert (cfg["receptive_field"], cfg["stride"], cfg["pad_before"], cfg["pad_after"]) == (59, 8, 26, 25)


@pytest.mark.parametrize("name", ["symptom_map_lite0_s8", "symptom_map_mbv2_s8"])
def test_one_cell_per_block(name):
    model = _model(name)
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 96, dtype=torch.float64))
    assert out.shape == (2, 3, 8, 12)
    assert model.grid(256, 512) == (32, 64)
    with pytest.raises(GeometryError):
        model.grid(60, 96)


@pytest.mark.parametrize("name", ["symptom_map_lite0_s8", "symptom_map_mbv2_s8"])
def test_cell_box_is_exact(name):
    """The gradient of a cell's logits touches exactly its documented box (clipped to the photo at the edges,
    where the replicated border feeds the edge pixels)."""
    model = _model(name)
    h, w = 80, 104
    boxes = model.cell_boxes(h, w)
    gh, gw = model.grid(h, w)
    cells = [(0, 0), (gh // 2, gw // 2), (gh - 1, gw - 1), (3, 5)]
    measured = measure_locality(model, (3, h, w), cells)
    for (i, j), got in zip(cells, measured):
        x0, y0, x1, y1 = (int(v) for v in boxes[i * gw + j])
        assert (x1 - x0, y1 - y0) == (model.cfg["receptive_field"],) * 2
        assert (x0, y0) == (8 * j - model.pad_before, 8 * i - model.pad_before)
        assert got == (max(x0, 0), max(y0, 0), min(x1, w), min(y1, h))
    unpadded = measure_locality(model.forward_unpadded, (3, 120, 120), (2, 3))  # the network alone
    rf = model.receptive_field
    assert unpadded == rf.cell_box(2, 3) == (24, 16, 24 + rf.size, 16 + rf.size)


def test_block_is_centred_in_its_box_within_half_a_pixel():
    model = _model("symptom_map_lite0_s8")
    box, block = model.cell_boxes(64, 64)[9], model.cell_blocks(64, 64)[9]
    assert block.tolist() == [8.0, 8.0, 16.0, 16.0]
    assert ((box[:2] + box[2:]) / 2 - (block[:2] + block[2:]) / 2).abs().max().item() == 0.5


def test_cell_targets_are_block_shares():
    mask = np.zeros((16, 16), np.uint8)
    mask[:8, :8] = 1
    mask[:2, :8] = 2  # block (0, 0): 48 leaf + 16 symptom pixels of 64
    mask[8:, 8:] = 2
    targets = cell_targets(mask, 8)
    assert targets.shape == (3, 2, 2)
    assert targets[:, 0, 0].tolist() == [0.0, 0.75, 0.25]
    assert targets[:, 1, 1].tolist() == [0.0, 0.0, 1.0]
    assert targets[:, 0, 1].tolist() == [1.0, 0.0, 0.0]
    # the share of the targets is the mask's: 16 + 64 symptom of 48 + 16 + 64 leaf pixels
    assert float(severity_share(targets)) == pytest.approx(100 * 80 / 128, abs=1e-12)
    with pytest.raises(ValueError):
        cell_targets(mask[:12], 8)


def test_severity_share_exact_on_a_hand_made_map():
    hard = torch.zeros(1, 3, 2, 4)  # one-hot map: 2 background, 4 leaf, 2 symptom cells
    labels = torch.tensor([[0, 1, 1, 2], [0, 1, 1, 2]])
    hard[0].scatter_(0, labels[None], 1.0)
    assert severity_share(hard).tolist() == [pytest.approx(100 * 2 / 6, abs=1e-5)]
    soft = np.zeros((3, 1, 2))
    soft[:, 0, 0] = [0.5, 0.25, 0.25]
    soft[:, 0, 1] = [0.0, 0.5, 0.5]
    assert float(severity_share(soft)) == pytest.approx(100 * 0.75 / 1.5, abs=1e-12)
    assert float(severity_share(np.zeros((3, 2, 2)))) == 0.0  # no leaf at all


def test_tiny_overfit_on_a_synthetic_mask():
    """A few steps on one synthetic leaf with a symptom patch: the loss drops and the share moves toward the truth."""
    torch.manual_seed(0)
    model = create_symptom_map("symptom_map_mbv2_s8")
    h, w = 48, 64
    mask = np.zeros((h, w), np.uint8)
    mask[8:40, 8:56] = 1
    mask[16:32, 24:40] = 2
    image = np.zeros((3, h, w), np.float32)
    image[:, mask == 1] = np.array([-0.5, 1.0, -0.5], np.float32)[:, None]  # green leaf
    image[:, mask == 2] = np.array([1.0, 0.3, -1.0], np.float32)[:, None]  # orange symptom
    x = torch.from_numpy(image)[None]
    target = torch.from_numpy(cell_targets(mask, 8))[None]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = -(target * model(x).log_softmax(dim=1)).sum(dim=1).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    truth = 100 * (mask == 2).sum() / (mask >= 1).sum()
    model.train()  # one image: BatchNorm's running statistics are not yet those of the batch
    with torch.no_grad():
        share = float(severity_share(model(x).softmax(dim=1)))
    assert abs(share - truth) < 10
