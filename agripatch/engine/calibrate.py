"""Fit what makes a model right by default on photos it never saw: exit temperatures, exit thresholds and the
refusal thresholds, all from one set of validation outputs.

Training ends here (`train` scores its validation split, then calls :func:`fit_calibration`), and
`agripatch calibrate MODEL --data ROOT` does the same for a finished model file with this version's rules,
without retraining: the networks and the refusal rule's class means are kept, everything fitted on the
validation photos is fitted again.

Order matters: temperatures first (one per exit, :mod:`~agripatch.pipeline.calibration`), then the refusal
thresholds on the tempered last exit, then the exit thresholds, raised to the ``unsure`` confidence
(:func:`~agripatch.pipeline.exits.floor_thresholds`) so that ``unsure`` is decided on one quantity whatever
exits a user later picks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from agripatch.data.photos import photos_orientation
from agripatch.data.splits import load_splits, samples_for
from agripatch.engine.scoring import fit_off_leaf_classes, median_exposure, score_photos, split_dataset
from agripatch.engine.reports import save_stage_arrays
from agripatch.errors import AgripatchError, DatasetError
from agripatch.io.torchfile import load_object, save_object
from agripatch.pipeline.bundle import load_model_file, shipped_symptom_map_spec
from agripatch.pipeline.calibration import fit_temperatures, temper_stages
from agripatch.pipeline.cascade import FullImage, PatchPipeline
from agripatch.pipeline.config import DEFAULT_TARGET_CONFIDENCE
from agripatch.pipeline.exits import (
    ExitPolicy,
    ExitPolicyError,
    ExitOutputs,
    choose_thresholds,
    expand_thresholds,
)
from agripatch.pipeline.refusal import Refusal, trained_turns, with_thresholds
from agripatch.recipes import RefusalConfig

__all__ = ["Calibration", "fit_calibration", "run_calibration"]


@dataclass
class Calibration:
    """What :func:`fit_calibration` fitted, ready for the model file."""

    temperatures: list[float] | None
    thresholds: list[float]
    how: str
    refusal: Refusal | None
    val_accuracy: float | None = None
    val_mean_macs: float | None = None

    def metrics(self) -> dict[str, Any]:
        """The model file's ``metrics["calibration"]`` entry."""
        return {"thresholds": self.thresholds, "how": self.how, "temperatures": self.temperatures,
                "val_accuracy": self.val_accuracy, "val_mean_macs": self.val_mean_macs}


def fit_calibration(outputs: ExitOutputs | None, labels: np.ndarray | None, policy: ExitPolicy, n_exits: int,
                    refusal_model: Refusal | None, refusal: RefusalConfig,
                    fallback: list[float], ceiling_macs: float | None = None,
                    off_leaf: Sequence[int] = ()) -> Calibration:
    """Temperatures, refusal thresholds and exit thresholds from untempered validation ``outputs``.

    ``refusal_model`` holds the class means (None: no refusal rule); ``fallback`` are the thresholds used when
    there are no validation photos and the policy needs some; ``ceiling_macs`` (the full-image exit's model, None
    without one) caps what a target confidence may spend a photo (:func:`~agripatch.pipeline.exits.choose_thresholds`);
    ``off_leaf`` are the cascade's off-leaf classes (the refusal's recorded validation rates read them).
    """
    if outputs is None or len(outputs.probs) == 0:
        given = policy.thresholds if policy.kind == "thresholds" else (
            policy.target_confidence if policy.kind == "target" else fallback)
        return Calibration(None, expand_thresholds(given, n_exits), "default (no validation split)", None)
    temperatures = fit_temperatures(outputs.probs, labels)
    tempered = ExitOutputs(temper_stages(outputs.probs, temperatures).astype(np.float32), outputs.exit_macs,
                            outputs.features, outputs.plant_share)
    fitted = None
    has_features = tempered.features is not None and tempered.features.shape[1] > 0
    if refusal_model is not None and refusal.enabled and has_features:
        last = tempered.probs[:, -1]
        fitted = with_thresholds(refusal_model, tempered.features, last.max(axis=1),
                                 val_correct=last.argmax(axis=1) == labels, val_plant_shares=tempered.plant_share,
                                 val_labels=last.argmax(axis=1), off_leaf=off_leaf,
                                 distance_quantile=refusal.distance_quantile,
                                 confidence_quantile=refusal.confidence_quantile,
                                 min_plant_share=refusal.min_plant_share)
    floor = fitted.confidence_threshold if fitted is not None else None
    choice = choose_thresholds(policy, n_exits, tempered, labels, floor=floor, ceiling_macs=ceiling_macs)
    how = "recipe" if policy.kind == "thresholds" else f"{choice.how} on val"
    return Calibration(temperatures, choice.thresholds, how, fitted, choice.accuracy, choice.mean_macs)


