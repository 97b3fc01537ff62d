"""Photos for the torch-free runtime: decode (reduced when lossless) and make the glance in numpy.

The item dict is the one :func:`agripatch.data.photos.photo_item` makes (``index``, ``path``, ``label``,
``image``, ``glance``, ``decoded_hw``, ``original_hw``, ``error``), except that ``image`` is an HWC uint8
numpy array and ``glance`` a [3, G, G] float32 numpy array. :func:`as_hwc` also accepts the CHW torch tensors
of the torch items (predict folder's DataLoader), without importing torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agripatch.errors import ImageReadError
from agripatch.io.images import read_image_with_size
from agripatch.runtime.resize import resize_glance

__all__ = ["as_hwc", "runtime_item"]


def as_hwc(image: Any) -> np.ndarray:
    """A photo as an HWC array: numpy arrays are HWC already; anything else (a CHW torch tensor) is viewed
    through ``np.asarray`` and transposed, without a copy."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"numpy photos must be HWC RGB, got shape {image.shape}")
        return image
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[0] != 3:
        raise ValueError(f"tensor photos must be [3, H, W], got shape {array.shape}")
    return array.transpose(1, 2, 0)


def _in_memory(source: Any) -> np.ndarray:
    """An HWC uint8 array or a PIL image (EXIF orientation applied) as HWC uint8 RGB."""
    if not isinstance(source, np.ndarray):
        from PIL import ImageOps

        source = np.asarray(ImageOps.exif_transpose(source).convert("RGB"))
    if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
        raise ImageReadError("<array>", f"in-memory photos must be HxWx3 uint8 RGB, got {source.shape} {source.dtype}")
    return source


def runtime_item(source: Any, *, index: int = 0, path: str | None = None, label: int | None = None,
                 min_side: int | None = None, glance_size: int | None = None) -> dict[str, Any]:
    """One photo (file path, HWC uint8 array or PIL image) ready for the ONNX cascade; an unreadable file gives
    an ``error`` entry, not an exception (same rules as ``photo_item``)."""
    if path is None and isinstance(source, (str, Path)):
        path = str(source)
    item: dict[str, Any] = {"index": index, "path": path, "label": label, "image": None, "glance": None,
                            "decoded_hw": None, "original_hw": None, "error": None}
    if path is not None and ("\n" in path or "\r" in path):
        item["error"] = "file name contains a line break; rename the file to read it"
        return item
    try:
        if isinstance(source, (str, Path)):
            image, original_hw = read_image_with_size(source, min_side=min_side)
        else:
            image = _in_memory(source)
            original_hw = image.shape[:2]
        glance = resize_glance(image, glance_size) if glance_size else None
    except ImageReadError as error:
        item["error"] = error.reason
        return item
    except Exception as error:  # noqa: BLE001 - one odd file must not end a long run
        item["error"] = f"unexpected failure ({type(error).__name__}: {error})"
        return item
    item.update(image=np.ascontiguousarray(image), glance=glance,
                decoded_hw=(int(image.shape[0]), int(image.shape[1])),
                original_hw=(int(original_hw[0]), int(original_hw[1])))
    return item
