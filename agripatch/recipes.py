"""Training recipes: a typed schema, YAML loading, `key=value` overrides and name lookup.

A recipe is data (``recipes/<name>.yaml``) that says which models to build, how to train each stage,
how to augment (albumentations' own ``A.to_dict`` format) and how the cascade exits. Unknown keys and
wrong types are errors that name the key and the file, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from agripatch.errors import RecipeError
from agripatch.io.atomic import atomic_write_text
from agripatch.pipeline.config import CascadeConfig
from agripatch.pipeline.refusal import DISTANCE_QUANTILE, MIN_PLANT_SHARE
from agripatch.schema import StrictModel as _Strict


class OptimizerConfig(_Strict):
    """Arguments for timm's `create_optimizer_v2`."""

    opt: str = "adamw"
    lr: float = Field(5e-4, gt=0)
    weight_decay: float = Field(0.05, ge=0)
    momentum: float = Field(0.9, ge=0, le=1)


class SchedulerConfig(_Strict):
    """Arguments for timm's `create_scheduler_v2` (epoch-based)."""

    sched: Literal["cosine", "step", "multistep", "plateau", "poly", "none"] = "cosine"
    warmup_epochs: int = Field(1, ge=0)
    warmup_lr: float = Field(1e-5, ge=0)
    min_lr: float = Field(1e-6, ge=0)
    decay_milestones: list[int] = Field(default_factory=list)
    decay_rate: float = Field(0.1, gt=0)


class StageConfig(_Strict):
    """How one training stage runs: epochs, batch, optimiser, schedule, regularisation."""

    enabled: bool = True
    epochs: int = Field(5, ge=0)
    batch_size: int = Field(32, ge=1)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    ema_decay: float | None = Field(None, gt=0, lt=1)
    mixup_alpha: float = Field(0.0, ge=0)
    cutmix_alpha: float = Field(0.0, ge=0)
    crop_scale: tuple[float, float] = (0.35, 1.0)
    clip_grad: float | None = Field(None, gt=0)
    #: which epoch's weights the stage hands on: ``best`` on the validation photos, or ``last``. The shipped recipes
    #: keep the patch stage's last epoch: the best of 10 epochs on a few dozen validation photos is the luckiest
    #: one on those photos, which cost accuracy on new photos and made the confidence calibrated on the same photos
    #: too sharp (benchmarks/README.md, "Keeping the last epoch"); the validation photos then only calibrate.
    keep: Literal["best", "last"] = "best"

    @field_validator("crop_scale")
    @classmethod
    def _ordered_scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not 0 < low <= high <= 1:
            raise ValueError("crop_scale must be (low, high) with 0 < low <= high <= 1")
        return value


class ModelConfig(_Strict):
    """A registered architecture name and where its initial weights come from."""

    arch: str
    pretrained: bool | str = True


class ModelsConfig(_Strict):
    """The AnchorNet that picks boxes and the downstream timm classifier that reads them."""

    anchornet: ModelConfig = Field(default_factory=lambda: ModelConfig(arch="anchornet_mbv2_s8"))
    classifier: ModelConfig = Field(default_factory=lambda: ModelConfig(arch="mobilenetv2_100"))
    baseline: ModelConfig | None = None


class DataConfig(_Strict):
    """Split fractions, loader workers and how class imbalance is handled."""

    val_fraction: float = Field(0.1, ge=0, lt=1)
    test_fraction: float = Field(0.1, ge=0, lt=1)
    split_seed: int = 0
    workers: int = Field(2, ge=0)
    #: Decoded photos kept in memory across epochs (MB) when ``workers`` is 0: later epochs skip the JPEG decode.
    cache_mb: int = Field(2048, ge=0)
    class_balance: Literal["none", "sampler", "loss"] = "none"
    baseline_size: int = Field(224, ge=32)


