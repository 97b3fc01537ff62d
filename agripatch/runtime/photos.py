"""Photos for the torch-free runtime: decode (reduced when lossless) and make the glance in numpy.

The item dict is the one :func:`agripatch.data.photos.photo_item` makes (``index``, ``path``, ``label``,
``image``, ``glance``, ``decoded_hw``, ``original_hw``, ``error``), except that ``image`` is an HWC uint8
numpy array and ``glance`` a [3, G, G] float32 numpy array. :func:`as_hwc` also accepts the CHW torch tensors
of the torch items (predict folder's DataLoader), without importing torch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from agripatch.io.deferred import DeferredPhoto
from agripatch.io.sources import load_item

__all__ = ["as_hwc", "runtime_item"]


def as_hwc(image: Any) -> np.ndarray:
    """A photo as an HWC array: numpy arrays are HWC already; anything else (a CHW torch tensor) is viewed
    through ``np.asarray`` and transposed, without a copy. A :class:`~agripatch.io.deferred.DeferredPhoto` passes
    as it is: the cascade core decodes it if it reads the photo."""
    if isinstance(image, DeferredPhoto):
        return image
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"numpy photos must be HWC RGB, got shape {image.shape}")
        return image
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"tensor photos must be [3, H, W], got shape {array.shape}")
    return array.transpose(1, 2, 0)


def runtime_item(source: Any, *, index: int = 0, path: str | None = None, label: int | None = None,
                 min_side: int | None = None, glance_size: int | None = None, defer_full: bool = False,
                 orientation: str | None = None) -> dict[str, Any]:
    """One photo (file path, HWC uint8 array or PIL image) ready for the ONNX cascade; an unreadable file gives
    an ``error`` entry, not an exception (the rules of :func:`agripatch.io.sources.load_item`, ``defer_full`` and
    ``orientation`` too)."""

    def finish(array: np.ndarray, glance: np.ndarray | None) -> dict[str, Any]:
        return {"image": np.ascontiguousarray(array), "glance": glance}

    return load_item(source, finish, index=index, path=path, label=label, min_side=min_side,
                     glance_size=glance_size or None, defer_full=defer_full, orientation=orientation)
