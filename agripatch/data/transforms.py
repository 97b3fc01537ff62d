"""Albumentations pipelines from recipes: the recipe's own `A.to_dict` specs plus the stage's sizing.

A recipe's `augment.<name>` holds size-free augmentations (flips, colour, blur) in albumentations'
serialisation format; the size-dependent step (random resized crop for training, plain resize for
evaluation) is added here from the stage's input size, so one augmentation spec serves every stage.
"""

from __future__ import annotations

import os
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from agripatch.errors import RecipeError  # noqa: E402


def augmentation_from_spec(spec: dict[str, Any] | None, name: str = "augment") -> A.BasicTransform | None:
    """Deserialise an `A.to_dict` mapping, raising RecipeError naming the recipe key when it is invalid."""
    if not spec:
        return None
    try:
        return A.from_dict(spec)
    except Exception as error:  # albumentations raises assorted types for bad specs
        raise RecipeError(f"recipe key '{name}' is not a valid albumentations pipeline: {error}") from None


def train_transform(size: int, spec: dict[str, Any] | None, crop_scale: tuple[float, float]) -> A.Compose:
    """Training pipeline: random resized crop to `size` (square), then the recipe's augmentations."""
    # INTER_AREA: shrinking a photo must low-pass it like the cascade's antialiased glance resize does;
    # INTER_LINEAR aliases, and a model trained on aliased images loses ~1 point on antialiased ones.
    steps: list[Any] = [A.RandomResizedCrop(size=(size, size), scale=crop_scale, ratio=(3 / 4, 4 / 3),
                                            interpolation=cv2.INTER_AREA)]
    extra = augmentation_from_spec(spec)
    if extra is not None:
        steps.append(extra)
    return A.Compose(steps)


def eval_transform(size: int) -> A.Compose:
    """Evaluation pipeline: the whole image resized to `size` x `size` (what the cascade's glance sees)."""
    return A.Compose([A.Resize(height=size, width=size, interpolation=cv2.INTER_AREA)])


def full_resolution_transform(spec: dict[str, Any] | None) -> A.Compose:
    """Augmentations applied to the original photo before patches are selected and cut from it."""
    extra = augmentation_from_spec(spec)
    return A.Compose([extra] if extra is not None else [])


def to_tensor(image: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]):
    """HWC uint8 RGB -> normalised CHW float32 tensor."""
    import torch

    array = image.astype(np.float32) / 255.0
    array = (array - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
