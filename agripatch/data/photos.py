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
from torch import Tensor
from torch.utils.data import Dataset

from agripatch.errors import ImageReadError
from agripatch.io.glance import PhotoFile, glance_batch, shrink_array, whole_photo
from agripatch.io.images import probe_image
from agripatch.io.orientation import dominant_orientation, orientation_of
from agripatch.io.sources import in_memory, load_item, photo_files

__all__ = ["ORIENTATION_SAMPLE", "PhotoDataset", "make_glance", "photo_item", "photos_orientation"]

#: Training photos whose headers decide which way photos are read (:func:`photos_orientation`).
ORIENTATION_SAMPLE = 1000


def make_glance(images: Sequence[Tensor], size: int, device: torch.device | str = "cpu",
                files: Sequence[PhotoFile | None] | None = None) -> Tensor:
    """Resize whole photos ([3, h, w] uint8 or 0..1 float) to ``size`` x ``size`` -> [B, 3, S, S] in 0..1.

    For photos already decoded (in-memory inputs): :func:`agripatch.io.glance.glance_array` of each, the area
    filter the ONNX runtime uses too. A photo with its ``files`` entry is made from that file decoded the way
    training decodes it for that size (:func:`agripatch.io.glance.whole_photo`), as a file's glance is made with
    its item (:func:`photo_item`).
    """
    arrays = [_hwc(image) for image in images]
    return torch.from_numpy(glance_batch(arrays, size, files)).to(device)


def shrink_photos(images: Sequence[Tensor], height: int, width: int, device: torch.device | str = "cpu") -> Tensor:
    """Whole photos ([3, h, w] uint8 or 0..1 float) shrunk to ``height`` x ``width`` with the area filter ->
    [B, 3, height, width] in 0..1 (:func:`agripatch.io.glance.shrink_array`, as the ONNX runtime makes them)."""
    arrays = [shrink_array(_hwc(image), height, width) for image in images]
    if not arrays:
        return torch.zeros(0, 3, height, width, device=device)
    return torch.from_numpy(np.stack(arrays)).to(device)


def _hwc(image: Tensor) -> np.ndarray:
    """A [3, h, w] uint8 or float tensor as an HWC numpy array (a view when it is HWC in memory)."""
    image = image.detach().cpu()
    if image.is_floating_point() and image.dtype != torch.float32:
        image = image.float()
    return image.permute(1, 2, 0).numpy()


class PhotoDataset(Dataset):
    """Decode ``root / paths[i]`` upright, reduced down to ``min_side``, plus its glance when asked.

    Each item is a dict: ``index``, ``path`` (relative, as given), ``label`` (from ``labels``, else
    None), ``image`` ([3, h, w] uint8 tensor viewing HWC memory, or None), ``glance`` ([3, S, S] float 0..1 made by
    :func:`agripatch.io.glance.glance_array` from the file decoded as training decodes it for that size; None without ``glance_size``),
    ``decoded_hw`` and ``original_hw`` (upright sizes, to map boxes back to the photo's pixels) and
    ``error`` (the reader's reason for an unreadable file). With ``baseline_size``, ``baseline`` is the
    full-image baseline's input made the same way at its size (in the worker, reusing the decode when it is
    the one that size needs). In DataLoader workers the tensors travel to the main process through shared memory.
    With ``defer_full`` (and ``glance_size``), a photo whose glance needs another decode than ``min_side`` is decoded
    for its glance only, its ``image`` a :class:`~agripatch.io.deferred.DeferredPhoto` the cascade decodes when it
    reads a patch (:func:`agripatch.io.sources.load_item`).
    """

    def __init__(self, root: str | Path, paths: Sequence[str], *, labels: Sequence[int] | None = None,
                 min_side: int | None = None, glance_size: int | None = None, baseline_size: int | None = None,
                 defer_full: bool = False, orientation: str | None = None):
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"{len(labels)} labels for {len(paths)} paths")
        if defer_full and baseline_size:
            raise ValueError("defer_full and baseline_size: the baseline input is made from the decoded photo")
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = None if labels is None else [int(label) for label in labels]
        self.min_side = min_side
        self.glance_size = glance_size
        self.baseline_size = baseline_size
        self.defer_full = defer_full
        self.orientation = orientation

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        label = None if self.labels is None else self.labels[index]
        path = self.root / str(self.paths[index])
        item = photo_item(path, index=index, path=str(self.paths[index]), label=label, min_side=self.min_side,
                          glance_size=self.glance_size, defer_full=self.defer_full, orientation=self.orientation)
        if self.baseline_size and item["image"] is not None:
            file = photo_files([item])[0]
            item["baseline"] = torch.from_numpy(whole_photo(_hwc(item["image"]), int(self.baseline_size), file))
        return item


def _tensor_or_array(source: Any) -> np.ndarray:
    """An in-memory photo (CHW tensor, HWC uint8 array or PIL image) as HWC uint8 RGB."""
    if isinstance(source, Tensor):
        source = source.detach().cpu()
        if source.is_floating_point():
            source = (source.clamp(0, 1) * 255).round().to(torch.uint8)
        return np.ascontiguousarray(source.permute(1, 2, 0).numpy())
    return in_memory(source)


def photo_item(source: Any, *, index: int = 0, path: str | None = None, label: int | None = None,
               min_side: int | None = None, glance_size: int | None = None, defer_full: bool = False,
               orientation: str | None = None) -> dict[str, Any]:
    """One photo ready for the cascade, from a file path or an in-memory image, as the dict described in
    :class:`PhotoDataset` (``defer_full`` and ``orientation`` too); a file that cannot be read gives an ``error``
    entry, not an exception."""

    def finish(array: np.ndarray, glance: np.ndarray | None) -> dict[str, Any]:
        # A CHW view of the HWC pixels, not a CHW copy: the networks read either layout at the same speed
        # (same outputs), and the review writer gets the HWC array back without a copy (0.5 ms each way).
        array = np.ascontiguousarray(array)
        if not array.flags.writeable:  # a caller's read-only array (e.g. a memory map): torch needs its own copy
            array = array.copy()
        image = torch.from_numpy(array).permute(2, 0, 1)
        return {"image": image, "glance": torch.from_numpy(glance) if glance is not None else None}

    return load_item(source, finish, index=index, path=path, label=label, min_side=min_side,
                     glance_size=glance_size or None, to_array=_tensor_or_array, defer_full=defer_full,
                     orientation=orientation)


def photos_orientation(root: str | Path, paths: Sequence[str], most: int = ORIENTATION_SAMPLE) -> tuple[str, int, int]:
    """Which way a model trained on the photos ``root / path`` reads every photo
    (:func:`~agripatch.io.orientation.dominant_orientation` of their upright sizes, read from the headers of at most
    ``most`` of them, evenly spaced; unreadable ones left out), with how many lie that way of how many were read:
    training and `agripatch calibrate` fit it alike."""
    sizes = []
    for path in list(paths)[::max(1, len(paths) // most)]:
        try:
            sizes.append(probe_image(Path(root) / str(path)))
        except ImageReadError:
            continue  # whoever decodes it reports it
    way = dominant_orientation(sizes)
    return way, sum(orientation_of(*hw) == way for hw in sizes), len(sizes)
