"""Refuse what the model should not answer: ``not_a_leaf`` and ``unsure``, fitted on training data only.

A photo gets ``not_a_leaf`` when AnchorNet's pooled glance features lie far from every trained class: the
smallest Mahalanobis distance to the class means (one shared, shrunk covariance) is above a threshold; or
when they lie only somewhat far (above a nearer threshold) and the photo holds almost no plant tissue (the
leaf prior's plant-pixel share below ``min_plant_share``): soil, hands, skin and objects sit there, leaves of
the trained crop photographed in other sessions do not. Plant pixels are green ones, so a photo answered with a
class whose evidence lies off the leaf (fruit, flowers: the cascade's ``off_leaf_classes``) is not held to that
share; the cell priors exempt the same photos (:func:`~agripatch.pipeline.cells.plant_shares_for`). On
iBean that score separated every dog, cat, rocket, astronaut, coffee cup, texture, synthetic soil-and-hand
scene and coffee leaf from bean photos (AUROC 1.00), where the classifier's own confidence could not
(AUROC 0.61). A photo that passes gets ``unsure`` when the cascade's final confidence is below a second
threshold (under 1/2, more likely wrong than right, and lowered so that at most ~1% of new photos are
refused): a leaf, but not one the model can tell.

The class means and covariance come from the training split; both thresholds come from the validation
split (photos the means never saw), so they transfer to new photos. The distance threshold is a quantile of
a log-normal fitted to the validation distances by median and MAD, not their empirical quantile: with ~100
validation photos the empirical 99th percentile is the largest one or two distances, and one odd photo there
(a mislabelled or blurred one) had raised the threshold until 20-75% of non-leaf photos passed. Shrinking the covariance
toward its mean variance (``ridge``) keeps training and validation distances alike (without it the
validation photos sat twice as far as the training ones). Pure numpy: the ONNX runtime uses it as is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from agripatch.pipeline.cells import plant_shares_for

__all__ = ["DISTANCE_QUANTILE", "MIN_PLANT_SHARE", "NEAR_QUANTILE", "NOT_A_LEAF", "UNSURE", "UNSURE_CONFIDENCE",
           "VIEW_MIN_PLANT_SHARE", "Refusal", "distance_threshold", "feature_model", "fit_refusal", "trained_turns",
           "unsure_threshold", "with_thresholds"]

NOT_A_LEAF = "not_a_leaf"
UNSURE = "unsure"

#: The default ``not_a_leaf`` quantile of the validation photos' log-normal distance fit: 3.5 robust standard
#: deviations above their median. The old 0.99 (2.3 deviations) refused 1.7-3.8% of in-session iBean test
#: photos and 10.5% of a field set from other sessions (benchmarks/README.md "Refusal").
DISTANCE_QUANTILE = 0.99977

#: Photos beyond this quantile (the old threshold) with less plant tissue than ``min_plant_share`` are
#: ``not_a_leaf`` too: what the farther threshold lets through of soil, hands and objects.
NEAR_QUANTILE = 0.99

#: The highest ``unsure`` cut-off: a calibrated confidence under it means more likely wrong than right.
UNSURE_CONFIDENCE = 0.5

#: The plant-pixel share from which a photo the rule would refuse is judged on the nearest of its glance's views
#: (:meth:`Refusal.needs_views`): a leaf photo taken at another angle or exposure, where soil, hands and objects
#: hold less.
VIEW_MIN_PLANT_SHARE = 0.3

#: Default plant-pixel share under which a somewhat distant photo is no leaf photo (leaf photos of iBean,
#: coffee and PlantVillage hold at least 0.09, 0.2 and 0.03; leafless crops and sample photos mostly 0).
MIN_PLANT_SHARE = 0.05


@dataclass
class Refusal:
    """The fitted refusal rule (stored in ``model.pt``).

    Attributes:
        class_means: [C, D] mean pooled glance feature of each class (training split).
        precision: [D, D] inverse of the shared, shrunk covariance.
        distance_threshold: a photo farther than this from every class mean is ``not_a_leaf``.
        confidence_threshold: an accepted photo less confident than this is ``unsure``.
        fitted: how it was fitted (photo counts, quantiles, validation refusal rates), for the record.
        near_threshold: a photo farther than this whose plant share is below ``min_plant_share`` is
            ``not_a_leaf`` (infinite in files from before this rule: off).
        min_plant_share: see ``near_threshold``.
        view_turns: quarter turns of the glance (1-3) the networks were trained to read alike (the recipe's
            ``RandomRotate90``, :func:`trained_turns`): a leafy photo (at least :data:`VIEW_MIN_PLANT_SHARE` plant
            pixels) it would refuse as it is is judged on the nearest of its turned glances
            (:meth:`~agripatch.pipeline.core.CascadeCore.nearest_views`); empty in files from before: off.
        view_exposure: the training photos' median glance exposure (:func:`~agripatch.io.exposure.exposure`, linear
            light): such a leafy photo is also judged on its glance re-exposed to it
            (:func:`~agripatch.io.exposure.exposed_like`), a leaf taken a stop too bright or too dark; 0 in files
            from before: off.
    """

    class_means: np.ndarray
    precision: np.ndarray
    distance_threshold: float
    confidence_threshold: float
    fitted: dict[str, Any] = field(default_factory=dict)
    near_threshold: float = float("inf")
    min_plant_share: float = 0.0
    view_turns: tuple[int, ...] = ()
    view_exposure: float = 0.0

    @property
    def view_count(self) -> int:
        """How many views of its glance a photo :meth:`needs_views` is judged on besides itself: the turns, then
        the re-exposed glance."""
        return len(self.view_turns) + (1 if self.view_exposure > 0 else 0)

    @property
    def view_names(self) -> list[str]:
        """What each view is, in :attr:`view_count`'s order (a record's ``refusal_view``): ``turn90`` .. ``turn270``
        (the glance turned anticlockwise), then ``exposure`` (re-exposed)."""
        return [f"turn{90 * int(k)}" for k in self.view_turns] + (["exposure"] if self.view_exposure > 0 else [])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Smallest squared Mahalanobis distance of each feature row [N, D] to the class means -> [N]."""
        features = np.asarray(features, dtype=np.float64).reshape(-1, self.class_means.shape[1])
        diffs = features[:, None, :] - self.class_means[None, :, :]  # [N, C, D]
        # a matrix product (BLAS) rather than einsum's loop: 4.4x faster per photo at D = 1280 on this project's CPU
        return ((diffs @ self.precision) * diffs).sum(axis=-1).min(axis=1)

    def not_a_leaf(self, distances: np.ndarray, plant_shares: np.ndarray | None, labels: np.ndarray | None = None,
                   off_leaf: Sequence[int] = ()) -> np.ndarray:
        """Per photo: far from every class, or somewhat far with almost no plant tissue (shares unknown: the
        distance alone decides). A photo whose answer (``labels`` [N]) is one of the ``off_leaf`` classes is not
        held to the plant share (:func:`~agripatch.pipeline.cells.plant_shares_for`)."""
        distances = np.asarray(distances, dtype=np.float64).reshape(-1)
        far = distances > self.distance_threshold
        if plant_shares is None:
            return far
        if len(off_leaf) and labels is None:
            raise ValueError("off-leaf classes need each photo's answer (labels) to know which photos they exempt")
        shares = np.asarray(plant_shares, dtype=np.float32).reshape(-1)
        if labels is not None:
            shares = plant_shares_for(shares, labels, list(off_leaf))
        return far | ((distances > self.near_threshold) & (shares < self.min_plant_share))

    def decide(self, features: np.ndarray, confidences: np.ndarray, plant_shares: np.ndarray | None = None,
               labels: np.ndarray | None = None, off_leaf: Sequence[int] = ()) -> list[str | None]:
        """Per photo: ``not_a_leaf``, ``unsure``, or None (answer with the predicted class ``labels``, which
        with ``off_leaf`` the bare rule reads: :meth:`not_a_leaf`)."""
        far = self.not_a_leaf(self.distances(features), plant_shares, labels, off_leaf)
        doubtful = np.asarray(confidences, dtype=np.float64).reshape(-1) < self.confidence_threshold
        return [NOT_A_LEAF if f else (UNSURE if d else None) for f, d in zip(far, doubtful)]

    def judge(self, features: np.ndarray | None, confidence: float, plant_share: float | None = None,
              label: int | None = None, off_leaf: Sequence[int] = (),
              distance: float | None = None) -> tuple[str | None, float | None]:
        """One photo: (``not_a_leaf`` / ``unsure`` / None, its distance). Without features (AnchorNet did not
        run for it) only the confidence rule applies; ``label`` and ``off_leaf`` as in :meth:`not_a_leaf`;
        ``distance``: the features' distance where the caller computed it already (the cascade's views)."""
        if features is None or np.asarray(features).size == 0:
            return (UNSURE if confidence < self.confidence_threshold else None), None
        distance = float(self.distances(np.asarray(features)[None])[0]) if distance is None else float(distance)
        if self.not_a_leaf(np.array([distance]), None if plant_share is None else np.array([plant_share]),
                           None if label is None else np.array([label]), off_leaf)[0]:
            return NOT_A_LEAF, distance
        return (UNSURE if confidence < self.confidence_threshold else None), distance

    def to_stored(self) -> dict[str, Any]:
        """Plain data for the model file (lists, so the file stays weights-only loadable)."""
        data = asdict(self)
        data["view_turns"] = [int(k) for k in self.view_turns]
        data["class_means"] = self.class_means.tolist()
        data["precision"] = self.precision.tolist()
        if not np.isfinite(self.near_threshold):
            data["near_threshold"] = "inf"  # strict JSON (an export's cascade.json) has no infinity
        return data

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Refusal:
        """Read the model file's entry back."""
        return cls(np.asarray(data["class_means"], dtype=np.float64), np.asarray(data["precision"], dtype=np.float64),
                   float(data["distance_threshold"]), float(data["confidence_threshold"]), dict(data.get("fitted", {})),
                   float(data.get("near_threshold", float("inf"))), float(data.get("min_plant_share", 0.0)),
                   tuple(int(k) for k in data.get("view_turns", ())), float(data.get("view_exposure", 0.0)))

    def needs_views(self, distances: np.ndarray, plant_shares: np.ndarray | None) -> np.ndarray:
        """[N] bool: the photos to judge on the nearest of their glance's views instead: leafy ones the rule would
        refuse as ``not_a_leaf`` as they are (the only ones a view can change); none without views or plant shares."""
        distances = np.asarray(distances, dtype=np.float64).reshape(-1)
        if not self.view_count or plant_shares is None:
            return np.zeros(len(distances), bool)
        shares = np.asarray(plant_shares, dtype=np.float64).reshape(-1)
        return self.not_a_leaf(distances, shares) & (shares >= VIEW_MIN_PLANT_SHARE)


