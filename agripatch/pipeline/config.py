"""The one cascade config: how the cascade looks, which cells it reads and when it stops.

The same object is a recipe's ``cascade:`` section, the argument of
:class:`~agripatch.pipeline.cascade.PatchPipeline`, and the ``cascade`` entry of ``model.pt`` (dumped with
:meth:`CascadeConfig.model_dump`, read back with :meth:`CascadeConfig.from_stored`, validated both ways).
Every option a user can set at predict time can therefore also be set in a recipe.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from agripatch.pipeline.severity import SeverityConfig
from agripatch.schema import StrictModel

__all__ = ["DEFAULT_TARGET_CONFIDENCE", "DEFAULT_THRESHOLD", "PREDICT_BATCH_SIZE", "CascadeConfig"]

#: Exit threshold of a cascade nobody calibrated (a hand-built pipeline, a test).
DEFAULT_THRESHOLD = 0.9

#: The calibrated confidence at which an exit stops by default (chosen on validation photos of the protocol
#: datasets; benchmarks/README.md "Exit rule" gives the numbers).
DEFAULT_TARGET_CONFIDENCE = 0.97

#: Photos per cascade call when predicting (`predict folder`, the Python API). Each later exit reads only the photos
#: still running, so at 16 photos a call its last exits classified 3 or 4 patches at a time; at 64 they fill the
#: networks' batches (benchmarks/README.md, "Where the cascade's time goes": the cascade's model time +8-12% on ONNX
#: Runtime and +24-25% on PyTorch, iBean). The decoded photos of one call are held in memory: lower it for huge photos.
PREDICT_BATCH_SIZE = 64


class CascadeConfig(StrictModel):
    """Glance + patches cascade settings.

    Attributes:
        k: patches per photo (exits 1..k after the glance).
        glance: ``anchornet`` (AnchorNet's own logits are exit 0's prediction; its CAM comes for free)
            or ``classifier`` (the patch classifier on the glance image; AnchorNet then runs only for the
            photos that go on).
        glance_size: side of the square glance input (the whole photo, resized, aspect not kept).
        patch_size: side of the square patches the classifier reads.
        iou_threshold: suppression threshold between the fixed-size cell boxes.
        score_mode: which class's map ranks the cells at inference: ``predicted`` (AnchorNet's predicted
            class, the paper's choice) or ``max`` (the maximum over classes).
        aggregate: ``mean_logits`` (softmax of the mean of the exits' logits) or ``mean_probs``.
        cell_prior: ``leaf`` ranks cells holding less than ``leaf_min_share`` plant pixels after every leafy
            cell (:mod:`~agripatch.pipeline.priors`), so patches land on the leaf, not on soil, hands or
            colour cards; ``none`` ranks by the class map alone.
        leaf_min_share: the plant-pixel share a cell needs to count as leaf under ``cell_prior="leaf"``.
            ``cell_prior="symptom"`` ranks first the cells whose mean symptom probability (the symptom map of
            ``severity``) is at least ``symptom_min_share`` of the photo's most symptomatic leafy cell's (cells
            with ``leaf_min_share`` plant pixels; the map also fires on colour cards), in the class map's order,
            so patches land on lesions without any mask of the user's crop.
        symptom_min_share: under ``cell_prior="symptom"``, the share of the photo's highest cell symptom
            probability a cell needs to be ranked first.
        off_leaf_classes: classes whose evidence lies off the green leaf (fruit, flowers), fitted by training
            (:func:`~agripatch.pipeline.cells.off_leaf_classes`): a photo whose cells are ranked for one of them
            counts every cell as plant under either prior, so its patches stay on what its class map points at.
        train_selection: which class's map ranks the cells while the patch classifier trains: ``random``
            (a random class per photo, so the classifier also learns what the most rust-like region of a
            healthy leaf is: +1.7 points on iBean, +2.9 on PlantVillage-mini), ``label`` (the true class)
            or ``predicted`` (AnchorNet's guess, exactly the inference rule).
        thresholds: k + 1 exit thresholds on the top probability, one per exit (the last is ignored:
            exit k always stops). In a recipe they fix the exits; ``None`` lets training calibrate
            them. In a model file they are the calibrated ones.
        budget_gmacs: calibrate the exits to this mean cost per photo instead (recipe only).
        target_confidence: with neither thresholds nor a budget, training fits one temperature per exit on
            the validation photos and every exit stops at this calibrated confidence, lowered where it would
            spend more a photo than the full-image exit's model on those photos (recipe only; ``None``:
            the older rule, the cheapest threshold within half a point of the best validation accuracy).
        temperatures: one temperature per exit that makes its confidence a probability
            (:mod:`~agripatch.pipeline.calibration`); fitted by training, ``None`` leaves them at 1.
        full_image_exit: one more exit after the last patch: photos the patches leave below that exit's
            threshold are read whole by the full-image model (the run's baseline, at its own input size), whose
            answer and the patches' weigh half each, so what the patches miss and the whole photo shows is not
            lost; paid only by those photos. Needs the baseline stage; exit k then no longer always stops, exit k + 1 does.
        findings_threshold: list as ``findings`` every class (but ``findings_exclude``) whose probability at the
            exit taken reaches it, so a leaf showing two stresses names both; ``None``: no findings.
        findings_exclude: classes never listed as findings (a healthy class is no finding).
        severity: measure every photo's severity with a symptom map (:mod:`~agripatch.pipeline.severity`: which
            map, its input side, the classes' cut-points); ``None``: no severity. It never changes the diagnosis.
        photo_orientation: which way the photos are read (:mod:`agripatch.io.orientation`): ``landscape`` or
            ``portrait`` turns every photo lying the other way a quarter turn clockwise before the cascade reads it;
            ``any`` reads photos as they are. ``None`` in a recipe lets training fit it (the way at least 95% of
            its training photos lie, else ``any``); a model file from before reads photos as they are. The training
            stages' loaders read their photos as they are (at most 5% lie the other way); validation scoring, the
            refusal's fit, ``evaluate`` and ``predict`` read them turned.
    """

    k: int = Field(3, ge=1)
    glance: Literal["anchornet", "classifier"] = "anchornet"
    glance_size: int = Field(160, ge=16)
    patch_size: int = Field(128, ge=8)
    iou_threshold: float = Field(0.25, ge=0, le=1)
    score_mode: Literal["predicted", "max"] = "predicted"
    aggregate: Literal["mean_logits", "mean_probs"] = "mean_logits"
    cell_prior: Literal["none", "leaf", "symptom"] = "none"
    leaf_min_share: float = Field(0.3, ge=0, le=1)
    off_leaf_classes: list[int] = Field(default_factory=list)
    symptom_min_share: float = Field(0.5, ge=0, le=1)
    train_selection: Literal["label", "predicted", "random"] = "random"
    thresholds: list[float] | None = None
    budget_gmacs: float | None = Field(None, gt=0)
    target_confidence: float | None = Field(DEFAULT_TARGET_CONFIDENCE, gt=0, le=1)
    temperatures: list[float] | None = None
    full_image_exit: bool = False
    findings_threshold: float | None = Field(None, gt=0, le=1)
    findings_exclude: list[str] = Field(default_factory=lambda: ["healthy"])
    severity: SeverityConfig | None = None
    photo_orientation: Literal["any", "landscape", "portrait"] | None = None

    @field_validator("thresholds")
    @classmethod
    def _no_nan(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and any(math.isnan(t) for t in value):
            raise ValueError("thresholds must not be NaN")
        return value

    @field_validator("temperatures")
    @classmethod
    def _positive(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and not all(math.isfinite(t) and t > 0 for t in value):
            raise ValueError("temperatures must be finite and positive")
        return value

    @model_validator(mode="after")
    def _one_threshold_per_exit(self) -> CascadeConfig:
        if self.cell_prior == "symptom" and self.severity is None:
            raise ValueError("cell_prior 'symptom' reads the symptom map: set cascade.severity too (e.g. severity: {})")
        what = "glance + k patches" + (" + full image" if self.full_image_exit else "")
        if self.thresholds is not None and len(self.thresholds) != self.n_exits:
            raise ValueError(f"need {self.n_exits} thresholds ({what}), got {len(self.thresholds)}")
        if self.temperatures is not None and len(self.temperatures) != self.n_exits:
            raise ValueError(f"need {self.n_exits} temperatures ({what}), got {len(self.temperatures)}")
        return self

    @property
    def n_exits(self) -> int:
        """Exits of the cascade: the glance, k patches and, with ``full_image_exit``, the whole photo."""
        return self.k + 1 + int(self.full_image_exit)

    def temperature(self, exit_index: int) -> float:
        """The temperature of exit ``exit_index`` (0 = the glance): the fitted one, else 1."""
        return 1.0 if self.temperatures is None else float(self.temperatures[exit_index])

    def exit_thresholds(self) -> list[float]:
        """The thresholds predictions use: the configured ones, else :data:`DEFAULT_THRESHOLD` at every exit."""
        return list(self.thresholds) if self.thresholds is not None else [DEFAULT_THRESHOLD] * self.n_exits

    def stored(self) -> dict[str, Any]:
        """Plain data for the model file (infinite thresholds stay floats: torch files hold them)."""
        return self.model_dump()

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> CascadeConfig:
        """Read a model file's ``cascade`` entry back, with validation (older files lack newer keys)."""
        return cls.model_validate(dict(data))
