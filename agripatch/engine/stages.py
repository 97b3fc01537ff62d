"""The training stages as data: one table that `agripatch train` loops over.

Each :class:`StageSpec` says which recipe model builds the stage's network, what data it trains on, how
a batch goes through it, which earlier stage's weights it starts from, and when it is needed. A stage's
position in :data:`STAGES` is its index in the seeds (so resumed and repeated runs replay exactly);
adding a stage (e.g. a distilled patch classifier) means adding one row here.

  anchornet  AnchorNet on image labels at the glance size (always built: it picks the patches);
  glance     (optional) the classifier on whole photos at the glance size;
  patches    the classifier on the top-K full-resolution patches of the frozen AnchorNet (always built;
             starts from the glance stage's weights when that ran);
  baseline   (optional) the plain full-image classifier, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch.nn as nn

from agripatch.data.transforms import (
    eval_transform,
    full_resolution_transform,
    train_transform,
)
from agripatch.engine.data import (
    PhotoTransform,
    ReportingDataset,
    TensorTransform,
    collate_tensors,
    collate_training_photos,
)
from agripatch.data.lesion_masks import LesionMasks
from agripatch.distributed import DistContext
from agripatch.engine.distill import DistilledForward, TeacherTargets
from agripatch.engine.forwards import ImageForward, LesionForward, PatchForward
from agripatch.models.fuse import inference_model
from agripatch.pipeline.cascade import FullImage, PatchPipeline, SymptomReader
from agripatch.recipes import Recipe

__all__ = ["STAGES", "Built", "StageSpec", "TrainingRun", "stage_index"]


class TrainingRun(Protocol):
    """What a training stage needs to know of the run it belongs to (:class:`agripatch.engine.train.Trainer`
    is one): the recipe and classes, the dataset and its splits, the process's device, and the optional
    teacher targets, lesion masks and symptom map tuned on them."""

    recipe: Recipe
    classes: list[str]
    data: Path
    train_samples: list[tuple[str, int]]
    val_samples: list[tuple[str, int]]
    ctx: DistContext
    teacher: TeacherTargets | None
    lesion_masks: LesionMasks | None
    symptom_map: nn.Module | None
    off_leaf_classes: list[int] | None


@dataclass
class Built:
    """A network a stage built (and maybe trained), with what the model file records about it."""

    arch: str
    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int


@dataclass(frozen=True)
class StageSpec:
    """One training stage.

    Attributes:
        name: the stage's name (recipe ``stages.<name>``, checkpoint folder, metrics rows).
        model: which recipe model builds it (``models.<model>``): anchornet, classifier or baseline.
        input_size: the square input size of a whole-image stage from the recipe; None = full-resolution
            photos (the patch stage).
        init_from: the stage whose trained weights this one starts from, when that stage was built.
        always: built even when the recipe disables its training (the cascade cannot do without it).
        forward: how a batch goes through the model: ``image`` or ``patches``.
    """

    name: str
    model: str
    input_size: Callable[[Recipe], int] | None
    init_from: str | None = None
    always: bool = False
    forward: str = "image"

    def needed(self, recipe: Recipe) -> bool:
        """Whether this run builds the stage's network at all."""
        if getattr(recipe.models, self.model) is None:
            return False
        return self.always or getattr(recipe.stages, self.name).enabled

    def trains(self, recipe: Recipe) -> bool:
        """Whether this run trains it (else it keeps its initial weights)."""
        return getattr(recipe.stages, self.name).enabled


STAGES: tuple[StageSpec, ...] = (
    StageSpec("anchornet", "anchornet", lambda r: r.cascade.glance_size, always=True),
    StageSpec("glance", "classifier", lambda r: r.cascade.glance_size),
    StageSpec("patches", "classifier", None, init_from="glance", always=True, forward="patches"),
    StageSpec("baseline", "baseline", lambda r: r.data.baseline_size),
)


def stage_index(name: str) -> int:
    """Position of a stage in :data:`STAGES` (its seed index)."""
    for index, spec in enumerate(STAGES):
        if spec.name == name:
            return index
    raise KeyError(f"no training stage {name!r}; stages are {[s.name for s in STAGES]}")


# ------------------------------------------------------------------------------------ builders


def build_network(spec: StageSpec, trainer: TrainingRun) -> Built:
    """The stage's network from the recipe's model entry, ImageNet-initialised as the recipe says."""
    from agripatch.models import create_anchornet, create_classifier

    recipe, classes = trainer.recipe, trainer.classes
    cfg = getattr(recipe.models, spec.model)
    size = spec.input_size(recipe) if spec.input_size is not None else recipe.cascade.patch_size
    if spec.model == "anchornet":
        model = create_anchornet(cfg.arch, num_classes=len(classes), pretrained=cfg.pretrained, class_names=classes)
        return Built(cfg.arch, model, tuple(model.cfg["mean"]), tuple(model.cfg["std"]), size)
    model, data_cfg = create_classifier(cfg.arch, len(classes), pretrained=cfg.pretrained)
    return Built(cfg.arch, model, tuple(data_cfg["mean"]), tuple(data_cfg["std"]), size)


