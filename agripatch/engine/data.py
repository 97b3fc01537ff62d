"""Training-time datasets: resized tensors for whole-image stages, full-resolution photos for patches.

Both wrap the project's one `ImageDataset`; a corrupt file is skipped (the next readable photo takes its
place) and its path travels with the batch, so the trainer reports each bad file once however many
worker processes or epochs see it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from agripatch.data.folder import ImageDataset
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

    def __call__(self, image: np.ndarray) -> dict[str, Any]:
        return {"image": to_tensor(self.pipeline(image=image)["image"], self.mean, self.std)}


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
    """ImageDataset whose samples say which unreadable files were skipped to produce them."""

    def __getitem__(self, index: int) -> dict[str, Any]:
        before = set(self.bad_paths)
        image, label = super().__getitem__(index)
        skipped = sorted(str(path) for path in set(self.bad_paths) - before)
        return {"image": image, "label": label, "skipped": skipped}


def collate_tensors(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack same-size image tensors; keep the skipped-file lists."""
    return {
        "image": torch.stack([item["image"] for item in items]),
        "label": torch.as_tensor([item["label"] for item in items], dtype=torch.long),
        "skipped": [item["skipped"] for item in items],
    }


def collate_training_photos(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Keep full-resolution photos as a list (their sizes differ); stack the labels."""
    return {
        "image": [item["image"] for item in items],
        "label": torch.as_tensor([item["label"] for item in items], dtype=torch.long),
        "skipped": [item["skipped"] for item in items],
    }
