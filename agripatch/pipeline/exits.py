"""When the cascade stops: offline replay of its exits, threshold sweeps, and the one threshold chooser.

:meth:`~agripatch.pipeline.cascade.PatchPipeline.exit_probabilities` records every exit's prediction
once (:class:`ExitOutputs`); :func:`simulate_exits` replays any thresholds on them in numpy, bit for bit
the decisions :meth:`~agripatch.pipeline.cascade.PatchPipeline.predict` makes, so evaluation never
re-runs a model per threshold.

Exit thresholds are chosen in exactly one place, :func:`choose_thresholds`, from an explicit
:class:`ExitPolicy`: thresholds given by the user, a mean MAC budget, or the cheapest thresholds within a
tolerance of the best accuracy. `train` (calibration on val), `evaluate` and `predict folder` all call it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agripatch.errors import AgripatchError
from agripatch.pipeline.severity import Severity

__all__ = [
    "NEVER_EXIT",
    "ExitPolicy",
    "ExitPolicyError",
    "ExitOutputs",
    "ThresholdChoice",
    "accuracy_preserving_thresholds",
    "choose_thresholds",
    "answer_probabilities",
    "expand_thresholds",
    "floor_thresholds",
    "json_thresholds",
    "simulate_exits",
    "stops",
    "sweep_thresholds",
    "thresholds_for_budget",
]

#: A threshold no softmax probability reaches: the exit never stops a photo early.
NEVER_EXIT = math.inf


def json_thresholds(values: Sequence[float] | None) -> list[float | str] | None:
    """Thresholds for JSON (run.json, summary.json, an export's cascade.json): strict JSON has no infinity,
    so a never-exit threshold is written as the string "inf"; ``float()`` reads both forms back."""
    if values is None:
        return None
    return [float(v) if math.isfinite(v) else "inf" for v in values]


class ExitPolicyError(AgripatchError, ValueError):
    """Exit thresholds cannot be chosen as asked (contradictory options, a budget below the glance, ...)."""


@dataclass
class ExitOutputs:
    """Every exit's prediction for a set of photos, for replaying exits offline.

    ``probs`` [N, k + 1, C] float32 are the aggregated probabilities at each exit,
    ``exit_macs`` [k + 1] int64 the cumulative cost of stopping at each exit, ``features`` [N, D]
    (optional) AnchorNet's pooled glance features of the same photos and ``plant_share`` [N] (optional)
    their plant share (both for the refusal rule); ``severities`` [N] (optional) their severity, measured in the
    same pass when the cascade measures it; ``refusal_macs`` [N] (optional) what judging each photo on its glance's
    views cost (:meth:`~agripatch.pipeline.core.CascadeCore.nearest_views`), outside the exits' costs.
    """

    probs: np.ndarray
    exit_macs: np.ndarray
    features: np.ndarray | None = None
    plant_share: np.ndarray | None = None
    severities: list[Severity] | None = None
    refusal_macs: np.ndarray | None = None

    @classmethod
    def concat(cls, parts: Sequence[ExitOutputs]) -> ExitOutputs:
        """Join batches (they must share the same per-exit cost)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        for part in parts[1:]:
            if not np.array_equal(part.exit_macs, parts[0].exit_macs):
                raise ValueError("batches with different exit costs cannot be joined")
        def joined(name: str) -> np.ndarray | None:
            values = [getattr(p, name) for p in parts]
            return np.concatenate(values) if all(v is not None for v in values) else None

        severities = ([s for p in parts for s in p.severities] if all(p.severities is not None for p in parts)
                      else None)
        return cls(np.concatenate([p.probs for p in parts]), parts[0].exit_macs.copy(), joined("features"),
                   joined("plant_share"), severities, joined("refusal_macs"))


def expand_thresholds(thresholds: float | Sequence[float], n_exits: int) -> list[float]:
    """One threshold for every exit, or exactly one per exit (glance + k patches), as floats; no NaN."""
    values = [float(thresholds)] if np.isscalar(thresholds) else [float(t) for t in thresholds]
    if len(values) == 1:
        values = values * n_exits
    if len(values) != n_exits:
        raise ExitPolicyError(f"exit thresholds: need 1 or {n_exits} values (glance + {n_exits - 1} patches), "
                              f"got {len(values)}")
    if any(math.isnan(v) for v in values):
        raise ExitPolicyError("exit thresholds must not be NaN")
    return values


def floor_thresholds(thresholds: Sequence[float], floor: float | None) -> list[float]:
    """Exit thresholds that never stop on an answer the refusal rule would call ``unsure``: every exit but
    the last one needs at least ``floor`` (the ``unsure`` confidence). So ``unsure`` is only ever decided on the
    last exit's confidence, the quantity it was fitted on, whatever thresholds or budget a user picks."""
    values = [float(t) for t in thresholds]
    if not floor or len(values) < 2:
        return values
    return [max(t, float(floor)) for t in values[:-1]] + values[-1:]


# -------------------------------------------------------------------------------- replay


def stops(confidence: np.ndarray, threshold: float, last: bool) -> np.ndarray:
    """The one stopping rule, live (:class:`~agripatch.pipeline.core.CascadeCore`) and replayed
    (:func:`simulate_exits`): a photo stops at an exit when its confidence reaches the exit's threshold, compared
    in the confidence's own dtype; every photo still running stops at the last exit."""
    confidence = np.asarray(confidence)
    if last:
        return np.ones(confidence.shape, dtype=bool)
    return confidence >= np.asarray(threshold, dtype=confidence.dtype)


def simulate_exits(
    stage_probs: np.ndarray,
    exit_macs: np.ndarray,
    thresholds: float | Sequence[float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replay the cascade's exits: per photo the prediction, exit taken and MACs spent.

    A photo stops at the first exit s whose top probability is ``>= thresholds[s]`` (a single
    float means the same threshold at every exit); the last exit always stops. Comparisons
    are made in the probabilities' dtype, like :meth:`PatchPipeline.predict`, so replaying
    :meth:`PatchPipeline.exit_probabilities` reproduces its decisions exactly.

    Args:
        stage_probs: [N, k + 1, C] per-stage probabilities.
        exit_macs: [k + 1] cumulative cost of stopping at each exit, or [N, k + 1].
        thresholds: one float, or k + 1 floats.

    Returns:
        ``(pred [N] int64, exit_stage [N] int64, macs [N] int64)``.
    """
    return _Replay.of(stage_probs, exit_macs).run(thresholds)


def answer_probabilities(stage_probs: np.ndarray, exit_stage: np.ndarray) -> np.ndarray:
    """Each photo's probabilities [N, C] at the exit it took (from :func:`simulate_exits`): what the
    cascade answers, and whose maximum the refusal rule calls its confidence."""
    probs = np.asarray(stage_probs)
    return probs[np.arange(len(probs)), np.asarray(exit_stage)]


@dataclass
class _Replay:
    """Per-exit confidence and prediction, computed once for many threshold replays."""

    conf: np.ndarray  # [N, S] top probability per exit
    pred: np.ndarray  # [N, S] arg-max class per exit
    costs: np.ndarray  # [S] or [N, S]

    @classmethod
    def of(cls, stage_probs: np.ndarray, exit_macs: np.ndarray) -> _Replay:
        probs = np.asarray(stage_probs)
        if probs.ndim != 3:
            raise ValueError(f"stage_probs must be [N, k + 1, C], got shape {probs.shape}")
        n, n_exits, _ = probs.shape
        costs = np.asarray(exit_macs)
        if costs.shape not in ((n_exits,), (n, n_exits)):
            raise ValueError(f"exit_macs must be [{n_exits}] or [{n}, {n_exits}], got {costs.shape}")
        if not np.issubdtype(probs.dtype, np.floating):
            probs = probs.astype(np.float64)
        return cls(probs.max(axis=2), probs.argmax(axis=2).astype(np.int64), costs)

    def run(self, thresholds: float | Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, n_exits = self.conf.shape
        # Compare in the probabilities' own precision, as predict() does in float32.
        thr = np.asarray(expand_thresholds(thresholds, n_exits), dtype=self.conf.dtype)
        hits = np.stack([stops(self.conf[:, s], thr[s], s == n_exits - 1) for s in range(n_exits)], axis=1)
        exit_stage = hits.argmax(axis=1).astype(np.int64)
        rows = np.arange(n)
        macs = self.costs[exit_stage] if self.costs.ndim == 1 else self.costs[rows, exit_stage]
        return self.pred[rows, exit_stage], exit_stage, macs.astype(np.int64)

    def evaluate(self, thresholds: Any, labels: np.ndarray | None) -> dict:
        pred, exit_stage, macs = self.run(thresholds)
        n = len(pred)
        return {
            "threshold": thresholds if np.isscalar(thresholds) else [float(t) for t in thresholds],
            "accuracy": None if labels is None else (float((pred == labels).mean()) if n else 0.0),
            "mean_macs": float(macs.mean()) if n else 0.0,
            "exit_histogram": np.bincount(exit_stage, minlength=self.conf.shape[1]).tolist(),
        }


def _labels(labels: Any, n: int) -> np.ndarray | None:
    if labels is None:
        return None
    out = np.asarray(labels).astype(np.int64).reshape(-1)
    if out.shape != (n,):
        raise ValueError(f"need {n} labels, got {out.shape[0]}")
    return out


def sweep_thresholds(
    stage_probs: np.ndarray,
    exit_macs: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    grid: Iterable[float | Sequence[float]] | None = None,
) -> list[dict]:
    """Accuracy and mean cost for each threshold of ``grid`` (accuracy-vs-MACs curves).

    Each grid item is one threshold shared by all exits, or a list of k + 1 per-exit
    thresholds; the default grid is 0, 0.05, .., 1 and :data:`NEVER_EXIT`.

    Returns:
        One dict per item: ``threshold``, ``accuracy``, ``mean_macs`` and ``exit_histogram``
        (photos stopping at each exit 0..k).
    """
    replay = _Replay.of(stage_probs, exit_macs)
    y = _labels(labels, replay.conf.shape[0])
    if grid is None:
        grid = [round(0.05 * i, 2) for i in range(21)] + [NEVER_EXIT]
    return [replay.evaluate(t, y) for t in grid]


# -------------------------------------------------------------------------------- choosing


@dataclass
class ThresholdChoice:
    """Exit thresholds and what they gave on the photos they were chosen on.

    ``threshold`` is the shared value when one was chosen (else the first exit's); ``thresholds`` has
    k + 1 values; ``accuracy`` and ``mean_macs`` are None when nothing was replayed (or no labels);
    ``how`` says which rule chose them, for logs and summaries.
    """

    threshold: float
    thresholds: list[float]
    mean_macs: float | None
    accuracy: float | None
    exit_histogram: list[int]
    how: str = ""


def thresholds_for_budget(
    stage_probs: np.ndarray,
    exit_macs: np.ndarray,
    budget_macs: float,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    max_candidates: int = 2048,
    floor: float | None = None,
) -> ThresholdChoice:
    """Pick one threshold, shared by all exits, whose mean MACs per photo fit ``budget_macs``.

    Raising a shared threshold only delays exits, so mean cost grows with it; the candidates
    are the observed top probabilities themselves (every point where a decision flips; at most
    ``max_candidates`` of them, evenly spaced quantiles beyond), plus 0 and
    :data:`NEVER_EXIT`. With ``labels`` the most accurate candidate within budget wins (ties:
    the cheaper one); without labels the most expensive one within budget wins, i.e. only the
    most confident photos exit early and the budget is spent on the least confident ones. Candidates below
    ``floor`` are not tried (:func:`floor_thresholds`): the early exits never stop below it.

    Raises:
        ValueError: when even exiting every photo at the glance exceeds the budget.
    """
    probs = np.asarray(stage_probs)
    if probs.ndim != 3 or probs.shape[0] == 0:
        raise ValueError(f"stage_probs must be a non-empty [N, k + 1, C], got shape {probs.shape}")
    replay = _Replay.of(probs, exit_macs)
    y = _labels(labels, probs.shape[0])
    conf = np.unique(replay.conf[:, :-1].astype(np.float64))
    if conf.size > max_candidates:
        conf = np.unique(np.quantile(conf, np.linspace(0.0, 1.0, max_candidates), method="nearest"))
    candidates = np.concatenate([[0.0], conf, [NEVER_EXIT]])
    if floor:
        candidates = np.unique(np.concatenate([[float(floor)], candidates[candidates >= floor]]))

    best: dict | None = None
    for t in candidates:
        result = replay.evaluate(float(t), y)
        if result["mean_macs"] > budget_macs:
            continue
        if best is None:
            best = result
            continue
        if y is None:
            better = result["mean_macs"] > best["mean_macs"]
        else:
            better = (result["accuracy"], -result["mean_macs"]) > (best["accuracy"], -best["mean_macs"])
        if better:
            best = result
    if best is None:
        cheapest = float(np.asarray(exit_macs)[..., 0].mean())
        if floor:
            cheapest = float(replay.evaluate(float(floor), None)["mean_macs"])
        raise ValueError(f"budget {budget_macs:.0f} MACs is below the cheapest possible prediction "
                         f"({cheapest:.0f} MACs per photo)")
    n_exits = probs.shape[1]
    t = float(best["threshold"])
    return ThresholdChoice(t, [t] * n_exits, best["mean_macs"], best["accuracy"], best["exit_histogram"])


def accuracy_preserving_thresholds(
    stage_probs: np.ndarray,
    exit_macs: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    tolerance: float = 0.005,
) -> ThresholdChoice:
    """The cheapest shared exit threshold whose accuracy is within ``tolerance`` of the best one.

    Give up at most half a point of accuracy (by default) for every photo that can stop early.
    Candidates are the :func:`sweep_thresholds` grid.
    """
    probs = np.asarray(stage_probs)
    if probs.ndim != 3 or probs.shape[0] == 0:
        raise ValueError(f"stage_probs must be a non-empty [N, k + 1, C], got shape {probs.shape}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    sweep = sweep_thresholds(probs, exit_macs, labels)
    best_acc = max(point["accuracy"] for point in sweep)
    eligible = [point for point in sweep if point["accuracy"] >= best_acc - tolerance - 1e-12]
    chosen = min(eligible, key=lambda point: (point["mean_macs"], -point["accuracy"]))
    t = float(min(chosen["threshold"], 1.0))
    return ThresholdChoice(t, [t] * probs.shape[1], chosen["mean_macs"], chosen["accuracy"],
                           list(chosen["exit_histogram"]))


@dataclass(frozen=True)
class ExitPolicy:
    """How exit thresholds are chosen: given ``thresholds``, a mean ``budget_gmacs``, a calibrated
    ``target_confidence`` (every exit stops at that confidence; no labels needed, nothing chosen on a
    split), or else the cheapest shared threshold within ``tolerance`` of the best accuracy (labelled photos).

    Giving both thresholds and a budget is a contradiction and an error, wherever the policy comes from.
    """

    thresholds: tuple[float, ...] | None = None
    budget_gmacs: float | None = None
    tolerance: float = 0.005
    target_confidence: float | None = None
    source: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if self.thresholds is not None and self.budget_gmacs is not None:
            raise ExitPolicyError("give either exit thresholds or a MAC budget, not both")
        if self.target_confidence is not None and not 0 < self.target_confidence <= 1:
            raise ExitPolicyError(f"the target confidence must be in (0, 1], got {self.target_confidence}")
        if self.thresholds is not None:
            object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if self.budget_gmacs is not None and not self.budget_gmacs > 0:
            raise ExitPolicyError(f"the budget must be a positive number of GMACs per photo, got {self.budget_gmacs}")
        if self.tolerance < 0:
            raise ExitPolicyError(f"the tolerance must be >= 0, got {self.tolerance}")

    @classmethod
    def from_options(cls, thresholds: Sequence[float] | None, budget_gmacs: float | None,
                     stored: Sequence[float]) -> ExitPolicy:
        """What a user's options ask for (`evaluate`, `predict folder`, the API): given thresholds or a budget
        (never both), else the model file's calibrated thresholds ``stored``."""
        if thresholds is not None:
            return cls(thresholds=tuple(thresholds), budget_gmacs=budget_gmacs, source="--thresholds")
        if budget_gmacs is not None:
            return cls(budget_gmacs=budget_gmacs, source=f"--budget {budget_gmacs:g} GMACs")
        return cls(thresholds=tuple(stored), source="model file")

    @property
    def kind(self) -> str:
        """``thresholds``, ``budget``, ``target`` or ``tolerance``."""
        if self.thresholds is not None:
            return "thresholds"
        if self.budget_gmacs is not None:
            return "budget"
        return "target" if self.target_confidence is not None else "tolerance"

    @property
    def needs_outputs(self) -> bool:
        """True when choosing needs every exit's probabilities (a budget, or the tolerance rule)."""
        return self.kind in ("budget", "tolerance")

    def describe(self) -> str:
        """A short human description, for logs and summaries."""
        if self.source:
            return self.source
        if self.kind == "thresholds":
            return "given thresholds"
        if self.kind == "budget":
            return f"budget {self.budget_gmacs:g} GMACs"
        if self.kind == "target":
            return f"calibrated confidence {self.target_confidence:g}"
        return f"cheapest within {self.tolerance * 100:g} pt of the best accuracy"


def _lowered(choice: ThresholdChoice, outputs: ExitOutputs, labels: Any, floor: float | None,
             ceiling_macs: float) -> ThresholdChoice:
    """``choice`` lowered to the highest shared threshold whose mean cost on ``outputs`` is at most ``ceiling_macs``
    (kept as it is when even the cheapest exits cost more)."""
    try:
        fitted = thresholds_for_budget(outputs.probs, outputs.exit_macs, ceiling_macs, None, floor=floor)
    except ValueError:
        return choice
    how = (f"{choice.how}, lowered to {fitted.threshold:.3f} to spend at most the full-image model's "
           f"{ceiling_macs / 1e9:.3f} GMACs")
    return _replayed(floor_thresholds(fitted.thresholds, floor), outputs, labels, how)


def _replayed(values: list[float], outputs: ExitOutputs, labels: Any, how: str) -> ThresholdChoice:
    """``values`` as a choice, with the accuracy and cost they give on ``outputs``."""
    result = _Replay.of(outputs.probs, outputs.exit_macs).evaluate(values, _labels(labels, len(outputs.probs)))
    return ThresholdChoice(values[0], values, result["mean_macs"], result["accuracy"], result["exit_histogram"], how)


def choose_thresholds(
    policy: ExitPolicy,
    n_exits: int,
    outputs: ExitOutputs | None = None,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    floor: float | None = None,
    ceiling_macs: float | None = None,
) -> ThresholdChoice:
    """THE exit-threshold chooser: apply ``policy`` for a cascade of ``n_exits`` exits.

    Given thresholds (1 or k + 1 values) and a target confidence are expanded and, when ``outputs`` are
    there, replayed to report their accuracy and cost. A budget picks the shared threshold whose mean cost
    on ``outputs`` fits it (most accurate with ``labels``, else the most expensive). The tolerance rule needs
    ``outputs`` and ``labels``. Every rule's thresholds are raised to ``floor`` (the refusal rule's
    ``unsure`` confidence, :func:`floor_thresholds`) on every exit but the last.

    ``ceiling_macs`` (the full-image model's cost, :meth:`~agripatch.pipeline.cascade.PatchPipeline.full_image_macs`)
    caps the target rule: where the target confidence would spend more than that a photo on ``outputs`` (patches
    that rarely get sure send most photos through every patch and the whole photo), it is lowered to the highest
    shared threshold that fits, so the cascade never costs more than the model it replaces. The highest, not the
    most accurate: on a flat accuracy curve the most accurate point is noise, and the cheapest one loses answers
    (benchmarks/README.md, "A crop without its own recipe").

    Raises:
        ExitPolicyError: missing outputs or labels for the rule, or a budget below the glance's cost.
    """
    how = policy.describe()
    if policy.kind in ("thresholds", "target"):
        given = policy.thresholds if policy.kind == "thresholds" else policy.target_confidence
        values = floor_thresholds(expand_thresholds(given, n_exits), floor)
        if outputs is None or len(outputs.probs) == 0:
            return ThresholdChoice(values[0], values, None, None, [], how)
        choice = _replayed(values, outputs, labels, how)
        if policy.kind == "target" and ceiling_macs is not None and choice.mean_macs > ceiling_macs:
            return _lowered(choice, outputs, labels, floor, ceiling_macs)
        return choice
    if outputs is None or len(outputs.probs) == 0:
        raise ExitPolicyError(f"{how}: needs the exit probabilities of at least one photo")
    if outputs.probs.shape[1] != n_exits:
        raise ExitPolicyError(f"{how}: outputs have {outputs.probs.shape[1]} exits, the cascade {n_exits}")
    if policy.kind == "budget":
        try:
            choice = thresholds_for_budget(outputs.probs, outputs.exit_macs, policy.budget_gmacs * 1e9, labels,
                                           floor=floor)
        except ValueError as error:
            raise ExitPolicyError(f"{how}: {error}; raise the budget") from None
    else:
        if labels is None:
            raise ExitPolicyError(f"{how}: needs labelled photos")
        choice = accuracy_preserving_thresholds(outputs.probs, outputs.exit_macs, labels, tolerance=policy.tolerance)
        if floor:
            choice = _replayed(floor_thresholds(choice.thresholds, floor), outputs, labels, how)
    choice.how = how
    return choice