def stage_data(spec: StageSpec, trainer: TrainingRun, built: Built, pipeline: PatchPipeline | None):
    """(train set, val set or None, collate function) for the stage.

    Without loader workers the datasets live in this process for the whole stage, so they keep their decoded
    photos (``data.cache_mb``, split between train and val by size) and later epochs skip the JPEG decode.
    """
    recipe = trainer.recipe
    augment = recipe.augment.get("train")
    cache = recipe.data.cache_mb * 2**20 if recipe.data.workers == 0 else 0
    n_train, n_val = len(trainer.train_samples), len(trainer.val_samples)
    budget = {"train": cache * n_train // max(n_train + n_val, 1), "val": cache * n_val // max(n_train + n_val, 1)}
    if spec.input_size is None:
        min_side = pipeline.decode_min_side()

        def make(samples, aug, part):
            return ReportingDataset(trainer.data, samples, PhotoTransform(full_resolution_transform(aug)),
                                    min_side=min_side, cache_bytes=budget[part],
                                    teacher=_teacher_of(spec, trainer) if part == "train" else None)

        collate = collate_training_photos
        train, val = make(trainer.train_samples, augment, "train"), make(trainer.val_samples, None, "val")
    else:
        size = spec.input_size(recipe)
        crop_scale = tuple(getattr(recipe.stages, spec.name).crop_scale)
        train = ReportingDataset(trainer.data, trainer.train_samples,
                                 TensorTransform(train_transform(size, augment, crop_scale), built.mean, built.std),
                                 min_side=size, cache_bytes=budget["train"], lesion_masks=_masks_of(spec, trainer),
                                 teacher=_teacher_of(spec, trainer))
        val = ReportingDataset(trainer.data, trainer.val_samples,
                               TensorTransform(eval_transform(size), built.mean, built.std), min_side=size,
                               cache_bytes=budget["val"])
        collate = collate_tensors
    return train, (val if trainer.val_samples else None), collate


def stage_forward(spec: StageSpec, trainer: TrainingRun, pipeline: PatchPipeline | None):
    """The stage's forward function (with the teacher's soft targets added when the stage distils)."""
    runtime = trainer.recipe.runtime
    if spec.forward == "patches":
        forward = PatchForward(pipeline, len(trainer.classes), trainer.ctx.device, runtime.channels_last,
                               train_selection=trainer.recipe.cascade.train_selection)
    elif _masks_of(spec, trainer) is not None:
        forward = LesionForward(trainer.ctx.device, runtime.channels_last, trainer.recipe.lesions.weight)
    else:
        forward = ImageForward(trainer.ctx.device, runtime.channels_last)
    if _teacher_of(spec, trainer) is None:
        return forward
    distill = trainer.recipe.distill
    return DistilledForward(forward, distill.weight, distill.temperature)


def _teacher_of(spec: StageSpec, trainer: TrainingRun):
    """The teacher's targets a stage learns from (recipe ``distill.stages``), when the run has a teacher."""
    return trainer.teacher if spec.name in trainer.recipe.distill.stages else None


def _masks_of(spec: StageSpec, trainer: TrainingRun):
    """The lesion masks a stage trains with: AnchorNet's stage only (it ranks the cells), when the run has them."""
    return trainer.lesion_masks if spec.model == "anchornet" else None


def cascade_of(trainer: TrainingRun, anchornet: Built, classifier: Built, *, frozen: bool = True,
               baseline: Built | None = None) -> PatchPipeline:
    """The recipe's cascade over two built networks (thresholds as the recipe gives them).

    Networks that no longer train (AnchorNet during the patch stage; both for calibration, ``frozen``) run
    as :func:`~agripatch.models.fuse.inference_model` makes them (BatchNorm folded, channels-last): the same
    function, several times faster on a CPU. With ``cascade.full_image_exit`` the finished cascade reads the
    photos its patches leave unsure with ``baseline``; the patch stage's cascade, which only selects and cuts,
    goes without it. With ``cascade.severity`` the finished cascade measures severity with the run's tuned symptom
    map, else the shipped one. The run's off-leaf classes, once fitted, rank their photos' cells without the prior.
    """
    device = trainer.ctx.device
    glance = inference_model(anchornet.model, method="forward_cam").to(device)
    reader = inference_model(classifier.model).to(device) if frozen else classifier.model.to(device)
    config, full_image = trainer.recipe.cascade.model_copy(), None
    if getattr(trainer, "off_leaf_classes", None):  # fitted once AnchorNet is trained (Trainer.fit_off_leaf_classes)
        config = config.model_copy(update={"off_leaf_classes": list(trainer.off_leaf_classes)})
    if getattr(trainer, "photo_orientation", None):  # fitted from the training photos (Trainer.fit_photo_orientation)
        config = config.model_copy(update={"photo_orientation": trainer.photo_orientation})
    if config.full_image_exit and baseline is not None and frozen:
        full_image = FullImage(inference_model(baseline.model).to(device), baseline.input_size,
                               tuple(baseline.mean), tuple(baseline.std))
    elif config.full_image_exit:
        config = config.model_copy(update={"full_image_exit": False, "thresholds": None, "temperatures": None})
    symptoms = None
    if config.severity is not None and (frozen or config.cell_prior == "symptom"):  # the patch stage ranks by it
        tuned = getattr(trainer, "symptom_map", None)
        symptoms = (SymptomReader.shipped(config.severity.map, device) if tuned is None
                    else SymptomReader.of_map(tuned, device))
        config = config.model_copy(update={"severity": symptoms.severity_config(config.severity)})
    elif config.severity is not None:
        config = config.model_copy(update={"severity": None})
    return PatchPipeline(glance, reader, config, anchornet_mean=anchornet.mean, anchornet_std=anchornet.std,
                         classifier_mean=classifier.mean, classifier_std=classifier.std, full_image=full_image,
                         symptoms=symptoms)
