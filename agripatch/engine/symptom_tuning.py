"""The shipped symptom map, fine-tuned on the user's own lesion masks (issue 25: "fine-tuned by --lesion-masks where a
user has some").

A new crop starts from the map shipped in the package (:func:`~agripatch.models.symptom_map.shipped_symptom_map`).
When a training run has lesion masks and its cascade measures severity, the map is first fine-tuned on the
training photos that have a mask, read exactly as the cascade reads them (the whole photo shrunk to the severity
side, :func:`~agripatch.pipeline.severity.map_hw`). A mask that also marks the leaf (values between 0 and the
recipe's ``lesions.min_value``, as coffee_bracol's 0 / 1 / 2) gives each cell its exact background, leaf and
lesion fractions. A plain lesion mask says only where the lesions are, not where the leaf ends, so each cell's
target keeps the shipped map's own split of the rest between background and leaf:

    target(cell) = (p_background * (1 - f), p_leaf * (1 - f), f)

with ``f`` the cell's lesion fraction and ``p`` the shipped map's background / leaf probabilities renormalised.
The loss is the soft cross-entropy per cell; the epoch with the lowest loss on the validation photos that have a
mask is kept (the last epoch without any). The tuned weights go into ``model.pt`` in place of the shipped ones,
and the whole run (the patch stage's symptom prior, calibration, `predict`) uses them. Checkpointed once finished
(``RUN/checkpoints/symptom_map/map.pt``): a resumed run reuses it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from agripatch.data.lesion_masks import LesionMasks
from agripatch.io.glance import shrink_array
from agripatch.io.images import read_image
from agripatch.io.torchfile import load_object, save_object
from agripatch.models.symptom_map import SymptomMap, shipped_symptom_map
from agripatch.pipeline.inputs import normalize
from agripatch.pipeline.severity import map_hw

__all__ = ["MapSample", "lesion_targets", "load_tuned_map", "map_samples", "tune_symptom_map"]

FORMAT = "agripatch-symptom-map-tuning/1"


@dataclass
class MapSample:
    """One photo exactly as the cascade's map reads it ([3, H, W] float32 in 0..1 at its map size,
    :func:`~agripatch.io.glance.shrink_array`) and its cell targets [3, gh, gw]."""

    image: np.ndarray
    targets: np.ndarray


def lesion_targets(lesion: np.ndarray, reference: np.ndarray, stride: int) -> np.ndarray:
    """Cell targets [3, gh, gw] from a 0/1 lesion map [H, W] (multiples of ``stride``) and the shipped map's
    probabilities [3, gh, gw] on the same photo (see the module docstring)."""
    h, w = lesion.shape
    fraction = lesion.astype(np.float32).reshape(h // stride, stride, w // stride, stride).mean(axis=(1, 3))
    rest = reference[:2] / np.maximum(reference[:2].sum(axis=0, keepdims=True), np.float32(1e-6))
    return np.concatenate([rest * (1 - fraction)[None], fraction[None]]).astype(np.float32)


def _normalised(model: SymptomMap, images: list[np.ndarray]) -> torch.Tensor:
    return normalize(torch.from_numpy(np.stack(images)), model.cfg["mean"], model.cfg["std"])


def map_samples(root: Path, rels: list[str], masks: LesionMasks, side: int, reference: SymptomMap) -> list[MapSample]:
    """The photos of ``rels`` that have a mask, shrunk to their map size, with their targets."""
    stride = int(reference.stride)
    samples = []
    for rel in rels:
        if masks.find(rel) is None:
            continue
        photo = read_image(Path(root) / rel, min_side=side)
        h, w = map_hw(*photo.shape[:2], side, stride)
        image = shrink_array(photo, h, w)
        levels, lesion = masks.read_targets(rel, h, w)
        if levels is not None:  # the mask marks the leaf too: exact fractions per cell
            targets = levels.reshape(3, h // stride, stride, w // stride, stride).mean(axis=(2, 4))
            samples.append(MapSample(image, targets.astype(np.float32)))
            continue
        with torch.inference_mode():
            probs = reference(_normalised(reference, [image])).float().softmax(dim=1)[0].numpy()
        samples.append(MapSample(image, lesion_targets(lesion, probs, stride)))
    return samples


def _loss(model: SymptomMap, samples: list[MapSample], flip: tuple[bool, bool] = (False, False)) -> torch.Tensor:
    images = [s.image for s in samples]
    targets = torch.from_numpy(np.stack([s.targets for s in samples]))
    x = _normalised(model, images)
    dims = [d for d, on in zip((-1, -2), flip) if on]
    if dims:
        x, targets = x.flip(dims), targets.flip(dims)
    return -(targets * F.log_softmax(model(x).float(), dim=1)).sum(dim=1).mean()


def _batches(samples: list[MapSample], size: int, rng: np.random.Generator) -> list[list[MapSample]]:
    """Shuffled batches of photos of one map size (the map reads whole photos)."""
    groups: dict[tuple[int, int], list[MapSample]] = {}
    for i in rng.permutation(len(samples)):
        groups.setdefault(samples[i].image.shape[1:], []).append(samples[i])
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]


def tune_symptom_map(name: str, side: int, train: list[MapSample], val: list[MapSample], *, epochs: int,
                     lr: float, seed: int, checkpoint: Path, batch_size: int = 8,
                     log: Callable[[str], None] = lambda message: None, start: SymptomMap | None = None) -> SymptomMap:
    """The shipped map ``name`` (or a copy of ``start``) fine-tuned on ``train`` (best epoch on ``val``), in eval
    mode; reused from ``checkpoint`` when a finished tuning of the same map is there."""
    tuned = load_tuned_map(name, side, checkpoint)
    if tuned is not None:
        log(f"[symptom map] tuned before, reusing {checkpoint}")
        return tuned
    model = shipped_symptom_map(name) if start is None else copy.deepcopy(start)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    best, history = (float("inf"), copy.deepcopy(model.state_dict())), []
    for epoch in range(1, epochs + 1):
        model.train()
        losses = []
        for batch in _batches(train, batch_size, rng):
            loss = _loss(model, batch, (bool(rng.random() < 0.5), bool(rng.random() < 0.5)))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        model.eval()
        with torch.inference_mode():
            val_loss = float(np.mean([float(_loss(model, b)) for b in _batches(val, batch_size, rng)])) if val else None
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_loss": val_loss})
        log(f"[symptom map] epoch {epoch}/{epochs}: loss {np.mean(losses):.4f}"
            + (f", validation {val_loss:.4f}" if val_loss is not None else ""))
        if val_loss is None or val_loss < best[0]:
            best = (val_loss if val_loss is not None else best[0], copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[1])
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    save_object({"format": FORMAT, "map": name, "side": side, "state_dict": model.state_dict(),
                       "history": history, "train_photos": len(train), "val_photos": len(val)}, checkpoint)
    return model.eval()


def load_tuned_map(name: str, side: int, checkpoint: Path) -> SymptomMap | None:
    """The map ``name`` tuned at ``side`` that ``checkpoint`` holds, in eval mode; None when it holds none (no file,
    or a tuning of another map or side)."""
    if not checkpoint.is_file():
        return None
    stored = load_object(checkpoint, FORMAT)
    if stored["map"] != name or stored["side"] != side:
        return None
    model = shipped_symptom_map(name)
    model.load_state_dict(stored["state_dict"])
    return model.eval()
