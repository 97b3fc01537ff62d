"""`agripatch train`: run a recipe's stages on a dataset and write one self-describing model file.

Stages, in order, each resumable and skipped when its checkpoint says it is complete:
  anchornet  fine-tune AnchorNet on image labels at the glance size;
  glance     (optional) fine-tune the classifier on whole images at the glance size;
  patches    fine-tune the classifier on the top-K patches the frozen AnchorNet picks from augmented
             photos, cut from the full-resolution photo (selection guided by the true class's map);
  baseline   (optional) the plain full-image classifier with the same backbone and budget.
Then exit thresholds are calibrated on the validation split and `model.pt` is written.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from agripatch.data.folder import load_class_map, save_class_map, scan_image_folder
from agripatch.data.photos import PhotoDataset
from agripatch.data.splits import (
    SplitRow,
    classes_of,
    load_splits,
    make_splits,
    samples_for,
    write_splits_csv,
)
from agripatch.data.transforms import (
    eval_transform,
    full_resolution_transform,
    train_transform,
)
from agripatch.engine.data import (
    PhotoTransform,
    ReportingDataset,
    TensorTransform,
    collate_photos,
    collate_tensors,
)
from agripatch.engine.distributed import (
    DistContext,
    barrier,
    init_distributed,
    shutdown,
)
from agripatch.engine.loop import (
    Stage,
    StageRunner,
    load_best_weights,
    seed_everything,
    stage_seed,
)
from agripatch.errors import AgripatchError, DatasetError
from agripatch.io.atomic import atomic_write_text
from agripatch.pipeline.bundle import ModelSpec, save_model_file
from agripatch.pipeline.cascade import (
    CascadeConfig,
    PatchPipeline,
    accuracy_preserving_thresholds,
    decode_min_side,
    make_glance,
    normalize,
    thresholds_for_budget,
)
from agripatch.pipeline.select import cell_scores, crop_patches, map_boxes, select_cells
from agripatch.recipes import Recipe, load_recipe, recipe_from_dict, save_recipe

STAGE_ORDER = ("anchornet", "glance", "patches", "baseline")


# ---------------------------------------------------------------------------------------- run folder
def _check_run_dir(out: Path, resume: bool) -> None:
    marker = out / "recipe.yaml"
    if resume:
        if not marker.is_file():
            raise AgripatchError(f"--resume: {out} holds no run (no recipe.yaml); start it without --resume")
    elif marker.exists() or (out / "checkpoints").exists():
        raise AgripatchError(
            f"{out} already holds a run; pass --resume to continue it, or choose another --out (nothing was overwritten)"
        )


def _resolve_recipe(recipe: str | Path, overrides: list[str], epochs: int | None, seed: int | None) -> Recipe:
    resolved = load_recipe(recipe, overrides)
    data = resolved.model_dump(mode="json")
    if epochs is not None:
        for name in STAGE_ORDER:
            data["stages"][name]["epochs"] = int(epochs)
    if seed is not None:
        data["seed"] = int(seed)
    return recipe_from_dict(data, source=str(recipe))


def _load_rows(data: Path, recipe: Recipe) -> list[SplitRow]:
    try:
        return load_splits(data)
    except DatasetError:
        index = scan_image_folder(data)
        return make_splits(index, val=recipe.data.val_fraction, test=recipe.data.test_fraction,
                           seed=recipe.data.split_seed)


def _validate_data(rows: list[SplitRow], classes: list[str], data: Path) -> None:
    if len(classes) < 2:
        raise DatasetError(f"{data} has {len(classes)} class(es) {classes}; classification needs at least 2 class folders")
    train_labels = {row.label for row in rows if row.split == "train"}
    if not train_labels:
        raise DatasetError(f"{data} has no training images (splits.csv or folders are empty)")
    missing = sorted(set(classes) - train_labels)
    if missing:
        raise DatasetError(f"{data}: classes {missing} have no training images")


# ------------------------------------------------------------------------------------------ forwards
class ImageForward:
    """Whole-image stages: the batch's resized images through the model."""

    def __init__(self, device: torch.device, channels_last: bool):
        self.device = device
        self.channels_last = channels_last

    def __call__(self, model: nn.Module, batch: dict[str, Any], mixup=None):
        images = batch["image"].to(self.device, non_blocking=True)
        labels = batch["label"].to(self.device, non_blocking=True)
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if mixup is not None and model.training and len(labels) % 2 == 0:
            images, labels = mixup(images, labels)
        return model(images), labels


