"""From an AnchorNet score grid to full-resolution patches.

Three steps, each a pure tensor function so it can be tested on its own:

1. :func:`cell_scores` turns the class activation map into one score per grid cell;
2. :func:`select_cells` keeps K cells with greedy IoU suppression on their fixed-size boxes;
3. :func:`map_boxes` moves the boxes from the glance input to the photo's pixels, and
   :func:`crop_patches` cuts them from the ORIGINAL photo at full resolution.

Boxes everywhere are ``(x0, y0, x1, y1)`` float pixels, end-exclusive: a box ``(0, 0, 4, 4)``
covers pixels 0..3, so a box's width is ``x1 - x0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, Union

import torch
from torch import Tensor
from torchvision.ops import box_iou, roi_align

from agripatch.pipeline.boxes import scale_boxes

ScoreMode = Union[str, int, Tensor]
HW = Union[Sequence[int], Tensor]

__all__ = [
    "Selection",
    "cell_scores",
    "crop_patches",
    "decode_min_side",
    "map_boxes",
    "score_map",
    "select_cells",
]


class Selection(NamedTuple):
    """K selected cells per image, best first.

    ``indices`` are row-major cell indices [B, K] (long), ``boxes`` their boxes [B, K, 4],
    ``scores`` their scores [B, K], and ``from_nms`` [B, K] (bool) tells which cells survived
    the IoU suppression (False = filler taken with the threshold relaxed).
    """

    indices: Tensor
    boxes: Tensor
    scores: Tensor
    from_nms: Tensor


def score_map(cam: Tensor, logits: Tensor, mode: ScoreMode = "predicted") -> Tensor:
    """Reduce a class activation map [B, C, gh, gw] to one score map [B, gh, gw].

    ``mode`` picks which class's evidence ranks the cells:

    * ``"predicted"``: the CAM of each image's arg-max class in ``logits`` (the paper's choice:
      look where the network sees the disease it believes in);
    * ``"max"``: the maximum over classes, cell by cell (class-agnostic "anything salient");
    * an ``int`` or a long Tensor [B]: the CAM of that given class (e.g. the ground truth, for
      visualisation or oracle studies).
    """
    if cam.ndim != 4:
        raise ValueError(f"cam must be [B, C, gh, gw], got shape {tuple(cam.shape)}")
    b, c = cam.shape[:2]
    if logits.shape != (b, c):
        raise ValueError(f"logits must be [B, C] = {(b, c)}, got {tuple(logits.shape)}")
    if isinstance(mode, str):
        if mode == "max":
            return cam.amax(dim=1)
        if mode != "predicted":
            raise ValueError(f"unknown score mode {mode!r}: use 'predicted', 'max' or a class index")
        classes = logits.argmax(dim=1)
    elif isinstance(mode, Tensor):
        classes = mode.to(device=cam.device, dtype=torch.long).reshape(-1)
        if classes.numel() != b:
            raise ValueError(f"need one class per image ({b}), got {classes.numel()}")
    elif isinstance(mode, int) and not isinstance(mode, bool):
        classes = torch.full((b,), mode, dtype=torch.long, device=cam.device)
    else:
        raise ValueError(f"unknown score mode {mode!r}: use 'predicted', 'max' or a class index")
    if classes.numel() and (classes.min() < 0 or classes.max() >= c):
        raise ValueError(f"class index out of range [0, {c})")
    return cam[torch.arange(b, device=cam.device), classes]


def cell_scores(cam: Tensor, logits: Tensor, mode: ScoreMode = "predicted") -> Tensor:
    """Per-cell scores flattened row-major to [B, gh * gw], the order of ``cell_boxes``.

    See :func:`score_map` for the modes.
    """
    return score_map(cam, logits, mode).flatten(1)


def select_cells(scores: Tensor, boxes: Tensor, k: int, iou_threshold: float) -> Selection:
    """Pick K cells per image by greedy IoU suppression on the grid's fixed boxes.

    Greedy NMS (as :func:`torchvision.ops.nms`: a cell is dropped when its IoU with an already
    kept, higher-scoring cell is ``> iou_threshold``) stopped after K picks, vectorised over the
    batch: the boxes are the same for every image, so their IoU matrix is computed once and
    each of the K steps is one arg-max over [B, N]. There is no loop over images, and ties are
    broken by the lowest cell index, so a batch gives exactly what its images give one at a
    time.

    There are ALWAYS K cells per image: when suppression leaves fewer than K, the remaining
    slots are filled with the highest-scoring cells not yet picked (the threshold is relaxed,
    so fillers may overlap). Order: the NMS survivors by decreasing score, then the fillers by
    decreasing score; so ``scores`` is sorted within each of the two groups, and the first
    patches the cascade reads are the distinct ones.

    Args:
        scores: [B, N] finite cell scores (row-major cells).
        boxes: [N, 4] cell boxes (x0, y0, x1, y1).
        k: cells per image, 1 <= k <= N.
        iou_threshold: in [0, 1]; 1 disables suppression.

    Raises:
        ValueError: on wrong shapes, N < k, non-finite scores or a threshold outside [0, 1].
    """
    if scores.ndim != 2:
        raise ValueError(f"scores must be [B, N], got shape {tuple(scores.shape)}")
    if boxes.ndim != 2 or boxes.shape[1] != 4 or boxes.shape[0] != scores.shape[1]:
        raise ValueError(f"boxes must be [N={scores.shape[1]}, 4], got shape {tuple(boxes.shape)}")
    n = scores.shape[1]
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < k:
        raise ValueError(f"cannot select k={k} cells from a grid of {n} cells")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    if not scores.is_floating_point():
        raise ValueError(f"scores must be floating point, got {scores.dtype}")
    if not torch.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")

    b = scores.shape[0]
    device = scores.device
    boxes = boxes.to(device)
    overlaps = box_iou(boxes.float(), boxes.float()) > iou_threshold  # [N, N]; diagonal True
    rows = torch.arange(b, device=device)
    picked = torch.zeros(b, n, dtype=torch.bool, device=device)
    suppressed = torch.zeros_like(picked)

    indices, from_nms = [], []
    for _ in range(k):
        candidates = ~(picked | suppressed)
        has_candidate = candidates.any(dim=1)
        # NMS survivors first; once an image has none left, any not-yet-picked cell fills.
        pool = torch.where(has_candidate[:, None], candidates, ~picked)
        # Scores are finite, so -inf never wins; argmax returns the first maximum (lowest index).
        choice = scores.masked_fill(~pool, float("-inf")).argmax(dim=1)
        picked[rows, choice] = True
        suppressed |= overlaps[choice]
        indices.append(choice)
        from_nms.append(has_candidate)

    idx = torch.stack(indices, dim=1)
    return Selection(
        indices=idx,
        boxes=boxes[idx],
        scores=scores.gather(1, idx),
        from_nms=torch.stack(from_nms, dim=1),
    )


def map_boxes(boxes: Tensor, from_hw: HW, to_hw: HW) -> Tensor:
    """Map boxes [..., 4] from an image of size ``from_hw`` to the same content at ``to_hw`` (torch front of
    :func:`agripatch.pipeline.boxes.scale_boxes`, the one rule: a per-axis scale in float64, clamped).

    ``from_hw`` / ``to_hw`` are one ``(H, W)`` for all boxes or a [B, 2] tensor of per-image
    sizes; with per-image sizes ``boxes`` must be [B, ..., 4].
    """
    as_array = lambda hw: hw.detach().cpu().double().numpy() if isinstance(hw, Tensor) else hw  # noqa: E731
    out_dtype = boxes.dtype if boxes.is_floating_point() else torch.float32
    mapped = scale_boxes(boxes.detach().cpu().double().numpy(), as_array(from_hw), as_array(to_hw))
    return torch.from_numpy(mapped).to(device=boxes.device, dtype=out_dtype)


def _as_float_image(image: Tensor, device: torch.device) -> Tensor:
    """[3, H, W] uint8 (0..255) or float (0..1) -> float32 [1, 3, H, W] in 0..1 on ``device``."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"originals must be [3, H, W] tensors, got shape {tuple(image.shape)}")
    image = image.to(device)  # move before converting: uint8 is 4x cheaper to transfer
    if image.dtype == torch.uint8:
        return (image.to(torch.float32) / 255.0)[None]
    if not image.is_floating_point():
        raise ValueError(f"originals must be uint8 or float, got {image.dtype}")
    return image.to(torch.float32)[None]


