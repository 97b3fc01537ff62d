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

__all__ = ["PhotoDataset", "make_glance"]


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
        rel = str(self.paths[index])
        item: dict[str, Any] = {"index": index, "path": rel, "label": None if self.labels is None else self.labels[index],
                                "image": None, "glance": None, "decoded_hw": None, "original_hw": None, "error": None}
        if "\n" in rel or "\r" in rel:
            # Outputs are line-based logs (a torn last line is dropped on resume): refuse such names.
            item["error"] = "file name contains a line break; rename the file to read it"
            return item
        try:
            array, original_hw = read_image_with_size(self.root / rel, min_side=self.min_side)
            image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
            glance = make_glance([image], self.glance_size)[0] if self.glance_size else None
        except ImageReadError as error:
            item["error"] = error.reason
            return item
        except Exception as error:  # noqa: BLE001 - one odd file must not end a long run
            item["error"] = f"unexpected failure ({type(error).__name__}: {error})"
            return item
        item.update(image=image, glance=glance, decoded_hw=(int(image.shape[1]), int(image.shape[2])),
                    original_hw=(int(original_hw[0]), int(original_hw[1])))
        return item
