"""Training-time datasets: resized tensors for whole-image stages, full-resolution photos for patches.

Both wrap the project's one `ImageDataset`; a corrupt file is skipped (the next readable photo takes its
place) and its path travels with the batch, so the trainer reports each bad file once however many
worker processes or epochs see it. With lesion masks, a whole-image sample also carries its mask through
the same augmentation draw (crop, flips), so mask and pixels stay aligned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agripatch.data.folder import ImageDataset
from agripatch.data.lesion_masks import LesionMasks
from agripatch.data.transforms import to_tensor


class TensorTransform:
    """albumentations pipeline -> normalised CHW tensor, reseedable for exact resume."""

    def __init__(self, pipeline, mean, std):
        self.pipeline = pipeline
        self.mean = tuple(mean)
        self.std = tuple(std)

    def set_seed(self, seed: int) -> None:
        """Make the augmentation's random draws a function of `seed`."""
        self.pipeline.set_random_seed(seed)

    def __call__(self, image: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
        if mask is None:
            return {"image": to_tensor(self.pipeline(image=image)["image"], self.mean, self.std)}
        out = self.pipeline(image=image, mask=mask)
        return {"image": to_tensor(out["image"], self.mean, self.std), "mask": torch.from_numpy(out["mask"])}


class PhotoTransform:
    """albumentations pipeline on the full-resolution photo -> uint8 CHW tensor (patches are cut later)."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    def set_seed(self, seed: int) -> None:
        """Make the augmentation's random draws a function of `seed`."""
        self.pipeline.set_random_seed(seed)

    def __call__(self, image: np.ndarray) -> dict[str, Any]:
        out = self.pipeline(image=image)["image"]
        return {"image": torch.from_numpy(np.ascontiguousarray(out.transpose(2, 0, 1)))}


class ReportingDataset(ImageDataset):
    """ImageDataset whose samples say which unreadable files were skipped to produce them.

    With ``lesion_masks`` (whole-image stages only) each sample also has ``mask``, the augmented 0/1 lesion
    map at the input size; a photo without a mask gets an empty one, which the lesion loss skips like a
    healthy leaf. With ``teacher`` (relative path -> [C] probabilities) each sample also has ``teacher``, the
    targets of the photo it actually holds (an unreadable file's stand-in brings its own).
    """

    def __init__(self, *args: Any, lesion_masks: LesionMasks | None = None, teacher=None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lesion_masks = lesion_masks
        self.teacher = teacher
        self._masks: dict[Any, np.ndarray] = {}

    def _mask(self, rel, height: int, width: int) -> np.ndarray:
        """The photo's lesion map at its decoded size (empty without a mask file), kept in memory within the
        photo cache's budget."""
        if rel in self._masks:
            return self._masks[rel]
        mask = self.lesion_masks.read(rel, height, width)
        if mask is None:
            mask = np.zeros((height, width), np.uint8)
        if self._cached + mask.nbytes <= self.cache_bytes:
            self._masks[rel] = mask
            self._cached += mask.nbytes
        return mask

    def _apply(self, image: np.ndarray, rel) -> dict[str, Any]:
        """The sample's tensors: ``image``, plus ``mask`` and ``teacher`` when the dataset has them."""
        if self.lesion_masks is None:
            tensors = {"image": super()._apply(image, rel)}
        else:
            tensors = self.transform(image=image, mask=self._mask(rel, image.shape[0], image.shape[1]).copy())
        if self.teacher is not None:
            tensors["teacher"] = self.teacher[rel]
        return tensors

    def __getitem__(self, index: int) -> dict[str, Any]:
        before = set(self.bad_paths)
        tensors, label = super().__getitem__(index)
        skipped = sorted(str(path) for path in set(self.bad_paths) - before)
        return {**tensors, "label": label, "skipped": skipped}


def _stack_extras(items: list[dict[str, Any]], batch: dict[str, Any]) -> dict[str, Any]:
    """Add the samples' per-photo training targets (lesion masks, teacher probabilities) stacked, when they have them."""
    for key in ("mask", "teacher"):
        if items and key in items[0]:
            batch[key] = torch.stack([item[key] for item in items])
    return batch


def collate_tensors(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-size image tensors (and masks or teacher targets); keep the skipped-file lists."""
    return _stack_extras(items, {
        "image": torch.stack([item["image"] for item in items]),
        "label": torch.as_tensor([item["label"] for item in items], dtype=torch.long),
        "skipped": [item["skipped"] for item in items],
    })


def collate_training_photos(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep full-resolution photos as a list (their sizes differ); stack the labels (and teacher targets)."""
    return _stack_extras(items, {
        "image": [item["image"] for item in items],
        "label": torch.as_tensor([item["label"] for item in items], dtype=torch.long),
        "skipped": [item["skipped"] for item in items],
    })
