"""Patch cropping in numpy: torchvision's ``roi_align(aligned=True)`` without torch.

The torch pipeline cuts its patches with :func:`agripatch.pipeline.select.crop_patches`: the photo as float32
0..1, ``roi_align(output_size=S, spatial_scale=1, sampling_ratio=ceil(largest box side / S), aligned=True)``,
then ``(x - mean) / std``. Each output pixel averages a ``g x g`` grid of bilinear samples. The sample
coordinates and bilinear weights are computed here in float32 exactly like torchvision's CPU kernel
(``roi_align_kernel.cpp``: ``pre_calc_for_bilinear_interpolate``), including its border rules (a sample more
than one pixel outside is zero, one within is clamped to the edge). Because a sample's weight is the product
of a y weight and an x weight, the crop is ``Wy @ image @ Wx.T`` with two small matrices. Keep in sync with
``crop_patches`` and torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np


__all__ = ["crop_patches", "roi_align", "sampling_ratio"]

_F32 = np.float32


def sampling_ratio(boxes: np.ndarray, out_size: int) -> int:
    """Samples per output pixel and axis for one photo's boxes: ``ceil(largest side / S)``, at least 1.

    Sides are taken in float32 then widened, as ``crop_patches`` does with its float32 boxes.
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    sides = (boxes[..., 2:] - boxes[..., :2]).astype(np.float64)
    if (sides <= 0).any():
        raise ValueError("every box needs x1 > x0 and y1 > y0")
    return max(1, math.ceil(float(sides.max()) / out_size)) if sides.size else 1


def _axis_weights(start: np.float32, end: np.float32, out_size: int, grid: int, limit: int) -> np.ndarray:
    """[out_size, limit] float64: how much each input row (or column) adds to each output row, summed over
    the ``grid`` samples of every output bin (divide by grid * grid afterwards)."""
    begin = _F32(start - _F32(0.5))  # aligned=True: pixel i covers [i, i + 1)
    length = _F32(_F32(end - _F32(0.5)) - begin)
    bin_size = _F32(length / _F32(out_size))
    p = np.arange(out_size, dtype=np.float32)[:, None]
    i = np.arange(grid, dtype=np.float32)[None, :]
    coord = (begin + p * bin_size) + ((i + _F32(0.5)) * bin_size) / _F32(grid)  # float32 throughout
    valid = ~((coord < -1.0) | (coord > limit))
    coord = np.where(coord <= 0, _F32(0.0), coord).astype(np.float32)
    low = coord.astype(np.int64)
    at_end = low >= limit - 1
    low = np.where(at_end, limit - 1, low)
    high = np.where(at_end, limit - 1, low + 1)
    coord = np.where(at_end, low.astype(np.float32), coord).astype(np.float32)
    frac = (coord - low.astype(np.float32)).astype(np.float32)
    keep = (_F32(1.0) - frac).astype(np.float32)
    weights = np.zeros((out_size, limit), np.float64)
    rows = np.broadcast_to(np.arange(out_size)[:, None], low.shape)
    np.add.at(weights, (rows[valid], low[valid]), keep[valid].astype(np.float64))
    np.add.at(weights, (rows[valid], high[valid]), frac[valid].astype(np.float64))
    return weights


def roi_align(image: np.ndarray, boxes: np.ndarray, out_size: int, grid: int) -> np.ndarray:
    """Boxes [K, 4] (x0, y0, x1, y1, photo pixels) of one HWC photo -> [K, 3, S, S] float32, unnormalised.

    ``image`` is HWC, uint8 (converted to float32 / 255 like the torch path) or float; ``grid`` is the
    sampling ratio (see :func:`sampling_ratio`). Only the rows and columns a box touches are converted.
    """
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    out = np.zeros((len(boxes), 3, out_size, out_size), np.float32)
    count = float(max(grid * grid, 1))
    for k, (x0, y0, x1, y1) in enumerate(boxes):
        wy = _axis_weights(y0, y1, out_size, grid, height)
        wx = _axis_weights(x0, x1, out_size, grid, width)
        ys, xs = np.flatnonzero(wy.any(axis=0)), np.flatnonzero(wx.any(axis=0))
        if not len(ys) or not len(xs):
            continue
        ya, yb, xa, xb = ys[0], ys[-1] + 1, xs[0], xs[-1] + 1
        window = _unit_float64(np.asarray(image[ya:yb, xa:xb]))  # [h, w, 3]
        rows = wy[:, ya:yb] @ window.reshape(yb - ya, -1)  # [S, w * 3]
        rows = rows.reshape(out_size, xb - xa, 3).transpose(2, 0, 1)  # [3, S, w]
        out[k] = ((rows @ wx[:, xa:xb].T) / count).astype(np.float32)
    return out


def crop_patches(images: Sequence[np.ndarray], boxes: np.ndarray, out_size: int, mean: Sequence[float],
                 std: Sequence[float]) -> np.ndarray:
    """K patches per photo cut from full-resolution HWC photos, normalised: [B, K, 3, S, S] float32.

    The numpy twin of :func:`agripatch.pipeline.select.crop_patches` (one sampling ratio per photo, from its
    largest box; normalisation ``(x - mean) / std`` in float32).
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != len(images):
        raise ValueError(f"boxes must be [B={len(images)}, K, 4], got shape {boxes.shape}")
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    out = np.empty((len(images), boxes.shape[1], 3, out_size, out_size), np.float32)
    for b, (image, photo_boxes) in enumerate(zip(images, boxes)):
        crops = roi_align(image, photo_boxes, out_size, sampling_ratio(photo_boxes, out_size))
        out[b] = (crops - m) / s
    return out


def _unit_float64(pixels: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> 0..1 (divided in float32 first, as ``tensor.to(float32) / 255.0``), in float64; floats as float64."""
    if pixels.dtype == np.uint8:
        return (pixels.astype(np.float32) / np.float32(255.0)).astype(np.float64)
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ValueError(f"photos must be uint8 or float, got {pixels.dtype}")
    return pixels.astype(np.float32, copy=False).astype(np.float64)
