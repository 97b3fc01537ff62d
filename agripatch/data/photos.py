"""Photos for inference: decode a list of paths (reduced when that loses nothing) and make glance inputs.

One dataset serves `evaluate` (labelled split rows) and `predict folder` (a walked folder): each item
is the upright photo as a [3, h, w] uint8 tensor, optionally its glance, its decoded and original
sizes, and, for an unreadable file, an error entry instead of a substitute photo, so every caller can
list what it skipped. Batches are collated by the caller, because photos differ in size.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from agripatch.errors import ImageReadError
from agripatch.io.images import read_image_with_size

__all__ = ["PhotoDataset", "make_glance", "photo_item"]


def make_glance(images: Sequence[Tensor], size: int, device: torch.device | str = "cpu") -> Tensor:
    """Resize whole photos to ``size`` x ``size`` (antialiased bilinear) -> [B, 3, S, S] in 0..1.

    Antialiasing low-pass filters before shrinking, so a 4000-pixel photo does not alias into
    the glance; bilinear weights are non-negative, so values stay inside 0..1.
    """
    out = []
    for image in images:
        img = image.to(device)
        img = img.to(torch.float32) / 255.0 if img.dtype == torch.uint8 else img.to(torch.float32)
        out.append(F.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False))
    if not out:
        return torch.empty(0, 3, size, size, device=device)
    return torch.cat(out)


class PhotoDataset(Dataset):
    """Decode ``root / paths[i]`` upright, reduced down to ``min_side``, plus its glance when asked.

    Each item is a dict: ``index``, ``path`` (relative, as given), ``label`` (from ``labels``, else
    None), ``image`` ([3, h, w] uint8 tensor, or None), ``glance`` ([3, S, S] float 0..1 made by
    :func:`make_glance`, so it equals an in-process resize; None without ``glance_size``),
    ``decoded_hw`` and ``original_hw`` (upright sizes, to map boxes back to the photo's pixels) and
    ``error`` (the reader's reason for an unreadable file). In DataLoader workers the tensors travel
    to the main process through shared memory.
    """

    def __init__(self, root: str | Path, paths: Sequence[str], *, labels: Sequence[int] | None = None,
                 min_side: int | None = None, glance_size: int | None = None):
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(labels)} labels for {len(paths)} paths")
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = None if labels is None else [int(label) for label in labels]
        self.min_side = min_side
        self.glance_size = glance_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        label = None if self.labels is None else self.labels[index]
        return photo_item(self.root / str(self.paths[index]), index=index, path=str(self.paths[index]), label=label,
                          min_side=self.min_side, glance_size=self.glance_size)


def _empty_item(index: int, path: str | None, label: int | None) -> dict[str, Any]:
    return {"index": index, "path": path, "label": label, "image": None, "glance": None, "decoded_hw": None,
            "original_hw": None, "error": None}


def _as_array(source: Any) -> tuple[np.ndarray, tuple[int, int]]:
    """An in-memory photo (PIL image, HWC uint8 array or CHW tensor) as HWC uint8 RGB and its size."""
    if isinstance(source, Tensor):
        source = source.detach().cpu()
        if source.is_floating_point():
            source = (source.clamp(0, 1) * 255).round().to(torch.uint8)
        source = source.permute(1, 2, 0).numpy()
    elif not isinstance(source, np.ndarray):  # PIL images (and anything with the same interface)
        from PIL import ImageOps

        source = np.asarray(ImageOps.exif_transpose(source).convert("RGB"))
    if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
        raise ImageReadError("<array>", f"in-memory photos must be HxWx3 uint8 RGB, got {source.shape} {source.dtype}")
    return source, (int(source.shape[0]), int(source.shape[1]))


def photo_item(source: Any, *, index: int = 0, path: str | None = None, label: int | None = None,
               min_side: int | None = None, glance_size: int | None = None) -> dict[str, Any]:
    """One photo ready for the cascade, from a file path or an in-memory image, as the dict described in
    :class:`PhotoDataset`; a file that cannot be read gives an ``error`` entry, not an exception."""
    item = _empty_item(index, path if path is not None else (str(source) if isinstance(source, (str, Path)) else None),
                       label)
    if item["path"] is not None and ("\n" in item["path"] or "\r" in item["path"]):
        # Outputs are line-based logs (a torn last line is dropped on resume): refuse such names.
        item["error"] = "file name contains a line break; rename the file to read it"
        return item
    try:
        if isinstance(source, (str, Path)):
            array, original_hw = read_image_with_size(source, min_side=min_side)
        else:
            array, original_hw = _as_array(source)
        image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
        glance = make_glance([image], glance_size)[0] if glance_size else None
    except ImageReadError as error:
        item["error"] = error.reason
        return item
    except Exception as error:  # noqa: BLE001 - one odd file must not end a long run
        item["error"] = f"unexpected failure ({type(error).__name__}: {error})"
        return item
    item.update(image=image, glance=glance, decoded_hw=(int(image.shape[1]), int(image.shape[2])),
                original_hw=(int(original_hw[0]), int(original_hw[1])))
    return item