def trained_turns(augment: dict[str, Any] | None) -> tuple[int, ...]:
    """The quarter turns (1, 2, 3) a recipe's training augmentation (``augment.train``, albumentations' dict)
    teaches the networks to read alike: all three with ``RandomRotate90``, else none."""
    transform = (augment or {}).get("transform") or {}
    names = {step.get("__class_fullname__") for step in transform.get("transforms", []) if isinstance(step, dict)}
    return (1, 2, 3) if "RandomRotate90" in names else ()


def unsure_threshold(confidences: np.ndarray, correct: np.ndarray | None, budget: float, *,
                     most: float = UNSURE_CONFIDENCE) -> float:
    """The calibrated confidence below which a photo is ``unsure``, from validation ``confidences``.

    At most ``most``: with calibrated confidence, a photo under 1/2 is more likely wrong than right, so refusing
    it raises accuracy in expectation; above that, refusing costs more right answers than it withholds wrong
    ones. Lowered until at most ``budget`` of *new* photos would be refused: refusing r of n validation photos
    refuses (r + 1) / (n + 1) of new ones in expectation (conformal count), so fewer than 1 / budget - 1
    validation photos refuse none. With ``correct`` (which validation photos the model got right), 0 when
    refusing the ones under the cut-off would lower the accuracy of the rest. The rule before this one chose
    the cut-off that most raised validation accuracy within the budget: a choice made on one or two photos,
    which on iBean withheld 1 wrong answer for every 8 right ones it lost (benchmarks/README.md "unsure").
    """
    confidences = np.asarray(confidences, dtype=np.float64).reshape(-1)
    allowed = int(np.floor(budget * (confidences.size + 1) + 1e-9)) - 1  # validation photos it may refuse
    if confidences.size == 0 or allowed < 0:
        return 0.0
    cut = float(most)
    if int((confidences < cut).sum()) > allowed:
        cut = float(np.sort(confidences)[allowed])  # strictly below the (allowed + 1)-th smallest
    if correct is not None:
        correct = np.asarray(correct, dtype=bool).reshape(-1)
        refused = confidences < cut
        if refused.any() and correct[~refused].mean() < correct.mean():
            return 0.0
    return cut


