"""`agripatch train`: run a recipe's stages on a dataset and write one self-describing model file.

Steps: check the run folder -> resolve the recipe -> read the split -> train every stage of
:data:`~agripatch.engine.stages.STAGES` (each resumable, skipped when its checkpoint says it is complete)
-> choose the exit thresholds on the validation split with the one threshold chooser
(:func:`~agripatch.pipeline.exits.choose_thresholds`) -> write `model.pt` and `metrics.csv`.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agripatch.data.folder import load_class_map, save_class_map, scan_image_folder
from agripatch.data.lesion_masks import LesionMasks
from agripatch.data.photos import PhotoDataset, photos_orientation
from agripatch.data.splits import (
    SplitRow,
    classes_of,
    load_splits,
    make_splits,
    samples_for,
    write_splits_csv,
)
from agripatch.allocator import tune_memory_allocator
from agripatch.distributed import DistContext, barrier, init_distributed, shutdown
from agripatch.engine.calibrate import Calibration, fit_calibration
from agripatch.engine.distill import TARGETS_FILE, TeacherTargets, load_teacher, teacher_targets
from agripatch.engine.scoring import Scored, fit_off_leaf_classes, glance_features, median_exposure, score_photos
from agripatch.engine.reports import save_stage_arrays
from agripatch.engine.loop import (
    Stage,
    StageRunner,
    load_kept_weights,
    seed_everything,
    stage_seed,
)
from agripatch.engine.stages import (
    STAGES,
    Built,
    StageSpec,
    build_network,
    cascade_of,
    stage_data,
    stage_forward,
)
from agripatch.errors import AgripatchError, DatasetError
from agripatch.io.atomic import atomic_write_text
from agripatch.io.torchfile import load_object
from agripatch.pipeline.bundle import ModelSpec, save_model_file, shipped_symptom_map_spec
from agripatch.pipeline.cascade import PatchPipeline
from agripatch.pipeline.exits import ExitPolicy
from agripatch.pipeline.refusal import Refusal, feature_model, trained_turns
from agripatch.recipes import Recipe, load_recipe, recipe_from_dict, save_recipe

__all__ = ["Trainer", "run_training"]


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


def _resolve_recipe(recipe: str | Path, overrides: list[str], epochs: int | None, seed: int | None,
                    lesion_masks: str | Path | None = None, teacher: str | Path | None = None) -> Recipe:
    resolved = load_recipe(recipe, overrides)
    data = resolved.model_dump(mode="json")
    if lesion_masks is not None:
        data["lesions"]["masks"] = str(lesion_masks)
    if teacher is not None:
        data["distill"]["teacher"] = str(teacher)
    for section, key in (("lesions", "masks"), ("distill", "teacher")):
        if data[section][key]:  # absolute, so a resume from another folder finds the same files
            data[section][key] = str(Path(data[section][key]).expanduser().resolve())
    if epochs is not None:
        for spec in STAGES:
            data["stages"][spec.name]["epochs"] = int(epochs)
    if seed is not None:
        data["seed"] = int(seed)
    return recipe_from_dict(data, source=str(recipe))


def _recipe_for_run(out: Path, recipe: str | Path, overrides: list[str], epochs: int | None, seed: int | None,
                    resume: bool, lesion_masks: str | Path | None = None, teacher: str | Path | None = None) -> Recipe:
    """The recipe to run: the saved one when resuming (a longer schedule is the one change allowed)."""
    requested = _resolve_recipe(recipe, overrides, epochs, seed, lesion_masks, teacher)
    if not resume:
        return requested
    saved = load_recipe(out / "recipe.yaml")
    if requested.model_dump() == saved.model_dump():
        return saved
    if requested.model_dump(exclude={"stages"}) != saved.model_dump(exclude={"stages"}):
        raise AgripatchError(f"--resume: the recipe differs from {out / 'recipe.yaml'}; resume with the same recipe and overrides")
    return requested


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


def _lesion_masks(recipe: Recipe, samples: list[tuple[Path, int]], data: Path, log) -> LesionMasks | None:
    """The recipe's lesion masks, checked to match some training photos (None when the recipe has none); checked
    before the run folder is written, so a bad mask folder leaves nothing behind."""
    if not recipe.lesions.masks or recipe.lesions.weight == 0:
        return None
    masks = LesionMasks(recipe.lesions.masks, recipe.lesions.min_value)
    found = masks.count([path for path, _ in samples])
    if found == 0:
        raise DatasetError(f"no training photo of {data} has a lesion mask in {masks.folder}: a photo <class>/<name>.jpg "
                           f"needs {masks.folder}/<class>/<name>.png or {masks.folder}/<name>.png")
    log(f"lesion masks: {found} of {len(samples)} training photos (AnchorNet learns to rank their lesion cells first)")
    return masks


def _distils(recipe: Recipe) -> bool:
    """Whether some stage this run trains learns from a teacher."""
    d = recipe.distill
    return bool(d.teacher) and d.weight > 0 and any(getattr(recipe.stages, name).enabled for name in d.stages)


# --------------------------------------------------------------------------------------------- trainer
class Trainer:
    """Holds one run's state (recipe, data, device, outputs) and trains the stage table."""

    def __init__(self, recipe: Recipe, data: Path, out: Path, ctx: DistContext, rows: list[SplitRow],
                 classes: list[str], log, progress, lesion_masks: LesionMasks | None = None):
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
        self.lesion_masks = lesion_masks
        self.teacher: TeacherTargets | None = None
        self.symptom_map: torch.nn.Module | None = None  # the shipped map tuned on the lesion masks, when it was
        self.off_leaf_classes: list[int] | None = None  # fitted once AnchorNet is trained (fit_off_leaf_classes)
        self.photo_orientation = self.fit_photo_orientation()

    def fit_photo_orientation(self) -> str:
        """Which way every photo is read for this model (:mod:`agripatch.io.orientation`): the recipe's
        ``cascade.photo_orientation``, else the way at least 95% of the training photos lie
        (:func:`~agripatch.data.photos.photos_orientation`), else ``any``. Logged when photos will be turned."""
        if self.recipe.cascade.photo_orientation is not None:
            return self.recipe.cascade.photo_orientation
        way, lying, read = photos_orientation(self.data, [path for path, _ in self.train_samples])
        if way != "any":
            self.log(f"photos are read {way}: {lying} of {read} training photos lie that way, so predict and evaluate "
                     "turn the others a quarter turn clockwise first")
        return way

    def load_teacher_targets(self) -> None:
        """The teacher's probabilities for every training photo (``distill``): computed once by rank 0 and kept in
        the run folder, so other ranks and resumed runs read the same targets."""
        if not _distils(self.recipe):
            return
        d, paths = self.recipe.distill, [path for path, _ in self.train_samples]
        args = (d.teacher, self.classes, self.data, paths, self.out / TARGETS_FILE)
        kwargs = {"device": self.ctx.device, "batch_size": self.recipe.stages.baseline.batch_size,
                  "progress": self.progress}
        if self.ctx.is_main:
            self.teacher = teacher_targets(*args, **kwargs)
        barrier(self.ctx)
        if not self.ctx.is_main:
            self.teacher = teacher_targets(*args, **kwargs)
        self.log(f"distillation: {d.teacher} teaches {', '.join(d.stages)} (weight {d.weight}, temperature "
                 f"{d.temperature}) on {len(paths)} training photos")

    def tune_symptom_map(self) -> None:
        """With lesion masks and ``cascade.severity``, the shipped symptom map fine-tuned on the masked training
        photos before any stage (the patch stage's symptom prior and `predict` then use it); rank 0 tunes, the
        other ranks read its checkpoint."""
        severity, lesions = self.recipe.cascade.severity, self.recipe.lesions
        if self.lesion_masks is None or severity is None or lesions.map_epochs == 0:
            return
        from agripatch.engine.symptom_tuning import load_tuned_map, map_samples, tune_symptom_map
        from agripatch.models.symptom_map import shipped_symptom_map

        checkpoint = self.out / "checkpoints" / "symptom_map" / "map.pt"
        tuned = load_tuned_map(severity.map, severity.side, checkpoint) if self.ctx.is_main else None
        if self.ctx.is_main and tuned is None:
            reference = shipped_symptom_map(severity.map)
            train, val = ([p for p, _ in samples] for samples in (self.train_samples, self.val_samples))
            train = map_samples(self.data, train, self.lesion_masks, severity.side, reference)
            val = map_samples(self.data, val, self.lesion_masks, severity.side, reference)
            self.log(f"symptom map: fine-tuning {severity.map} on {len(train)} masked training photos "
                     f"({len(val)} for validation) at {severity.side} px")
            tuned = tune_symptom_map(severity.map, severity.side, train, val, epochs=lesions.map_epochs,
                                     lr=lesions.map_lr, seed=stage_seed(self.recipe.seed, len(STAGES), -1),
                                     checkpoint=checkpoint, log=self.log)
        else:
            self.log(f"symptom map: tuned before, reusing {checkpoint}")
        barrier(self.ctx)
        self.symptom_map = tuned if tuned is not None else load_tuned_map(severity.map, severity.side, checkpoint)

    def report_skipped(self, paths: list[str]) -> None:
        """Log each unreadable training image once and keep their list in the run folder."""
        new = sorted(set(paths) - self.skipped)
        if not new:
            return
        self.skipped.update(new)
        if self.ctx.is_main:
            for path in new:
                self.log(f"[yellow]skipped unreadable image {path}[/yellow]")
            atomic_write_text(self.out / "skipped_images.txt", "\n".join(sorted(self.skipped)) + "\n")

    def train_stages(self) -> dict[str, Built]:
        """Build every needed stage in table order, train the enabled ones, keep their best weights."""
        built: dict[str, Built] = {}
        for index, spec in enumerate(STAGES):
            if not spec.needed(self.recipe):
                continue
            # New heads are initialised randomly: seed them from the recipe so every run (and resume) starts alike.
            seed_everything(stage_seed(self.recipe.seed, index, -1))
            network = build_network(spec, self)
            if spec.init_from in built:
                network.model.load_state_dict(built[spec.init_from].model.state_dict())
            if spec.trains(self.recipe):
                self._train(spec, index, network, built)
            network.model.eval()
            built[spec.name] = network
        return built

    def train_glances(self, size: int) -> PhotoDataset:
        """The training photos, labelled, decoded for a glance of ``size`` px and no more: what the passes over them
        after training (the off-leaf classes, the refusal's class means) read."""
        return PhotoDataset(self.data, [path for path, _ in self.train_samples],
                            labels=[label for _, label in self.train_samples], min_side=size, glance_size=size,
                            orientation=self.photo_orientation)

    def fit_off_leaf_classes(self, anchornet: Built, classifier: Built) -> None:
        """Under a cell prior, the classes whose own class map points off the green leaf on most training photos
        (fruit, flowers; :func:`~agripatch.pipeline.cells.off_leaf_classes`): the patch stage and predict then rank
        their photos' cells by the class map alone. Once per run, after AnchorNet's stage (the same on every
        rank and on a resume: AnchorNet's weights and the training photos decide it)."""
        config = self.recipe.cascade
        if self.off_leaf_classes is not None or config.cell_prior == "none":
            return
        pipeline = cascade_of(self, anchornet, classifier, frozen=False)
        self.off_leaf_classes = fit_off_leaf_classes(pipeline, self.train_glances(config.glance_size), self.classes,
                                                     batch_size=self.recipe.stages.patches.batch_size,
                                                     workers=self.recipe.data.workers, log=self.log)

    def _train(self, spec: StageSpec, index: int, network: Built, built: dict[str, Built]) -> None:
        if spec.forward == "patches":
            self.fit_off_leaf_classes(built["anchornet"], network)
        pipeline = cascade_of(self, built["anchornet"], network, frozen=False) if spec.forward == "patches" else None
        train, val, collate = stage_data(spec, self, network, pipeline)
        stage = Stage(spec.name, index, network.model, train, val, stage_forward(spec, self, pipeline),
                      [label for _, label in self.train_samples], len(self.classes), collate=collate)
        runner = StageRunner(
            stage, getattr(self.recipe.stages, spec.name), self.recipe.runtime, ctx=self.ctx, seed=self.recipe.seed,
            workers=self.recipe.data.workers, class_balance=self.recipe.data.class_balance,
            checkpoint_dir=self.out / "checkpoints" / spec.name, progress=self.progress, log=self.log,
            on_skipped=self.report_skipped,
        )
        if runner.is_complete():
            self.log(f"[{spec.name}] complete, skipping (checkpoint {runner.last_path})")
        else:
            runner.run()
        barrier(self.ctx)
        self.histories[spec.name] = list(load_object(runner.last_path)["history"]) if runner.last_path.is_file() else []
        load_kept_weights(runner.checkpoint_dir, network.model, getattr(self.recipe.stages, spec.name).keep)

    def score_val(self, pipeline: PatchPipeline) -> Scored | None:
        """Every stage of the cascade on the validation photos (None without a validation split)."""
        if not self.val_samples:
            return None
        dataset = PhotoDataset(self.data, [path for path, _ in self.val_samples],
                               labels=[label for _, label in self.val_samples], min_side=pipeline.decode_min_side(),
                               glance_size=pipeline.config.glance_size, orientation=self.photo_orientation)
        scored = score_photos(pipeline, dataset, batch_size=self.recipe.stages.patches.batch_size,
                              workers=self.recipe.data.workers)
        self.report_skipped([path for path, _ in scored.errors])
        return scored

    def save_val_outputs(self, scored: Scored | None) -> None:
        """RUN/val_outputs.npz: the validation photos' stage probabilities and glance features, so the exit and
        refusal rules fitted on them can be audited or refitted without running the networks again."""
        if scored is not None:
            save_stage_arrays(self.out / "val_outputs.npz", scored.outputs, scored.labels)

    def refusal_model(self, pipeline: PatchPipeline, scored: Scored | None) -> Refusal | None:
        """The refusal rule's class means and covariance on the training photos' glance features (its
        thresholds are fitted with the exits, :func:`~agripatch.engine.calibrate.fit_calibration`)."""
        cfg = self.recipe.refusal
        features = None if scored is None else scored.outputs.features
        if not cfg.enabled or features is None or features.shape[1] == 0:
            return None
        train = self.train_glances(pipeline.config.glance_size)
        train_features, train_labels = glance_features(pipeline, train, workers=self.recipe.data.workers)
        model = feature_model(train_features, np.asarray(train_labels), ridge=cfg.ridge)
        model.view_turns = trained_turns(self.recipe.augment.get("train"))
        model.view_exposure = median_exposure(train, workers=self.recipe.data.workers)
        self.log(f"photos the refusal would turn away as not_a_leaf are also judged re-exposed to "
                 f"{model.view_exposure:.3f}, the training photos' median exposure (linear light)")
        return model

    def calibrate(self, pipeline: PatchPipeline, scored: Scored | None) -> Calibration:
        """Temperatures, refusal thresholds and exit thresholds (the recipe's policy: thresholds | budget |
        target confidence | tolerance) on the validation photos."""
        c = self.recipe.cascade
        policy = ExitPolicy(thresholds=c.thresholds, budget_gmacs=c.budget_gmacs, target_confidence=c.target_confidence)
        return fit_calibration(None if scored is None else scored.outputs, None if scored is None else scored.labels,
                               policy, pipeline.config.n_exits, self.refusal_model(pipeline, scored),
                               self.recipe.refusal, pipeline.config.exit_thresholds(), pipeline.full_image_macs(),
                               pipeline.config.off_leaf_classes)

    def write_model(self, built: dict[str, Built], pipeline: PatchPipeline, calibration: Calibration) -> Path:
        """model.pt: the networks, their normalisation, the cascade config with its thresholds, the refusal rule,
        the recipe."""
        cascade = pipeline.config.model_copy(update={"thresholds": [float(t) for t in calibration.thresholds],
                                                     "temperatures": calibration.temperatures})
        refusal = calibration.refusal
        spec = {name: ModelSpec.from_module(b.arch, b.model, b.mean, b.std, b.input_size) for name, b in built.items()}
        return save_model_file(
            self.out / "model.pt", classes=self.classes, anchornet=spec["anchornet"], classifier=spec["patches"],
            baseline=spec.get("baseline"), cascade=cascade, recipe_yaml=self.recipe.to_yaml(),
            metrics={"calibration": calibration.metrics(), "skipped_images": sorted(self.skipped),
                     "refusal": refusal.fitted if refusal is not None else None},
            refusal=refusal, symptom_map=self._symptom_map_spec(cascade),
        )

    def _symptom_map_spec(self, cascade) -> ModelSpec | None:
        """The model file's symptom map: the tuned one when this run tuned it, else the shipped one."""
        if cascade.severity is None or self.symptom_map is None:
            return shipped_symptom_map_spec(cascade)
        network = self.symptom_map
        return ModelSpec.from_module(cascade.severity.map, network, network.cfg["mean"], network.cfg["std"],
                                     cascade.severity.side)

    def write_metrics(self) -> None:
        """metrics.csv: one row per stage and epoch, rebuilt from the checkpoints (no duplicates on resume)."""
        fields = ["stage", "epoch", "train_loss", "train_acc", "val_acc", "lr", "images_per_s", "seconds", "val_seconds"]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for spec in STAGES:
            for row in self.histories.get(spec.name, []):
                writer.writerow(row)
        atomic_write_text(self.out / "metrics.csv", buffer.getvalue())


