"""How a training stage turns a batch into (logits, targets): whole images, or the cascade's patches.

The patch forward does not select cells itself: it calls the cascade's own selection path
(:meth:`~agripatch.pipeline.cascade.PatchPipeline.locate` and ``crop``), so training reads exactly the
kind of patch `predict` reads, and its validation scores the cascade's own final prediction.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from agripatch.engine.lesion_focus import lesion_cells, lesion_focus_loss
from agripatch.pipeline.cascade import Located, PatchPipeline

__all__ = ["ImageForward", "LesionForward", "PatchForward"]

TRAIN_SELECTIONS = ("label", "predicted", "random")


class ImageForward:
    """Whole-image stages: the batch's resized images through the model."""

    def __init__(self, device: torch.device, channels_last: bool):
        self.device = device
        self.channels_last = channels_last

    def inputs(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's images (in the configured memory format) and labels on the device."""
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images, labels

    def __call__(self, model: nn.Module, batch: dict[str, Any], mixup=None):
        images, labels = self.inputs(batch)
        if mixup is not None and model.training and len(labels) % 2 == 0:
            images, labels = mixup(images, labels)
        return model(images), labels


class LesionForward(ImageForward):
    """AnchorNet's stage with lesion masks: the image forward, plus ``weight`` times the lesion focus loss
    (:mod:`agripatch.engine.lesion_focus`) as a third element the loop adds to the classification loss.
    Validation (eval mode) is the plain image forward."""

    def __init__(self, device: torch.device, channels_last: bool, weight: float):
        super().__init__(device, channels_last)
        self.weight = float(weight)

    def __call__(self, model: nn.Module, batch: dict[str, Any], mixup=None):
        if not model.training or "mask" not in batch:
            return super().__call__(model, batch, mixup)
        images, labels = self.inputs(batch)
        logits, cam = model(images, with_cam=True)
        network = getattr(model, "module", model)  # DistributedDataParallel keeps the AnchorNet inside
        boxes = network.cell_boxes(images.shape[-2], images.shape[-1]).to(self.device)
        lesions = lesion_cells(batch["mask"].to(self.device), boxes)
        cells = cam.shape[-2] * cam.shape[-1]
        aux = lesion_focus_loss(cam.flatten(2) * cells, labels, lesions)  # per-cell logits: cam sums to the logits
        return logits, labels, self.weight * aux


class PatchForward:
    """Patch stage: the frozen AnchorNet picks K cells on the glance, the classifier reads them cut at full
    resolution, through the pipeline's selection path.

    While training, cells are ranked by the map that ``train_selection`` names (the true class,
    AnchorNet's predicted class, or a random class); in evaluation by the inference rule, and the
    returned scores are the cascade's final-stage probabilities (glance and all K patches aggregated as
    at inference), so validation accuracy is the cascade's per-photo accuracy.
    """

    def __init__(self, pipeline: PatchPipeline, num_classes: int, device: torch.device, channels_last: bool,
                 train_selection: str = "random"):
        if train_selection not in TRAIN_SELECTIONS:
            raise ValueError(f"train_selection must be one of {TRAIN_SELECTIONS}, got {train_selection!r}")
        self.train_selection = train_selection
        self.pipeline = pipeline
        self.anchornet = pipeline.anchornet.eval().to(device)
        for param in self.anchornet.parameters():
            param.requires_grad_(False)
        self.num_classes = num_classes
        self.device = device
        self.channels_last = channels_last

    def ranking_classes(self, labels: torch.Tensor | None) -> torch.Tensor | None:
        """Whose map ranks the cells: None (the inference rule) in evaluation, else per ``train_selection``."""
        if labels is None or self.train_selection == "predicted":
            return None
        if self.train_selection == "random":
            # Drawn from the global generator, which the stage reseeds every epoch: resumes repeat it.
            return torch.randint(self.num_classes, (len(labels),))
        return labels.cpu()

    def select(self, photos: list[torch.Tensor], labels: torch.Tensor | None) -> Located:
        """The K cells and boxes the cascade picks in each photo, ranked for training (labels) or inference."""
        return self.pipeline.locate(photos, rank_by=self.ranking_classes(labels))

    def __call__(self, model: nn.Module, batch: dict[str, Any], mixup=None):
        photos = batch["image"]
        labels = batch["label"].to(self.device)
        if not model.training:
            probs = self.pipeline.with_classifier(model).exit_probabilities(photos).probs[:, -1]
            return torch.as_tensor(probs, device=self.device), labels
        k = self.pipeline.config.k
        patches = self.pipeline.crop(photos, self.select(photos, labels)).flatten(0, 1)
        if self.channels_last:
            patches = patches.contiguous(memory_format=torch.channels_last)
        targets = labels.repeat_interleave(k)
        if mixup is not None and len(targets) % 2 == 0:
            patches, targets = mixup(patches, targets)
        return model(patches), targets
