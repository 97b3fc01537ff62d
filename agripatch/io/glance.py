"""The glance: a whole photo shrunk to a network's square input, made the way training's evaluation makes it.

Training's loaders decode a photo reduced down to the input size (JPEG DCT scaling by 2, 4 or 8 while the
shorter side stays >= the size, :func:`agripatch.io.images.jpeg_reduction`) and then resize it with OpenCV's
area filter (``A.Resize(..., cv2.INTER_AREA)``; each output pixel the average of the input pixels its
footprint covers, so a 4000-pixel photo does not alias into 160 cells). Inference does the same two steps:
:func:`glance_source` picks those decoded pixels (the photo's own decode when it is the same one, else a
second, reduced decode of the file) and :func:`glance_array` shrinks them. One torch-free module, so the torch
cascade and the ONNX runtime agree exactly and no numpy twin of another library's kernel is kept in step.
Shrinking an already decoded larger image instead (a 2x area average where training saw a DCT-scaled decode)
cost the PlantVillage 128-px baseline 4.4 points (15 photos against 1, 3 seeds).

Measured on the iBean 500x500 photos (one thread): 0.58 ms a photo to a 160 glance, against 1.2 ms for
PyTorch's float antialiased bilinear resize that the torch cascade used before and 5.3 ms for its numpy
twin in the ONNX runtime (the decoding worker's largest cost in `predict folder`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from agripatch.io.images import decodes_reduced, jpeg_reduction, read_image

__all__ = ["glance_array", "glance_batch", "glance_source", "read_glance", "shrink_array"]

_F32 = np.float32


def glance_array(image: np.ndarray, size: int) -> np.ndarray:
    """One HWC RGB photo (uint8 0..255, or float 0..1) as its glance: [3, size, size] float32 in 0..1.

    The aspect ratio is not kept: AnchorNet was trained on whole photos squeezed to a square.
    """
    if not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"glance size must be a positive int, got {size!r}")
    return shrink_array(image, int(size), int(size))


def shrink_array(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """One HWC RGB photo (uint8 0..255, or float 0..1) resized to ``height`` x ``width`` with the area filter:
    [3, height, width] float32 in 0..1. The glance (square) and the symptom map's input (the photo's own aspect)
    are both made by it, in both backends."""
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"photos must be HWC RGB, got shape {image.shape}")
    if image.dtype == np.uint8:
        small = cv2.resize(np.ascontiguousarray(image), (int(width), int(height)), interpolation=cv2.INTER_AREA)
        out = np.ascontiguousarray(small.transpose(2, 0, 1), dtype=_F32)
        out /= _F32(255.0)
        return out
    if not np.issubdtype(image.dtype, np.floating):
        raise ValueError(f"photos must be uint8 or float, got {image.dtype}")
    pixels = np.ascontiguousarray(image, dtype=_F32)
    small = cv2.resize(pixels, (int(width), int(height)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small.transpose(2, 0, 1))


def glance_batch(images: Sequence[np.ndarray], size: int) -> np.ndarray:
    """Glances of HWC photos stacked to [B, 3, size, size] float32 in 0..1 (see :func:`glance_array`)."""
    if not len(images):
        return np.zeros((0, 3, size, size), _F32)
    return np.stack([glance_array(image, size) for image in images])


def glance_source(path: str | Path, decoded: np.ndarray, original_hw: tuple[int, int], size: int) -> np.ndarray:
    """The pixels to shrink into a ``size`` glance of the file ``path``: as training's loader decodes it for that
    size (see the module docstring). ``decoded`` (upright, from ``original_hw``) is reused when it is that decode."""
    factor = jpeg_reduction(int(original_hw[0]), int(original_hw[1]), int(size))
    if decoded.shape[:2] == (math.ceil(original_hw[0] / factor), math.ceil(original_hw[1] / factor)):
        return decoded
    if decoded.shape[:2] == tuple(original_hw) and not decodes_reduced(path):
        return decoded  # a PNG, TIFF...: never reduced, so a second decode would give these very pixels
    return read_image(path, min_side=int(size))


def read_glance(path: str | Path, size: int) -> np.ndarray:
    """The ``size`` glance of an image file, [3, size, size] float32 in 0..1, exactly as training evaluates it."""
    return glance_array(read_image(path, min_side=int(size)), size)
