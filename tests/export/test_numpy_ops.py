"""The runtime's numpy crop agrees with torchvision's roi_align, and the leaf prior ranks as it says."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from agripatch.models.geometry import ReceptiveField
from agripatch.pipeline import priors as tpriors
from agripatch.pipeline import select as tsel
from agripatch.pipeline.cells import apply_share_prior
from agripatch.runtime.roi import crop_patches, roi_align, sampling_ratio


def _random_boxes(rng, h, w, k, integer):
    x0, y0 = rng.uniform(-4, w, k), rng.uniform(-4, h, k)
    bw, bh = rng.uniform(0.5, 0.8 * w, k), rng.uniform(0.5, 0.8 * h, k)
    if integer:
        x0, y0, bw, bh = np.round(x0), np.round(y0), np.ceil(bw), np.ceil(bh)
    return np.stack([x0, y0, x0 + bw, y0 + bh], 1).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_roi_align_matches_torchvision(seed):
    rng = np.random.default_rng(seed)
    for trial in range(20):
        h, w = (int(v) for v in rng.integers(16, 400, 2))
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        size = int(rng.choice([8, 32, 64, 128]))
        boxes = _random_boxes(rng, h, w, 3, integer=trial % 2 == 0)
        grid = sampling_ratio(boxes, size)
        ours = roi_align(image, boxes, size, grid)
        ref = tv_roi_align(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255.0, [torch.from_numpy(boxes)],
                           output_size=(size, size), spatial_scale=1.0, sampling_ratio=grid, aligned=True).numpy()
        # torch sums grid * grid samples in float32: its rounding grows with the grid (up to ~3e-6 at 50 x 50)
        assert np.abs(ours - ref).max() <= (1e-6 if grid <= 8 else 5e-6), (trial, grid)


def test_crop_patches_matches_the_torch_pipeline():
    rng = np.random.default_rng(7)
    images = [rng.integers(0, 256, (int(h), int(w), 3), dtype=np.uint8) for h, w in [(300, 200), (128, 512), (90, 90)]]
    boxes = np.stack([_random_boxes(rng, im.shape[0], im.shape[1], 3, integer=False) for im in images])
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ours = crop_patches(images, boxes, 64, mean, std)
    ref = tsel.crop_patches([torch.from_numpy(im).permute(2, 0, 1) for im in images], torch.from_numpy(boxes), 64,
                            mean, std).numpy().reshape(ours.shape)
    assert np.abs(ours - ref).max() <= 5e-6


def test_leaf_prior_ranks_bare_cells_last_in_their_own_order():
    rng = np.random.default_rng(2)
    glance = rng.random((3, 3, 96, 96), dtype=np.float32)
    glance[:, 1, :48] = np.clip(glance[:, 1, :48] * 2.5, 0, 1)  # a green top half: leafy and bare cells
    boxes = ReceptiveField(size=35, stride=8).cell_boxes(96, 96)
    share = tpriors.leaf_share(torch.from_numpy(glance), boxes).numpy()
    assert 0 < share.min() < 0.6 < share.max()  # random colours are ~42% plant pixels, the green half more
    scores = rng.normal(size=share.shape).astype(np.float32)
    ranked = apply_share_prior(scores, share, 0.6)
    leafy = share >= 0.6
    for row in range(3):
        order = np.argsort(-ranked[row], kind="stable")
        assert leafy[row, order[:leafy[row].sum()]].all()  # every leafy cell first
        bare = order[leafy[row].sum():]
        assert np.array_equal(bare, np.flatnonzero(~leafy[row])[np.argsort(-scores[row, ~leafy[row]], kind="stable")])
    assert np.array_equal(ranked[leafy], scores[leafy])