def _stored_recipe(text: str | None) -> dict[str, Any] | None:
    """A model file's recipe as plain data (None when it has none or it is not a YAML mapping), read once for
    :func:`_recipe_cascade` and the refusal's turns."""
    import yaml

    try:
        recipe = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        return None
    return recipe if isinstance(recipe, dict) else None


def _recipe_cascade(recipe: dict[str, Any] | None):
    """The cascade section of a model file's recipe (None when it has none or an older schema rejects it)."""
    from agripatch.recipes import recipe_from_dict

    try:
        return recipe_from_dict(recipe).cascade if recipe else None
    except AgripatchError:
        return None


def _with_full_image_exit(bundle, on: bool, model: Path) -> PatchPipeline:
    """The bundle's cascade with the full-image exit turned on (reading photos with the file's baseline) or off."""
    if on and bundle.baseline is None:
        raise AgripatchError(f"{model} holds no full-image baseline model, which the full-image exit needs: "
                             "retrain with stages.baseline.enabled=true")
    full_image = FullImage.of(bundle.baseline, bundle.baseline_spec) if on else None
    return bundle.pipeline.with_full_image(full_image).eval()


def _off_leaf_classes(bundle, data: Path, log: Callable[[str], None]) -> list[int]:
    """The model's off-leaf classes refitted on ``data``'s training photos as training fits them (a model file
    trained before the rule gets it); kept as stored when the cascade ranks without a prior or ``data`` has no
    training split."""
    config = bundle.pipeline.config
    if config.cell_prior == "none":
        return list(config.off_leaf_classes)
    try:
        train = split_dataset(bundle, data, "train")
    except DatasetError:
        return list(config.off_leaf_classes)
    return fit_off_leaf_classes(bundle.pipeline, train, bundle.classes, log=log)


def _view_exposure(bundle, data: Path) -> float:
    """The training photos' median glance exposure, as training meters it (:func:`median_exposure`); 0 (the
    exposure view off) when ``data`` has no training split."""
    try:
        train = split_dataset(bundle, data, "train", glance_only=True)
    except DatasetError:
        return 0.0
    return median_exposure(train)


def _photo_orientation(bundle, data: Path, log: Callable[[str], None]) -> str | None:
    """Which way the model reads photos: as stored, or (a model file trained before the rule) fitted on ``data``'s
    training photos as training fits it (:func:`~agripatch.data.photos.photos_orientation`)."""
    stored = bundle.pipeline.config.photo_orientation
    if stored is not None:
        return stored
    train = [path for path, _ in samples_for(load_splits(data), "train", bundle.classes)]
    if not train:
        return None
    way, lying, read = photos_orientation(data, train)
    if way != "any":
        log(f"photos are read {way}: {lying} of {read} training photos lie that way, so the others are turned first")
    return way