class PatchForward:
    """Patch stage: frozen AnchorNet picks K boxes on the glance, the classifier reads them cut at full resolution.

    While training, boxes are ranked by the map the recipe's ``cascade.train_selection`` names (the true
    class, AnchorNet's predicted class, or a random class); in evaluation by the inference rule. Evaluation returns
    image-level logits (mean over the K patches) so validation accuracy is per photo.
    """

    def __init__(self, anchornet: nn.Module, cascade: CascadeConfig, anchornet_norm, classifier_norm,
                 device: torch.device, channels_last: bool, train_selection: str = "random"):
        if train_selection not in ("label", "predicted", "random"):
            raise ValueError(f"train_selection must be label, predicted or random, got {train_selection!r}")
        self.train_selection = train_selection
        self.anchornet = anchornet.eval().to(device)
        for param in self.anchornet.parameters():
            param.requires_grad_(False)
        self.cascade = cascade
        self.anchornet_norm = anchornet_norm
        self.classifier_norm = classifier_norm
        self.device = device
        self.channels_last = channels_last
        size = cascade.glance_size
        self.cell_boxes = anchornet.cell_boxes(size, size).to(device)

    def ranking_classes(self, labels: torch.Tensor | None, num_classes: int) -> str | torch.Tensor:
        """Whose CAM ranks the cells: the inference rule in evaluation, `train_selection` in training."""
        if labels is None or self.train_selection == "predicted":
            return self.cascade.score_mode
        if self.train_selection == "random":
            # Drawn from the global generator, which the stage reseeds every epoch: resumes repeat it.
            return torch.randint(num_classes, (len(labels),)).to(labels.device)
        return labels

    @torch.no_grad()
    def select(self, photos: list[torch.Tensor], labels: torch.Tensor | None) -> torch.Tensor:
        """Boxes [B, K, 4] in each photo's own pixels."""
        size = self.cascade.glance_size
        glance = normalize(make_glance(photos, size, self.device), *self.anchornet_norm)
        logits, cam = self.anchornet.forward_cam(glance)
        scores = cell_scores(cam, logits, self.ranking_classes(labels, cam.shape[1]))
        chosen = select_cells(scores.float(), self.cell_boxes, self.cascade.k, self.cascade.iou_threshold)
        sizes = torch.tensor([[photo.shape[-2], photo.shape[-1]] for photo in photos])
        return map_boxes(chosen.boxes.cpu(), (size, size), sizes)

    def __call__(self, model: nn.Module, batch: dict[str, Any], mixup=None):
        photos = batch["image"]
        labels = batch["label"].to(self.device)
        k = self.cascade.k
        boxes = self.select(photos, labels if model.training else None)
        patches = crop_patches(photos, boxes, self.cascade.patch_size, *self.classifier_norm, device=self.device)
        if self.channels_last:
            patches = patches.contiguous(memory_format=torch.channels_last)
        targets = labels.repeat_interleave(k)
        if mixup is not None and model.training and len(targets) % 2 == 0:
            patches, targets = mixup(patches, targets)
        logits = model(patches)
        if not model.training:
            return logits.view(len(labels), k, -1).mean(1), labels
        return logits, targets