def distance_threshold(distances: np.ndarray, quantile: float) -> float:
    """The ``not_a_leaf`` distance threshold: the ``quantile`` of a log-normal fitted to in-distribution
    ``distances`` by their median and MAD, so that a few outlying validation photos cannot move it."""
    logs = np.log(np.maximum(np.asarray(distances, dtype=np.float64).reshape(-1), 1e-12))
    if logs.size == 0 or not 0 < quantile < 1:
        raise ValueError(f"need in-distribution distances and a quantile in (0, 1), got {logs.size} and {quantile}")
    centre = float(np.median(logs))
    scale = 1.4826 * float(np.median(np.abs(logs - centre)))  # MAD -> standard deviation of a normal
    return float(np.exp(centre + NormalDist().inv_cdf(quantile) * scale))


def feature_model(train_features: np.ndarray, train_labels: np.ndarray, *, ridge: float = 0.5) -> Refusal:
    """The class means and shrunk covariance of the training photos' glance features, thresholds not yet set
    (:func:`with_thresholds`): the part of the rule that needs the training photos."""
    x = np.asarray(train_features, dtype=np.float64)
    y = np.asarray(train_labels, dtype=np.int64)
    if np.unique(y).size < 2:
        raise ValueError("refusal needs training photos of at least two classes")
    means = np.stack([x[y == c].mean(axis=0) for c in range(int(y.max()) + 1)])
    centred = x - means[y]
    covariance = centred.T @ centred / len(x)
    covariance += ridge * np.trace(covariance) / covariance.shape[0] * np.eye(covariance.shape[0])
    return Refusal(means, np.linalg.inv(covariance), 0.0, 0.0, {"train_photos": int(len(x)), "ridge": ridge})


