"""What every predictor shares, torch-free: decoded photos in, the records users get out.

:class:`~agripatch.predict.predictor.Predictor` (PyTorch) and :class:`~agripatch.runtime.predictor.OnnxPredictor`
(ONNX Runtime) differ only in how they decode and run the cascade (:meth:`BasePredictor.item`,
:meth:`BasePredictor.run`); the record of a photo, its refusal decision and the batch loop over paths or
in-memory photos are written once, here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agripatch.pipeline.config import PREDICT_BATCH_SIZE, CascadeConfig
from agripatch.pipeline.exits import floor_thresholds
from agripatch.pipeline.prediction import PatchPrediction
from agripatch.pipeline.records import findings_of, photo_record
from agripatch.pipeline.refusal import Refusal
from agripatch.pipeline.timing import PartTimes, part

__all__ = ["BasePredictor", "defers_full_decode"]


def defers_full_decode(*, workers: int = 0, review_images: bool = False) -> bool:
    """Whether photos are decoded for their glance only, the cascade's larger decode made when a photo reaches a
    patch (:class:`~agripatch.io.deferred.DeferredPhoto`): when they are decoded in this process (no decoding
    ``workers``) and nothing reads every photo's full pixels (``review_images``: crops and overlays). The symptom
    map reads the glance's decode where that is large enough, and decodes the rest itself.
    Same records; 600 iBean photos with the `ibean` recipe, 2-core AMD EPYC, 0 workers, median of 5 runs of
    `predict folder`: 103.15 against 85.78 photos/s (benchmarks/README.md, "Decoding only what the cascade reads").
    With decoding workers the larger decode would move from beside the model into the main process."""
    return workers == 0 and not review_images


class BasePredictor:
    """A cascade with its thresholds and (optionally) its refusal rule; subclasses decode and run it."""

    classes: list[str]
    topk: int
    config: CascadeConfig
    thresholds: list[float]
    refusal: Refusal | None = None
    times: PartTimes | None = None

    def profile(self, times: PartTimes | None) -> None:
        """Time every part of the following runs into ``times`` (None stops): the cascade's parts, the refusal
        rule and the records (`benchmarks/cascade_profile.py`)."""
        self.times = times
        self._cascade().times = times

    def _cascade(self) -> Any:
        """The object whose ``times`` the cascade core reads (the torch pipeline, or the ONNX cascade)."""
        raise NotImplementedError

    @property
    def glance_size(self) -> int:
        """Side of the glance the cells live on."""
        return self.config.glance_size

    @property
    def n_exits(self) -> int:
        """Exits of the cascade (glance + k patches)."""
        return self.config.n_exits

    def item(self, source: Any, index: int = 0, *, defer_full: bool = False) -> dict[str, Any]:
        """A photo (path or in-memory image) decoded as the cascade needs it; with ``defer_full`` a file is decoded
        for its glance first and at the cascade's size only if the cascade reads it (records only: the item's
        ``image`` may be a :class:`~agripatch.io.deferred.DeferredPhoto`)."""
        raise NotImplementedError

    def run(self, items: Sequence[dict[str, Any]]) -> list[PatchPrediction]:
        """The cascade's predictions for readable items."""
        raise NotImplementedError

    @property
    def precision(self) -> str:
        """The networks' arithmetic (``float32``, ``bfloat16``, ``int8``): a resumed run must keep it."""
        raise NotImplementedError

    @property
    def orientation(self) -> str | None:
        """Which way photos are read (:mod:`agripatch.io.orientation`): the model's training photos' way."""
        return self.config.photo_orientation

    @property
    def unsure_floor(self) -> float | None:
        """The confidence below which an answer is ``unsure``: no exit but the last stops below it."""
        return self.refusal.confidence_threshold if self.refusal is not None else None

    def exit_thresholds(self) -> list[float]:
        """The thresholds the cascade runs with: ``self.thresholds`` raised to :attr:`unsure_floor`
        (:func:`~agripatch.pipeline.exits.floor_thresholds`)."""
        return floor_thresholds(self.thresholds, self.unsure_floor)

    @property
    def refuses(self) -> bool:
        """Whether this model can say ``not_a_leaf`` / ``unsure`` (model files from before refusal cannot)."""
        return self.refusal is not None

    def record(self, item: dict[str, Any], result: PatchPrediction, **files: Any) -> dict[str, Any]:
        """The record of one photo, as `predict folder` writes it (``files``: crops / overlay names), with its
        decision: the predicted class, or ``not_a_leaf`` / ``unsure`` when the refusal rule says so."""
        decision, distance = None, None
        if self.refusal is not None:
            with part(self.times, "refusal"):
                decision, distance = self.refusal.judge(result.features, float(result.probs.max()), result.plant_share,
                                                        result.label, self.config.off_leaf_classes, result.distance)
        with part(self.times, "records"):
            findings = findings_of(result.probs, self.classes, self.config.findings_threshold,
                                   self.config.findings_exclude)
            return photo_record(item["path"], result, self.classes, self.topk, item["decoded_hw"],
                                item["original_hw"], decision=decision, ood_distance=distance, findings=findings,
                                turns=item.get("turns", 0), **files)

    def predict(self, sources: Sequence[Any], *, batch_size: int = PREDICT_BATCH_SIZE) -> list[dict[str, Any]]:
        """Records for photos given as paths or in-memory images, in order; an unreadable file gives a record
        with ``error`` instead of a diagnosis."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(sources), batch_size):
            items = [self.item(source, start + i, defer_full=defers_full_decode())
                     for i, source in enumerate(sources[start:start + batch_size])]
            good = [item for item in items if item["image"] is not None]
            results = dict(zip((item["index"] for item in good), self.run(good)))
            for item in items:
                if item["image"] is None:
                    out.append({"path": item["path"], "error": item["error"]})
                else:
                    out.append(self.record(item, results[item["index"]]))
        return out