# ------------------------------------------------------------------------------------------- entry
def _progress(console, quiet: bool, is_main: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=console, transient=True,
                    disable=quiet or not is_main)


def _prepare_run(out: Path, data: Path, recipe: Recipe, ctx: DistContext, resume: bool,
                 log) -> tuple[list[SplitRow], list[str], LesionMasks | None]:
    """Read and check the split (and the lesion masks); on rank 0 write recipe.yaml, class_map.json and splits.csv."""
    rows = _load_rows(data, recipe)
    classes = classes_of(rows)
    _validate_data(rows, classes, data)
    masks = _lesion_masks(recipe, samples_for(rows, "train", classes), data, log)
    if _distils(recipe):
        load_teacher(recipe.distill.teacher, classes)  # a wrong teacher is an error before anything is written
    if resume and (out / "class_map.json").is_file():
        saved = load_class_map(out / "class_map.json")
        if saved != classes:
            raise DatasetError(f"class map of {out} {saved} does not match the data in {data} {classes}")
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, out / "recipe.yaml")
        save_class_map(classes, out / "class_map.json")
        write_splits_csv(rows, out / "splits.csv")
    barrier(ctx)
    return rows, classes, masks


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
    lesion_masks: str | Path | None = None,
    teacher: str | Path | None = None,
) -> Path:
    """Train every stage of a recipe on a dataset into run folder OUT; returns the path of `model.pt`.

    Example::

        run_training("ibean", "data/ibean", "runs/ibean", overrides=["stages.patches.epochs=5"])
    """
    from rich.console import Console

    tune_memory_allocator()
    console = Console(stderr=True, quiet=quiet)
    out, data = Path(out), Path(data)
    ctx = init_distributed(device)
    log = console.print if ctx.is_main else (lambda *args, **kwargs: None)
    try:
        _check_run_dir(out, resume)
        resolved = _recipe_for_run(out, recipe, overrides or [], epochs, seed, resume, lesion_masks, teacher)
        torch.set_float32_matmul_precision("high")
        rows, classes, masks = _prepare_run(out, data, resolved, ctx, resume, log)
        counts = {split: sum(1 for row in rows if row.split == split) for split in ("train", "val", "test")}
        log(f"agripatch train: recipe [bold]{resolved.name}[/bold], {len(classes)} classes, "
            f"train {counts['train']} / val {counts['val']} / test {counts['test']} images, device {ctx.device}"
            + (f", {ctx.world_size} processes" if ctx.distributed else ""))
        trainer = Trainer(resolved, data, out, ctx, rows, classes, log, _progress(console, quiet, ctx.is_main), masks)
        with trainer.progress:
            trainer.load_teacher_targets()
            trainer.tune_symptom_map()
            built = trainer.train_stages()
            trainer.fit_off_leaf_classes(built["anchornet"], built["patches"])
        pipeline = cascade_of(trainer, built["anchornet"], built["patches"], baseline=built.get("baseline"))
        model_path = out / "model.pt"
        if ctx.is_main:
            scored = trainer.score_val(pipeline)
            trainer.save_val_outputs(scored)
            calibration = trainer.calibrate(pipeline, scored)
            trainer.write_model(built, pipeline, calibration)
            trainer.write_metrics()
            log(f"[green]wrote[/green] {model_path} (thresholds {calibration.thresholds}, {calibration.how})")
        barrier(ctx)
        return model_path
    finally:
        shutdown(ctx)