class LesionsConfig(_Strict):
    """Lesion masks that teach AnchorNet where the disease is (optional; :mod:`agripatch.engine.lesion_focus`).

    ``masks`` is a folder with one grayscale image per annotated training photo, found as
    ``<masks>/<class>/<name>.png`` or ``<masks>/<name>.png`` (photos without one train on their label alone);
    pixels ``>= min_value`` are lesion. ``weight`` scales the loss that puts the true class's evidence on the
    lesion cells. With ``cascade.severity`` the shipped symptom map is also fine-tuned on them for ``map_epochs``
    epochs (:mod:`agripatch.engine.symptom_tuning`). Prediction needs no masks.
    """

    masks: str | None = None
    min_value: int = Field(1, ge=1, le=255)
    weight: float = Field(1.0, ge=0)
    # with cascade.severity: epochs fine-tuning the shipped symptom map on the masks first (0: keep it as shipped;
    # agripatch.engine.symptom_tuning), at this learning rate
    map_epochs: int = Field(5, ge=0)
    map_lr: float = Field(1e-4, gt=0)


class DistillConfig(_Strict):
    """A larger full-image model that the cheap stages learn from (optional; :mod:`agripatch.engine.distill`).

    ``teacher`` is another run's ``model.pt`` whose full-image baseline (e.g. ``mobilenetv2_100`` at 512 px)
    gives soft targets for every training photo; each stage named in ``stages`` adds ``weight`` times
    T^2 * KL(teacher || student) at ``temperature`` T to its loss. Prediction is unchanged and needs no teacher.
    """

    teacher: str | None = None
    weight: float = Field(1.0, ge=0)
    temperature: float = Field(2.0, gt=0)
    stages: list[Literal["anchornet", "glance", "patches"]] = Field(default_factory=lambda: ["anchornet", "patches"])


class RuntimeConfig(_Strict):
    """Device-side speed switches; each is ignored where the device cannot use it."""

    amp: bool = True
    #: The CUDA autocast dtype: ``auto`` (bf16 where the GPU has it, else fp16 with loss scaling) or forced.
    amp_dtype: Literal["auto", "bfloat16", "float16"] = "auto"
    channels_last: bool = True
    compile: bool = False


class RefusalConfig(_Strict):
    """How the model learns to refuse photos it should not answer (see agripatch.pipeline.refusal).

    ``distance_quantile`` of the validation photos' feature distances (robustly estimated: a log-normal fitted
    by median and MAD; the default sits 4 robust standard deviations above their median, so photos from other
    sessions than the validation ones still pass) is the ``not_a_leaf`` threshold. The ``unsure`` one refuses photos
    whose calibrated last-exit confidence is under 1/2, lowered so that at most ``confidence_quantile`` of new
    photos are refused (a conformal count on the validation photos; under 99 of them, none).
    ``min_plant_share``: a photo beyond the nearer 0.99 quantile with less plant tissue than this is
    ``not_a_leaf`` too (set 0 for a crop whose leaves are not green).
    """

    enabled: bool = True
    distance_quantile: float = Field(DISTANCE_QUANTILE, gt=0.5, lt=1)
    confidence_quantile: float = Field(0.01, ge=0, lt=0.5)
    ridge: float = Field(0.5, ge=0)
    min_plant_share: float = Field(MIN_PLANT_SHARE, ge=0, le=1)


class StagesConfig(_Strict):
    """The training stages in the order they run."""

    anchornet: StageConfig = Field(default_factory=StageConfig)
    glance: StageConfig = Field(default_factory=lambda: StageConfig(enabled=False))
    patches: StageConfig = Field(default_factory=StageConfig)
    baseline: StageConfig = Field(default_factory=lambda: StageConfig(enabled=False))