def with_thresholds(model: Refusal, val_features: np.ndarray, val_confidences: np.ndarray, *,
                    val_correct: np.ndarray | None = None, val_plant_shares: np.ndarray | None = None,
                    val_labels: np.ndarray | None = None, off_leaf: Sequence[int] = (),
                    distance_quantile: float = DISTANCE_QUANTILE, confidence_quantile: float = 0.01,
                    min_plant_share: float = MIN_PLANT_SHARE) -> Refusal:
    """``model``'s class means with the thresholds fitted on validation photos: ``not_a_leaf`` at the robust
    ``distance_quantile`` of their distances (:func:`distance_threshold`) and, below ``min_plant_share`` of
    plant pixels, at its :data:`NEAR_QUANTILE`; ``unsure`` under calibrated confidence 1/2, refusing at most
    ``confidence_quantile`` of new photos (:func:`unsure_threshold`, using ``val_correct`` when given). The
    validation photos' answers ``val_labels`` and the ``off_leaf`` classes only enter the recorded refusal rates
    (:meth:`Refusal.not_a_leaf`)."""
    if len(val_features) == 0:
        raise ValueError("refusal needs validation photos")
    refusal = Refusal(model.class_means, model.precision, 0.0, 0.0, min_plant_share=float(min_plant_share),
                      view_turns=tuple(model.view_turns), view_exposure=float(model.view_exposure))
    val_distances = refusal.distances(val_features)
    refusal.distance_threshold = distance_threshold(val_distances, distance_quantile)
    refusal.near_threshold = min(distance_threshold(val_distances, NEAR_QUANTILE), refusal.distance_threshold)
    refusal.confidence_threshold = unsure_threshold(val_confidences, val_correct, confidence_quantile)
    decisions = refusal.decide(val_features, val_confidences, val_plant_shares, val_labels, off_leaf)
    refusal.fitted = {
        "train_photos": model.fitted.get("train_photos"), "val_photos": int(len(val_distances)),
        "ridge": model.fitted.get("ridge"),
        "distance_quantile": distance_quantile, "distance_rule": "log-normal (median, MAD) quantile",
        "near_quantile": NEAR_QUANTILE, "min_plant_share": float(min_plant_share),
        "confidence_quantile": confidence_quantile,
        "val_not_a_leaf": float(np.mean([d == NOT_A_LEAF for d in decisions])),
        "val_unsure": float(np.mean([d == UNSURE for d in decisions])),
    }
    return refusal


def fit_refusal(train_features: np.ndarray, train_labels: np.ndarray, val_features: np.ndarray,
                val_confidences: np.ndarray, *, val_correct: np.ndarray | None = None, ridge: float = 0.5,
                distance_quantile: float = DISTANCE_QUANTILE, confidence_quantile: float = 0.01) -> Refusal:
    """The whole rule at once: :func:`feature_model` on the training split, :func:`with_thresholds` on the
    validation split."""
    if len(val_features) == 0:
        raise ValueError("refusal needs training photos of at least two classes and validation photos")
    return with_thresholds(feature_model(train_features, train_labels, ridge=ridge), val_features, val_confidences,
                           val_correct=val_correct, distance_quantile=distance_quantile,
                           confidence_quantile=confidence_quantile)
