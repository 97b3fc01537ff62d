"""Calibration data for int8: the glances and patches the float cascade itself produces on training photos.

Static quantization fixes each activation's range from examples, so the examples must look like what the
graphs will see: the glance graph gets glances made exactly as at inference, and the classifier gets the K
patches the float cascade selects and cuts from each photo (``PatchPipeline.locate`` + ``crop``, the one
selection path), not random crops.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from agripatch.data.photos import make_glance, photo_item
from agripatch.data.splits import SPLITS_CSV, find_split_layout, load_splits
from agripatch.export.errors import ExportError
from agripatch.pipeline.cascade import PatchPipeline, normalize
from agripatch.predict.scan import iter_photos

__all__ = ["CalibrationSet", "calibration_photos", "calibration_set"]


@dataclass
class CalibrationSet:
    """Inputs per graph name (float32 arrays, batch first), and how many photos were read or skipped."""

    inputs: dict[str, np.ndarray]
    photos: int
    unreadable: int


def calibration_photos(root: str | Path, count: int, seed: int = 0) -> list[Path]:
    """Up to ``count`` photos, drawn at random (seeded) from the training split of a dataset root (splits.csv or
    a train/val/test layout), or from every photo under ``root`` when it has no splits."""
    root = Path(root)
    if not root.is_dir():
        raise ExportError(f"--calibration {str(root)!r} is not a folder of photos")
    if count < 1:
        raise ExportError(f"--calibration-count must be >= 1, got {count}")
    if (root / SPLITS_CSV).is_file() or find_split_layout(root) is not None:
        paths = sorted(row.path for row in load_splits(root) if row.split == "train")
    else:
        paths = list(iter_photos(root, recursive=True))
    if not paths:
        raise ExportError(f"--calibration {str(root)!r} holds no photos (no training split, no image files)")
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(paths), size=min(count, len(paths)), replace=False))
    return [root / paths[i] for i in chosen]


@torch.no_grad()
def calibration_set(pipeline: PatchPipeline, photos: list[Path], batch_size: int = 16) -> CalibrationSet:
    """Glances and selected patches of ``photos`` through the float torch cascade, per graph name."""
    cfg = pipeline.config
    glances, patches, glance_cls, whole, bad = [], [], [], [], 0
    for start in range(0, len(photos), batch_size):
        items = [photo_item(p, min_side=pipeline.decode_min_side(), glance_size=cfg.glance_size,
                            orientation=cfg.photo_orientation)
                 for p in photos[start:start + batch_size]]
        good = [item for item in items if item["image"] is not None]
        bad += len(items) - len(good)
        if not good:
            continue
        images = [item["image"] for item in good]
        glance = torch.stack([item["glance"] for item in good])
        located = pipeline.locate(images, glance)
        glances.append(glance.numpy())
        patches.append(pipeline.crop(images, located).flatten(0, 1).cpu().numpy())
        if cfg.glance == "classifier":
            glance_cls.append(normalize(glance, pipeline.classifier_mean, pipeline.classifier_std).numpy())
        if cfg.full_image_exit:
            spec = pipeline.full_image_spec
            whole.append(normalize(make_glance(images, spec.size), spec.mean, spec.std).numpy())
    if not glances:
        raise ExportError(f"none of the {len(photos)} calibration photos could be read")
    inputs = {"glance": np.concatenate(glances), "classifier": np.concatenate(patches)}
    if glance_cls:
        inputs["glance_classifier"] = np.concatenate(glance_cls)
    if whole:
        inputs["full_image"] = np.concatenate(whole)
    return CalibrationSet(inputs, len(photos) - bad, bad)
