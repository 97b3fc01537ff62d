"""The runtime's numpy twins of the torch pipeline's pixel and selection steps agree with torch itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align as tv_roi_align

from agripatch.models.geometry import ReceptiveField
from agripatch.pipeline import priors as tpriors
from agripatch.pipeline import select as tsel
from agripatch.runtime import priors
from agripatch.runtime.roi import crop_patches, roi_align, sampling_ratio
from agripatch.runtime.select import score_map, select_cells


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


@pytest.mark.parametrize("seed", range(4))
def test_select_cells_matches_torch_including_ties_and_fillers(seed):
    rng = np.random.default_rng(seed)
    for trial in range(30):
        rf = ReceptiveField(size=int(rng.integers(8, 70)), stride=int(rng.integers(4, 17)))
        side = int(rng.integers(rf.size, 160))
        boxes = rf.cell_boxes(side, side)
        k = int(rng.integers(1, min(len(boxes), 6) + 1))
        threshold = float(rng.choice([0.0, 0.1, 0.25, 0.5, 1.0]))
        scores = rng.normal(size=(4, len(boxes))).astype(np.float32)
        if trial % 3 == 0:
            scores = np.round(scores)  # many ties: the lowest cell index must win, as in torch
        ours = select_cells(scores, boxes.numpy(), k, threshold)
        ref = tsel.select_cells(torch.from_numpy(scores), boxes, k, threshold)
        for a, b in zip(ours, ref):
            assert np.array_equal(a, b.numpy()), trial


def test_score_map_matches_torch():
    rng = np.random.default_rng(0)
    cam = rng.normal(size=(5, 3, 4, 6)).astype(np.float32)
    logits = rng.normal(size=(5, 3)).astype(np.float32)
    for mode in ("predicted", "max"):
        ref = tsel.score_map(torch.from_numpy(cam), torch.from_numpy(logits), mode).numpy()
        assert np.array_equal(score_map(cam, logits, mode), ref)


def test_leaf_prior_ranking_matches_torch():
    # The shares come out of the exported glance graph; only the ranking rule is mirrored.
    rng = np.random.default_rng(2)
    glance = rng.random((3, 3, 96, 96), dtype=np.float32)
    glance[:, 1, :48] = np.clip(glance[:, 1, :48] * 2.5, 0, 1)  # a green top half: leafy and bare cells
    boxes = ReceptiveField(size=35, stride=8).cell_boxes(96, 96)
    share = tpriors.leaf_share(torch.from_numpy(glance), boxes).numpy()
    assert 0 < share.min() < 0.6 < share.max()  # random colours are ~42% plant pixels, the green half more
    scores = rng.normal(size=share.shape).astype(np.float32)
    ref = tpriors.apply_leaf_prior(torch.from_numpy(scores), torch.from_numpy(share), 0.6).numpy()
    assert np.array_equal(priors.apply_leaf_prior(scores, share, 0.6), ref)


def test_the_runtime_mirrors_every_cascade_option():
    """A new CascadeConfig option changes the torch cascade: mirror it in agripatch/runtime, then list it."""
    from agripatch.pipeline.config import CascadeConfig
    from agripatch.runtime.cascade import MIRRORED_OPTIONS

    assert set(CascadeConfig.model_fields) == set(MIRRORED_OPTIONS)