class Recipe(_Strict):
    """A complete, validated training recipe."""

    name: str
    description: str = ""
    seed: int = 0
    models: ModelsConfig = Field(default_factory=ModelsConfig)
    cascade: CascadeConfig = Field(default_factory=CascadeConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    lesions: LesionsConfig = Field(default_factory=LesionsConfig)
    distill: DistillConfig = Field(default_factory=DistillConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    stages: StagesConfig = Field(default_factory=StagesConfig)
    refusal: RefusalConfig = Field(default_factory=RefusalConfig)
    augment: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_exit_rule(self) -> Recipe:
        if self.cascade.thresholds is not None and self.cascade.budget_gmacs is not None:
            raise ValueError("cascade: give either thresholds or budget_gmacs, not both")
        if self.cascade.full_image_exit and not self.stages.baseline.enabled:
            raise ValueError("cascade.full_image_exit reads photos with the run's full-image baseline: set "
                             "stages.baseline.enabled=true too")
        anchornet = self.stages.anchornet
        if self.lesions.masks and (anchornet.mixup_alpha > 0 or anchornet.cutmix_alpha > 0):
            raise ValueError("lesions.masks cannot be combined with stages.anchornet mixup/cutmix (a mixed photo has "
                             "no one lesion mask): set stages.anchornet.mixup_alpha=0 and cutmix_alpha=0")
        if self.distill.teacher and self.distill.weight > 0:
            mixed = [name for name in self.distill.stages
                     if getattr(self.stages, name).mixup_alpha > 0 or getattr(self.stages, name).cutmix_alpha > 0]
            if mixed:
                raise ValueError(f"distill cannot be combined with mixup/cutmix in stages {mixed} (a mixed photo has no "
                                 "one teacher target): set their mixup_alpha=0 and cutmix_alpha=0, or drop them from "
                                 "distill.stages")
        return self

    @field_validator("augment")
    @classmethod
    def _augment_is_albumentations(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key, spec in value.items():
            if not isinstance(spec, dict) or "transform" not in spec:
                raise ValueError(
                    f"augment.{key} must be an albumentations A.to_dict() mapping with a 'transform' key"
                )
        return value

    def to_yaml(self) -> str:
        """The resolved recipe as YAML, every default spelled out (saved with each run)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def recipes_dir() -> Path:
    """The folder of shipped recipes, inside the package (``agripatch/resources/recipes``)."""
    from agripatch.resources import resource_dir

    return resource_dir("recipes")


def list_recipes() -> list[str]:
    """Names of the shipped recipes, sorted."""
    return sorted(path.stem for path in recipes_dir().glob("*.yaml"))


def _format_validation_error(error: ValidationError, source: str) -> str:
    lines = [f"invalid recipe {source}:"]
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "<root>"
        if item["type"] == "extra_forbidden":
            lines.append(f"  unknown key '{key}'")
        else:
            lines.append(f"  key '{key}': {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def recipe_from_dict(data: dict[str, Any], source: str = "<dict>") -> Recipe:
    """Validate a mapping as a Recipe, raising RecipeError that names every bad key and the source."""
    if not isinstance(data, dict):
        raise RecipeError(f"invalid recipe {source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as error:
        raise RecipeError(_format_validation_error(error, source)) from None


def _resolve_path(name_or_path: str | Path) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} or candidate.exists():
        if not candidate.is_file():
            raise RecipeError(f"recipe file {str(candidate)!r} does not exist")
        return candidate
    shipped = recipes_dir() / f"{name_or_path}.yaml"
    if not shipped.is_file():
        known = ", ".join(list_recipes()) or "none"
        raise RecipeError(f"unknown recipe {str(name_or_path)!r}; shipped recipes: {known}; or pass a .yaml path")
    return shipped


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ['stages.anchornet.epochs=2', ...] into a nested mapping; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"override {item!r} is not of the form key=value (e.g. stages.anchornet.epochs=2)")
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise RecipeError(f"override {item!r} conflicts with another override of {part!r}")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return nested


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_recipe(name_or_path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load a shipped recipe by name or a YAML file by path, apply `key=value` overrides, validate."""
    path = _resolve_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise RecipeError(f"recipe {str(path)!r} is not valid YAML: {error}") from None
    if overrides:
        if not isinstance(data, dict):
            data = {}
        data = _merge(data, parse_overrides(overrides))
    return recipe_from_dict(data, source=repr(str(path)))


def save_recipe(recipe: Recipe, path: str | Path) -> Path:
    """Write the resolved recipe as YAML atomically."""
    return atomic_write_text(path, recipe.to_yaml())
