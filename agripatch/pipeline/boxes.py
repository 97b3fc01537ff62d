"""Boxes between resolutions, in numpy (no torch): THE one rule for moving a box from one image size to another.

Because the glance is a plain (possibly anisotropic) resize of the whole photo, the map is a pure scale:
x by ``W_to / W_from`` and y by ``H_to / H_from``, computed in float64 (multiply then divide, so integer
boxes at integer ratios are exact), then clamped inside the target image. The torch pipeline
(:func:`agripatch.pipeline.select.map_boxes`), the records `predict` writes and the ONNX runtime all call
:func:`scale_boxes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np

__all__ = ["scale_boxes", "sizes"]

HWLike = Union[Sequence[int], Sequence[Sequence[int]], np.ndarray]


def sizes(hw: HWLike, name: str) -> np.ndarray:
    """Sizes as float64 [M, 2] (M = 1 for a single (H, W) pair); positive."""
    t = np.asarray(hw, dtype=np.float64)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != 2:
        raise ValueError(f"{name} must be (H, W) or a [B, 2] array, got shape {tuple(t.shape)}")
    if (t <= 0).any():
        raise ValueError(f"{name} must be positive, got {t.tolist()}")
    return t


def scale_boxes(boxes: np.ndarray, from_hw: HWLike, to_hw: HWLike) -> np.ndarray:
    """Map boxes [..., 4] (x0, y0, x1, y1) from an image of size ``from_hw`` to the same content at ``to_hw``.

    ``from_hw`` / ``to_hw`` are one ``(H, W)`` for all boxes or [B, 2] per-image sizes; with per-image
    sizes ``boxes`` must be [B, ..., 4]. Returns float64.
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.shape[-1] != 4:
        raise ValueError(f"boxes must end in 4 coordinates, got shape {tuple(boxes.shape)}")
    src, dst = sizes(from_hw, "from_hw"), sizes(to_hw, "to_hw")
    m = max(src.shape[0], dst.shape[0])
    if src.shape[0] not in (1, m) or dst.shape[0] not in (1, m):
        raise ValueError(f"from_hw has {src.shape[0]} sizes and to_hw {dst.shape[0]}")
    if m > 1 and (boxes.ndim < 2 or boxes.shape[0] != m):
        raise ValueError(f"per-image sizes for {m} images need boxes [B={m}, ..., 4], got {tuple(boxes.shape)}")
    src, dst = np.broadcast_to(src, (m, 2)), np.broadcast_to(dst, (m, 2))
    # [M, 4] factors in (x, y, x, y) order, broadcast over the middle dimensions of boxes.
    num, den = dst[:, [1, 0, 1, 0]], src[:, [1, 0, 1, 0]]
    if m > 1:
        shape = (m,) + (1,) * (boxes.ndim - 2) + (4,)
        num, den = num.reshape(shape), den.reshape(shape)
    else:
        num, den = num[0], den[0]
    return np.minimum(np.maximum(boxes * num / den, 0.0), num)
