"""The glance resize in numpy: ``F.interpolate(mode="bilinear", antialias=True, align_corners=False)`` without torch.

The torch pipeline makes its glance with :func:`agripatch.data.photos.make_glance` (uint8 -> float32 / 255, then
PyTorch's antialiased bilinear resize). The ONNX runtime must feed AnchorNet the same pixels, so this module
reproduces PyTorch's CPU algorithm: a separable resize, the horizontal pass first then the vertical one, each
output pixel a normalised sum of a triangle filter stretched by the scale factor when shrinking (the
antialiasing), with the filter weights computed in float32 exactly as ATen computes them. Keep in sync with
``aten/src/ATen/native/cpu/UpSampleKernel.cpp`` (``_compute_weights_aa``) and ``make_glance``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

__all__ = ["aa_weights", "make_glances", "resize_glance", "to_unit_float"]

_F32 = np.float32


def _triangle(x: float) -> float:
    """PyTorch's bilinear antialiasing filter, evaluated in float32 like ATen's ``aa_filter``."""
    x = abs(_F32(x))
    return _F32(1.0 - float(x)) if x < 1.0 else _F32(0.0)


@lru_cache(maxsize=64)
def aa_weights(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Filter taps of one axis: ``(first [out] int64, weights [out, taps] float32)``.

    Output pixel i is ``sum_j weights[i, j] * input[first[i] + j]`` (taps past the row end weigh 0). The
    arithmetic follows ATen's float32 path step by step (scale, centre, support, normalisation), so the
    weights are the ones torch uses, not merely close to them. Cached: every photo of a size reuses them.
    """
    if in_size < 1 or out_size < 1:
        raise ValueError(f"sizes must be positive, got {in_size} -> {out_size}")
    scale = _F32(_F32(in_size) / _F32(out_size))
    support = _F32(1.0 * float(scale)) if scale >= 1.0 else _F32(1.0)
    taps = int(math.ceil(float(support))) * 2 + 1
    invscale = _F32(1.0 / float(scale)) if scale >= 1.0 else _F32(1.0)
    first = np.zeros(out_size, np.int64)
    weights = np.zeros((out_size, taps), np.float32)
    for i in range(out_size):
        center = _F32(float(scale) * (i + 0.5))
        xmin = max(int(float(_F32(center - support)) + 0.5), 0)
        xsize = min(int(float(_F32(center + support)) + 0.5), in_size) - xmin
        total = _F32(0.0)
        row = np.zeros(taps, np.float32)
        for j in range(xsize):
            w = _triangle((float(_F32(_F32(j + xmin) - center)) + 0.5) * float(invscale))
            row[j] = w
            total = _F32(total + w)
        if total != 0.0:
            row[:xsize] = row[:xsize] / total
        first[i] = xmin
        weights[i] = row
    return first, weights


def _resample(x: np.ndarray, axis: int, out_size: int) -> np.ndarray:
    """One separable pass along ``axis`` of a float32 array, summing the taps in order (as ATen does)."""
    n = x.shape[axis]
    if n == out_size:
        return x
    first, weights = aa_weights(n, out_size)
    out_shape = list(x.shape)
    out_shape[axis] = out_size
    out = np.zeros(out_shape, np.float32)
    shape = [1] * x.ndim
    shape[axis] = out_size
    for j in range(weights.shape[1]):
        index = np.minimum(first + j, n - 1)  # taps past the end have weight 0
        w = weights[:, j].reshape(shape)
        if not w.any():
            continue
        out += np.take(x, index, axis=axis) * w
    return out


def to_unit_float(image: np.ndarray) -> np.ndarray:
    """uint8 0..255 -> float32 0..1 (division in float32, as ``tensor.to(float32) / 255.0``); floats pass as float32."""
    if image.dtype == np.uint8:
        return image.astype(np.float32) / _F32(255.0)
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"photos must be uint8 or float, got {image.dtype}")
    return image.astype(np.float32, copy=False)


def resize_glance(image: np.ndarray, size: int) -> np.ndarray:
    """One photo (HWC RGB, uint8 or float 0..1) as its glance: [3, size, size] float32 in 0..1, aspect not kept."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"photos must be HWC RGB, got shape {image.shape}")
    x = to_unit_float(image)
    x = _resample(x, 1, size)  # horizontal first, like ATen
    x = _resample(x, 0, size)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def make_glances(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Glances of HWC photos stacked to [B, 3, size, size] float32 (numpy twin of ``make_glance``)."""
    if not len(images):
        return np.zeros((0, 3, size, size), np.float32)
    return np.stack([resize_glance(image, size) for image in images])
