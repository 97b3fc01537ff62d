"""Full-resolution patches in PyTorch: the chosen cells' boxes (:mod:`agripatch.pipeline.cells`, mapped to the
photo's pixels by :mod:`agripatch.pipeline.boxes`) cut from the ORIGINAL photo with torchvision's ``roi_align``,
and how large a photo must be decoded so that no patch loses pixels.

Boxes everywhere are ``(x0, y0, x1, y1)`` float pixels, end-exclusive: a box ``(0, 0, 4, 4)``
covers pixels 0..3, so a box's width is ``x1 - x0``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.ops import roi_align

__all__ = ["crop_patches", "decode_min_side"]


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
