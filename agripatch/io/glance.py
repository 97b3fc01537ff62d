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

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from agripatch.io.images import decodes_reduced, read_image, reduced_hw

__all__ = ["PhotoFile", "glance_array", "glance_batch", "glance_pixels", "glance_source", "read_glance", "reduced_at_least",
           "shrink_array", "whole_photo"]

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


class PhotoFile(NamedTuple):
    """The file a decoded photo came from and its upright size: what :func:`whole_photo` needs to make a network's
    input from the file as training decoded it, not from the cascade's larger decode. ``reduced`` is the decode the
    loader made for the glance (HWC uint8) when it is not the photo's own: the full-image exit and `evaluate`'s
    baseline reuse it instead of decoding the file again when it is the decode they need, and the symptom map
    shrinks it instead of the larger decode (:func:`reduced_at_least`). ``turns``: the quarter turns clockwise the
    photo is read with (:mod:`agripatch.io.orientation`); ``original_hw`` and ``reduced`` are the turned photo's."""

    path: str
    original_hw: tuple[int, int]
    reduced: np.ndarray | None = None
    turns: int = 0


def whole_photo(image: np.ndarray, size: int, file: PhotoFile | None = None) -> np.ndarray:
    """A whole photo as a ``size`` x ``size`` network input, [3, size, size] float32 in 0..1, made as training made
    it: from ``file`` decoded reduced for that size (:func:`glance_source`, reusing ``image`` when it is that decode),
    or from the HWC ``image`` itself for an in-memory photo (``file`` None).

    The full-image exit reads photos through it, so the baseline network sees at predict time the pixels it was
    trained and evaluated on. Shrinking the cascade's full decode of 500-px iBean photos instead gave a higher NLL
    on every seed and split tried; on 117 test photos x 3 seeds the file's input got 4 right that the decode got
    wrong, and 1 the other way (benchmarks/README.md, "The full-image exit reads what its network learnt on").
    """
    return glance_array(glance_pixels(image, size, file), size)


def glance_pixels(image: np.ndarray, size: int, file: PhotoFile | None = None) -> np.ndarray:
    """The decoded pixels :func:`whole_photo` shrinks into a ``size`` input: the file's decode for that size
    (:func:`glance_source`), or the HWC ``image`` itself for an in-memory photo."""
    return image if file is None else glance_source(file.path, image, file.original_hw, size, file.reduced, file.turns)


def glance_batch(images: Sequence[np.ndarray], size: int,
                 files: Sequence[PhotoFile | None] | None = None) -> np.ndarray:
    """Whole HWC photos stacked to [B, 3, size, size] float32 in 0..1: each from its file (``files``, see
    :func:`whole_photo`) where one is given, else shrunk as it is (:func:`glance_array`)."""
    if not len(images):
        return np.zeros((0, 3, size, size), _F32)
    files = [None] * len(images) if files is None else list(files)
    if len(files) != len(images):
        raise ValueError(f"{len(files)} files for {len(images)} photos")
    return np.stack([whole_photo(image, size, file) for image, file in zip(images, files)])


def glance_source(path: str | Path, decoded: np.ndarray, original_hw: tuple[int, int], size: int,
                  reduced: np.ndarray | None = None, turns: int = 0) -> np.ndarray:
    """The pixels to shrink into a ``size`` glance of the file ``path``: as training's loader decodes it for that
    size (see the module docstring), turned ``turns`` quarter turns clockwise. ``decoded`` (upright and turned,
    from ``original_hw``, the turned size), or ``reduced`` (another decode of the same file, e.g. the glance's), is
    reused when it is that decode."""
    wanted = reduced_hw(int(original_hw[0]), int(original_hw[1]), int(size))
    if decoded.shape[:2] == wanted:
        return decoded
    if reduced is not None and reduced.shape[:2] == wanted:
        return reduced
    if decoded.shape[:2] == tuple(original_hw) and not decodes_reduced(path):
        return decoded  # a PNG, TIFF...: never reduced, so a second decode would give these very pixels
    return read_image(path, min_side=int(size), turns=turns)


def reduced_at_least(file: PhotoFile | None, height: int, width: int) -> np.ndarray | None:
    """The file's reduced decode (:attr:`PhotoFile.reduced`) when it has at least ``height`` x ``width`` pixels,
    else None: the symptom map shrinks the smallest decode at hand that is not smaller than its input, so a
    1024 x 512 leaf is shrunk to 224 x 112 from its 512 x 256 glance decode (the map's part 3.59 instead of 4.68 ms a
    leaf in float32) and the cascade's larger decode is not needed for it (benchmarks/README.md, "The symptom map
    reads the glance's decode")."""
    reduced = None if file is None else file.reduced
    if reduced is None or reduced.shape[0] < height or reduced.shape[1] < width:
        return None
    return reduced


def read_glance(path: str | Path, size: int, turns: int = 0) -> np.ndarray:
    """The ``size`` glance of an image file, [3, size, size] float32 in 0..1, exactly as training evaluates it
    (turned ``turns`` quarter turns clockwise first)."""
    return glance_array(read_image(path, min_side=int(size), turns=turns), size)
