"""The patch crop in numpy for the torch-free runtime: the weight matrices of :mod:`agripatch.pipeline.crop` (the one
crop rule, torchvision's ``roi_align(aligned=True)``) applied with numpy in float32, as PyTorch's crop computes, in
their compressed-row form (scipy): the dense float64 products were most of a high-res photo's time on this backend
(`benchmarks/README.md`, "Where the cascade's time goes")."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agripatch.pipeline.crop import box_weights, sampling_ratio

__all__ = ["crop_patches", "normalise", "roi_align", "sampling_ratio"]


def roi_align(image: np.ndarray, boxes: np.ndarray, out_size: int, grid: int) -> np.ndarray:
    """Boxes [K, 4] (x0, y0, x1, y1, photo pixels) of one HWC photo -> [K, 3, S, S] float32, unnormalised.

    ``image`` is HWC, uint8 (converted to float32 / 255 like the torch path) or float; ``grid`` is the
    sampling ratio (see :func:`sampling_ratio`). Only the rows and columns a box touches are converted.
    """
    height, width = image.shape[:2]
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    out = np.zeros((len(boxes), 3, out_size, out_size), np.float32)
    for k, box in enumerate(boxes):
        w = box_weights(box, out_size, grid, height, width)
        if w is None:
            continue
        window = _unit_float32(np.asarray(image[w.y0:w.y1, w.x0:w.x1]))  # [h, w, 3]
        columns = w.x1 - w.x0
        wy, wx = w.sparse
        rows = wy @ window.reshape(w.y1 - w.y0, -1)  # [S, w * 3]: output rows, sparse weights
        rows = rows.reshape(out_size, columns, 3).transpose(1, 0, 2).reshape(columns, -1)  # [w, S * 3]
        both = wx @ rows  # [S (x), S (y) * 3]
        out[k] = both.reshape(out_size, out_size, 3).transpose(2, 1, 0).astype(np.float32)  # [3, S (y), S (x)]
    return out


def normalise(x: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """``(x - mean) / std`` per channel of an [N, 3, H, W] batch, in float32 (the runtime's one normalisation:
    patches, a classifier glance, the full-image exit's photo)."""
    m = np.asarray(mean, np.float32).reshape(1, 3, 1, 1)
    s = np.asarray(std, np.float32).reshape(1, 3, 1, 1)
    return (x - m) / s


def crop_patches(images: Sequence[np.ndarray], boxes: np.ndarray, out_size: int, mean: Sequence[float],
                 std: Sequence[float], slot: int | None = None) -> np.ndarray:
    """Patches cut from full-resolution HWC photos, normalised ``(x - mean) / std`` in float32: all K boxes of each
    photo ([B, K, 3, S, S]), or only box ``slot`` ([B, 3, S, S]); the sampling ratio always comes from all K."""
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 3 or boxes.shape[-1] != 4 or boxes.shape[0] != len(images):
        raise ValueError(f"boxes must be [B={len(images)}, K, 4], got shape {boxes.shape}")
    picked = range(boxes.shape[1]) if slot is None else [slot]
    out = np.empty((len(images), len(picked), 3, out_size, out_size), np.float32)
    for b, (image, photo_boxes) in enumerate(zip(images, boxes)):
        crops = roi_align(image, photo_boxes[list(picked)], out_size, sampling_ratio(photo_boxes, out_size))
        out[b] = normalise(crops, mean, std)
    return out if slot is None else out[:, 0]


def _unit_float32(pixels: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> 0..1 float32 (as ``tensor.to(float32) / 255.0``); floats as float32."""
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255.0)
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ValueError(f"photos must be uint8 or float, got {pixels.dtype}")
    return pixels.astype(np.float32, copy=False)