# --------------------------------------------------------------------------------------------- main
class Trainer:
    """Holds one run's state (recipe, data, devices, outputs) and runs its stages."""

    def __init__(self, recipe: Recipe, data: Path, out: Path, ctx: DistContext, rows: list[SplitRow],
                 classes: list[str], log, progress):
        self.recipe = recipe
        self.data = Path(data)
        self.out = Path(out)
        self.ctx = ctx
        self.rows = rows
        self.classes = classes
        self.log = log
        self.progress = progress
        self.skipped: set[str] = set()
        self.train_samples = samples_for(rows, "train", classes)
        self.val_samples = samples_for(rows, "val", classes)
        self.histories: dict[str, list[dict[str, Any]]] = {}

    # --- helpers
    def _report_skipped(self, paths: list[str]) -> None:
        new = sorted(set(paths) - self.skipped)
        if not new:
            return
        self.skipped.update(new)
        if self.ctx.is_main:
            for path in new:
                self.log(f"[yellow]skipped unreadable image {path}[/yellow]")
            atomic_write_text(self.out / "skipped_images.txt", "\n".join(sorted(self.skipped)) + "\n")

    def _runner(self, stage: Stage, name: str) -> StageRunner:
        return StageRunner(
            stage, getattr(self.recipe.stages, name), self.recipe.runtime, ctx=self.ctx, seed=self.recipe.seed,
            workers=self.recipe.data.workers, class_balance=self.recipe.data.class_balance,
            checkpoint_dir=self.out / "checkpoints" / name, progress=self.progress, log=self.log,
            on_skipped=self._report_skipped,
        )

    def _image_sets(self, size: int, mean, std, crop_scale) -> tuple[ReportingDataset, ReportingDataset | None]:
        augment = self.recipe.augment.get("train")
        train = ReportingDataset(self.data, self.train_samples,
                                 TensorTransform(train_transform(size, augment, tuple(crop_scale)), mean, std),
                                 min_side=size)
        val = None
        if self.val_samples:
            val = ReportingDataset(self.data, self.val_samples, TensorTransform(eval_transform(size), mean, std),
                                   min_side=size)
        return train, val

    def _photo_min_side(self, anchornet: nn.Module) -> int:
        # Decode large photos only as large as patches need: the smallest cell box must hold patch_size pixels.
        c = self.recipe.cascade
        return decode_min_side(c.glance_size, c.patch_size, anchornet.receptive_field.size)

    def _run(self, stage: Stage, name: str) -> StageRunner:
        runner = self._runner(stage, name)
        if runner.is_complete():
            self.log(f"[{name}] complete, skipping (checkpoint {runner.last_path})")
        else:
            runner.run()
        barrier(self.ctx)
        from agripatch.io.torchfile import load_object

        self.histories[name] = list(load_object(runner.last_path)["history"]) if runner.last_path.is_file() else []
        return runner

    def _seed_init(self, stage_index: int) -> None:
        # New heads are initialised randomly: seed them from the recipe so every run (and resume) starts alike.
        seed_everything(stage_seed(self.recipe.seed, stage_index, -1))

    def _labels(self) -> list[int]:
        return [label for _, label in self.train_samples]

    # --- stages
    def train_anchornet(self) -> nn.Module:
        """Stage (a): AnchorNet on image labels at the glance size."""
        from agripatch.models import create_anchornet

        cfg = self.recipe.models.anchornet
        self._seed_init(0)
        model = create_anchornet(cfg.arch, num_classes=len(self.classes), pretrained=cfg.pretrained,
                                 class_names=self.classes)
        mean, std = model.cfg["mean"], model.cfg["std"]
        size = self.recipe.cascade.glance_size
        if self.recipe.stages.anchornet.enabled:
            train, val = self._image_sets(size, mean, std, self.recipe.stages.anchornet.crop_scale)
            stage = Stage("anchornet", 0, model, train, val, ImageForward(self.ctx.device, self.recipe.runtime.channels_last),
                          self._labels(), len(self.classes), collate=collate_tensors)
            runner = self._run(stage, "anchornet")
            load_best_weights(runner.checkpoint_dir, model)
        return model.eval()

    def train_classifier_stage(self, name: str, index: int, arch_cfg, size: int) -> tuple[nn.Module, dict[str, Any]] | None:
        """Stages (b) and baseline: a timm classifier on whole images at `size`."""
        from agripatch.models import create_classifier

        stage_cfg = getattr(self.recipe.stages, name)
        if not stage_cfg.enabled or arch_cfg is None:
            return None
        self._seed_init(index)
        model, data_cfg = create_classifier(arch_cfg.arch, len(self.classes), pretrained=arch_cfg.pretrained)
        train, val = self._image_sets(size, data_cfg["mean"], data_cfg["std"], stage_cfg.crop_scale)
        stage = Stage(name, index, model, train, val, ImageForward(self.ctx.device, self.recipe.runtime.channels_last),
                      self._labels(), len(self.classes), collate=collate_tensors)
        runner = self._run(stage, name)
        load_best_weights(runner.checkpoint_dir, model)
        return model.eval(), data_cfg

    def train_patches(self, anchornet: nn.Module, start_from: nn.Module | None = None) -> tuple[nn.Module, dict[str, Any]]:
        """Stage (c): the classifier on the top-K full-resolution patches of the frozen AnchorNet.

        With a glance stage, it starts from the glance classifier's weights, so one classifier serves
        both the glance (whole photo) and the patches when the recipe's cascade glances with it.
        """
        from agripatch.models import create_classifier

        cfg = self.recipe.models.classifier
        self._seed_init(2)
        model, data_cfg = create_classifier(cfg.arch, len(self.classes), pretrained=cfg.pretrained)
        if start_from is not None:
            model.load_state_dict(start_from.state_dict())
        cascade = self.cascade_config()
        forward = PatchForward(anchornet, cascade, (anchornet.cfg["mean"], anchornet.cfg["std"]),
                               (data_cfg["mean"], data_cfg["std"]), self.ctx.device, self.recipe.runtime.channels_last,
                               train_selection=self.recipe.cascade.train_selection)
        min_side = self._photo_min_side(anchornet)
        augment = self.recipe.augment.get("train")
        train = ReportingDataset(self.data, self.train_samples, PhotoTransform(full_resolution_transform(augment)),
                                 min_side=min_side)
        val = None
        if self.val_samples:
            val = ReportingDataset(self.data, self.val_samples, PhotoTransform(full_resolution_transform(None)),
                                   min_side=min_side)
        if self.recipe.stages.patches.enabled:
            stage = Stage("patches", 2, model, train, val, forward, self._labels(), len(self.classes),
                          collate=collate_photos)
            runner = self._run(stage, "patches")
            load_best_weights(runner.checkpoint_dir, model)
        return model.eval(), data_cfg

    def cascade_config(self, thresholds: list[float] | None = None) -> CascadeConfig:
        """The recipe's cascade settings as the pipeline's config."""
        c = self.recipe.cascade
        return CascadeConfig(k=c.k, glance_size=c.glance_size, patch_size=c.patch_size, iou_threshold=c.iou_threshold,
                             glance=c.glance, thresholds=thresholds or c.thresholds, score_mode=c.score_mode)

    # --- calibration and outputs
    def calibrate(self, pipeline: PatchPipeline, min_side: int) -> dict[str, Any]:
        """Choose exit thresholds on the validation split (recipe thresholds > budget > accuracy-preserving)."""
        from agripatch.engine.evaluate import collect_stage_outputs

        c = self.recipe.cascade
        if c.thresholds is not None or not self.val_samples:
            return {"thresholds": list(pipeline.config.thresholds), "how": "recipe" if c.thresholds else "default"}
        dataset = PhotoDataset(self.data, [path for path, _ in self.val_samples],
                               labels=[label for _, label in self.val_samples], min_side=min_side)
        outputs, labels, _ = collect_stage_outputs(pipeline, dataset, batch_size=self.recipe.stages.patches.batch_size,
                                                   workers=self.recipe.data.workers, on_skipped=self._report_skipped)
        if c.budget_gmacs is not None:
            choice = thresholds_for_budget(outputs.probs, outputs.stage_macs, c.budget_gmacs * 1e9, labels)
            return {"thresholds": choice.thresholds, "how": f"budget {c.budget_gmacs} GMACs on val",
                    "val_accuracy": choice.accuracy, "val_mean_macs": choice.mean_macs}
        choice = accuracy_preserving_thresholds(outputs.probs, outputs.stage_macs, labels)
        return {"thresholds": choice.thresholds, "how": "cheapest within 0.5 pt of best val accuracy",
                "val_accuracy": choice.accuracy, "val_mean_macs": choice.mean_macs}

    def write_metrics(self) -> None:
        """metrics.csv: one row per stage and epoch, rebuilt from the checkpoints (no duplicates on resume)."""
        fields = ["stage", "epoch", "train_loss", "train_acc", "val_acc", "lr", "images_per_s", "seconds"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for name in STAGE_ORDER:
            for row in self.histories.get(name, []):
                writer.writerow(row)
        atomic_write_text(self.out / "metrics.csv", buffer.getvalue())


def run_training(
    recipe: str | Path,
    data: str | Path,
    out: str | Path,
    *,
    epochs: int | None = None,
    device: str = "auto",
    resume: bool = False,
    seed: int | None = None,
    overrides: list[str] | None = None,
    quiet: bool = False,
) -> Path:
    """Train every stage of a recipe on a dataset into run folder OUT; returns the path of `model.pt`."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    console = Console(stderr=True, quiet=quiet)
    out, data = Path(out), Path(data)
    ctx = init_distributed(device)
    log = console.print if ctx.is_main else (lambda *args, **kwargs: None)
    try:
        _check_run_dir(out, resume)
        if resume:
            resolved = load_recipe(out / "recipe.yaml")
            requested = _resolve_recipe(recipe, overrides or [], epochs, seed)
            if requested.model_dump() != resolved.model_dump():
                # Resuming must replay the same run; a longer schedule is the one change allowed.
                same_but_epochs = requested.model_dump(exclude={"stages"}) == resolved.model_dump(exclude={"stages"})
                if not same_but_epochs:
                    raise AgripatchError(f"--resume: the recipe differs from {out / 'recipe.yaml'}; resume with the same recipe and overrides")
                resolved = requested
        else:
            resolved = _resolve_recipe(recipe, overrides or [], epochs, seed)
        torch.set_float32_matmul_precision("high")
        rows = _load_rows(data, resolved)
        classes = classes_of(rows)
        _validate_data(rows, classes, data)
        if resume and (out / "class_map.json").is_file():
            saved = load_class_map(out / "class_map.json")
            if saved != classes:
                raise DatasetError(f"class map of {out} {saved} does not match the data in {data} {classes}")
        if ctx.is_main:
            out.mkdir(parents=True, exist_ok=True)
            save_recipe(resolved, out / "recipe.yaml")
            save_class_map(classes, out / "class_map.json")
            write_splits_csv(rows, out / "splits.csv")
        barrier(ctx)
        counts = {split: sum(1 for row in rows if row.split == split) for split in ("train", "val", "test")}
        log(f"agripatch train: recipe [bold]{resolved.name}[/bold], {len(classes)} classes, "
            f"train {counts['train']} / val {counts['val']} / test {counts['test']} images, device {ctx.device}"
            + (f", {ctx.world_size} processes" if ctx.distributed else ""))
        progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console, transient=True,
                            disable=quiet or not ctx.is_main)
        with progress:
            trainer = Trainer(resolved, data, out, ctx, rows, classes, log, progress)
            anchornet = trainer.train_anchornet()
            glance = trainer.train_classifier_stage("glance", 1, resolved.models.classifier, resolved.cascade.glance_size)
            classifier, classifier_cfg = trainer.train_patches(anchornet, glance[0] if glance else None)
            baseline_arch = resolved.models.baseline
            baseline = trainer.train_classifier_stage("baseline", 3, baseline_arch, resolved.data.baseline_size)
        pipeline = PatchPipeline(anchornet.to(ctx.device), classifier.to(ctx.device), trainer.cascade_config(),
                                 anchornet_mean=anchornet.cfg["mean"], anchornet_std=anchornet.cfg["std"],
                                 classifier_mean=classifier_cfg["mean"], classifier_std=classifier_cfg["std"])
        calibration = trainer.calibrate(pipeline, trainer._photo_min_side(anchornet)) if ctx.is_main else {}
        model_path = out / "model.pt"
        if ctx.is_main:
            c = resolved.cascade
            cascade = {"k": c.k, "glance_size": c.glance_size, "patch_size": c.patch_size,
                       "iou_threshold": c.iou_threshold, "glance": c.glance, "score_mode": c.score_mode,
                       "thresholds": [float(t) for t in calibration["thresholds"]]}
            baseline_spec = None
            if baseline is not None:
                baseline_spec = ModelSpec.from_module(baseline_arch.arch, baseline[0], baseline[1]["mean"],
                                                      baseline[1]["std"], resolved.data.baseline_size)
            save_model_file(
                model_path, classes=classes,
                anchornet=ModelSpec.from_module(resolved.models.anchornet.arch, anchornet, anchornet.cfg["mean"],
                                                anchornet.cfg["std"], c.glance_size),
                classifier=ModelSpec.from_module(resolved.models.classifier.arch, classifier, classifier_cfg["mean"],
                                                 classifier_cfg["std"], c.patch_size),
                baseline=baseline_spec, cascade=cascade, recipe_yaml=resolved.to_yaml(),
                metrics={"calibration": calibration, "skipped_images": sorted(trainer.skipped)},
            )
            trainer.write_metrics()
            log(f"[green]wrote[/green] {model_path} (thresholds {cascade['thresholds']}, {calibration.get('how')})")
        barrier(ctx)
        return model_path
    finally:
        shutdown(ctx)