def crop_patches(
    originals: Sequence[Tensor] | Tensor,
    boxes: Tensor,
    out_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    *,
    device: torch.device | str | None = None,
) -> Tensor:
    """Cut K boxes per photo from the full-resolution originals, resized to S x S and normalised.

    Uses :func:`torchvision.ops.roi_align` with ``aligned=True`` (pixel i covers [i, i + 1),
    so an integer-aligned box at scale 1 reproduces the pixels exactly) and
    ``sampling_ratio = ceil(box side / out_size)`` (largest box of the photo): each output pixel
    averages a grid of samples at least as dense as the source pixels, so shrinking a large box
    behaves like an area (box-filter) resize instead of aliasing; boxes smaller than S are
    bilinearly upsampled. The originals may all have different sizes (one roi_align call per
    photo, all its boxes at once).

    Args:
        originals: B photos [3, H_i, W_i], uint8 in 0..255 or float in 0..1, or a [B, 3, H, W]
            tensor.
        boxes: [B, K, 4] boxes in each photo's own pixels (see :func:`map_boxes`).
        out_size: side S of the square patches.
        mean, std: per-channel normalisation of the downstream classifier (0..1 scale).
        device: where to crop; defaults to ``boxes.device``.

    Returns:
        [B * K, 3, S, S] float32, image-major (patch k of image b at ``b * K + k``).
    """
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"boxes must be [B, K, 4], got shape {tuple(boxes.shape)}")
    if len(originals) != boxes.shape[0]:
        raise ValueError(f"{len(originals)} originals but boxes for {boxes.shape[0]} images")
    if out_size < 1:
        raise ValueError(f"out_size must be >= 1, got {out_size}")
    if len(mean) != 3 or len(std) != 3:
        raise ValueError("mean and std need 3 values (RGB)")
    target = torch.device(device) if device is not None else boxes.device
    sides = (boxes[..., 2:] - boxes[..., :2]).to(torch.float64)
    if (sides <= 0).any():
        raise ValueError("every box needs x1 > x0 and y1 > y0")
    mean_t = torch.tensor(mean, dtype=torch.float32, device=target).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32, device=target).view(1, 3, 1, 1)

    crops = []
    for image, image_boxes, image_sides in zip(originals, boxes, sides):
        img = _as_float_image(image, target)
        sampling = max(1, math.ceil(float(image_sides.max()) / out_size))
        crops.append(
            roi_align(
                img,
                [image_boxes.to(device=target, dtype=torch.float32)],
                output_size=(out_size, out_size),
                spatial_scale=1.0,
                sampling_ratio=sampling,
                aligned=True,
            )
        )
    if not crops:
        return torch.empty(0, 3, out_size, out_size, device=target)
    return (torch.cat(crops) - mean_t) / std_t


def decode_min_side(glance_size: int, patch_size: int, receptive_field: int) -> int:
    """Shorter side a photo must keep so that nothing the cascade looks at loses pixels.

    The glance needs ``glance_size`` pixels per side; a patch is one AnchorNet cell, ``receptive_field``
    glance pixels, i.e. ``receptive_field * side / glance_size`` photo pixels, and should have at least
    ``patch_size`` of them: ``side >= patch_size * glance_size / receptive_field``. A 48-MP photo is then
    decoded at 1/2..1/8 (JPEG DCT scaling) whenever its short side allows, which is most of the cost.
    """
    if min(glance_size, patch_size, receptive_field) < 1:
        raise ValueError("glance_size, patch_size and receptive_field must be positive")
    return max(int(glance_size), math.ceil(patch_size * glance_size / receptive_field))