def run_calibration(model: Path, data: Path, *, split: str = "val", out: Path | None = None,
                    policy: ExitPolicy | None = None, full_image_exit: bool | None = None,
                    symptom_prior: bool = False, map_side: int | None = None,
                    log: Callable[[str], None] = print) -> Calibration:
    """Refit a model file's temperatures, exit thresholds and refusal thresholds on ``split`` of ``data`` with
    this version's rules (default exit policy: the model's recipe's, never spending more than the full-image exit's
    model a photo on ``split``; a given ``policy`` is applied as it is), writing ``out`` (default: in place,
    atomically; the validation outputs go to ``val_outputs.npz`` beside it). ``full_image_exit`` turns the
    full-image exit on or off (on needs the file's baseline model). ``symptom_prior`` makes the cascade rank its
    cells by the symptom map read at ``map_side`` (the package's map, stored in the file, when it holds none): patches
    on lesions of a crop it was not trained with the map for, without retraining (benchmarks/README.md, "Patches on
    symptoms without masks"). Example::

        run_calibration(Path("runs/ibean/model.pt"), Path("data/ibean"))
    """
    bundle = load_model_file(model)
    obj = load_object(model)
    if full_image_exit is not None and full_image_exit != bundle.pipeline.config.full_image_exit:
        bundle.pipeline = _with_full_image_exit(bundle, full_image_exit, model)
    if map_side is not None and not symptom_prior:
        raise AgripatchError("--map-side sets the side the symptom prior reads the map at: add --symptom-prior")
    if symptom_prior:
        bundle.pipeline = bundle.pipeline.with_symptom_prior(map_side)
        if obj.get("symptom_map") is None:
            obj["symptom_map"] = shipped_symptom_map_spec(bundle.pipeline.config).to_dict()
    config = bundle.pipeline.config.model_copy(update={"temperatures": None,
                                                       "off_leaf_classes": _off_leaf_classes(bundle, Path(data), log),
                                                       "photo_orientation": _photo_orientation(bundle, Path(data), log)})
    bundle.pipeline.config = config  # score untempered, as training does
    bundle.pipeline.refusal = None  # and fit the refusal on the photos as they are, as training does
    recipe = _stored_recipe(bundle.meta.get("recipe"))
    if bundle.refusal is not None and not bundle.refusal.view_turns:  # a file from before the turned-glance rule
        bundle.refusal.view_turns = trained_turns(((recipe or {}).get("augment") or {}).get("train"))
    if bundle.refusal is not None and not bundle.refusal.view_exposure:  # a file from before the exposure view
        bundle.refusal.view_exposure = _view_exposure(bundle, Path(data))
        log(f"photos the refusal would turn away as not_a_leaf are also judged re-exposed to "
            f"{bundle.refusal.view_exposure:.3f}, the training photos' median exposure (linear light)")
    ceiling = bundle.pipeline.full_image_macs() if policy is None else None  # a user's own target is not capped
    if policy is None:
        c = _recipe_cascade(recipe) or config
        policy = ExitPolicy(thresholds=c.thresholds, budget_gmacs=c.budget_gmacs, target_confidence=c.target_confidence)
        if policy.kind == "thresholds" and len(c.thresholds) != config.n_exits:  # the recipe's fixed ones no longer fit
            policy = ExitPolicy(target_confidence=config.target_confidence or DEFAULT_TARGET_CONFIDENCE)
    dataset = split_dataset(bundle, Path(data), split)
    log(f"scoring {len(dataset)} {split} photos of {data}")
    scored = score_photos(bundle.pipeline, dataset)
    try:
        result = fit_calibration(scored.outputs, scored.labels, policy, config.n_exits, bundle.refusal,
                                 RefusalConfig(), config.exit_thresholds(), ceiling, config.off_leaf_classes)
    except ExitPolicyError as error:
        raise AgripatchError(f"calibrate {model}: {error}") from None
    obj["cascade"] = {**obj["cascade"], "thresholds": result.thresholds, "temperatures": result.temperatures,
                      "full_image_exit": config.full_image_exit, "cell_prior": config.cell_prior,
                      "off_leaf_classes": config.off_leaf_classes, "photo_orientation": config.photo_orientation,
                      "severity": config.severity.model_dump() if config.severity is not None else None}
    if result.refusal is not None:
        obj["refusal"] = result.refusal.to_stored()
    obj["metrics"] = {**obj.get("metrics", {}), "calibration": result.metrics(),
                      "refusal": result.refusal.fitted if result.refusal is not None else None}
    target = save_object(obj, out or model)
    save_stage_arrays(target.parent / "val_outputs.npz", scored.outputs, scored.labels)  # what it was fitted on
    log(f"wrote {target}: thresholds {result.thresholds} ({result.how}), temperatures "
        f"{[round(t, 3) for t in result.temperatures or []]}")
    return result
