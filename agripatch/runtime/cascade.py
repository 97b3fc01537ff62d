"""The glance + patches cascade on ONNX Runtime, in numpy: the twin of
:class:`agripatch.pipeline.cascade.PatchPipeline`.

Same steps, same order, same float32 arithmetic where decisions are taken: glance graph (AnchorNet's logits and
CAM) or the classifier on the glance -> exit test at stage 0 -> for the photos still running, the score map,
the optional leaf prior (:mod:`agripatch.runtime.priors`), greedy cell selection, boxes scaled to the photo
(:func:`agripatch.pipeline.boxes.scale_boxes`), full-resolution crops (:mod:`agripatch.runtime.roi`) -> the
classifier graph per stage for the photos still running, the aggregated prediction (softmax of the mean of the
stage logits, or the mean of probabilities) and its exit test. Results are
:class:`agripatch.pipeline.prediction.PatchPrediction`, so predict folder's records are the same.
Keep in sync with ``PatchPipeline.predict`` / ``stage_probabilities`` (see :data:`MIRRORED_OPTIONS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from agripatch.io.glance import glance_batch
from agripatch.pipeline.boxes import scale_boxes
from agripatch.pipeline.exits import StageOutputs, expand_thresholds
from agripatch.pipeline.prediction import PatchPrediction, assemble_predictions
from agripatch.runtime.errors import ExportFolderError
from agripatch.runtime.manifest import ExportManifest
from agripatch.runtime.priors import apply_leaf_prior
from agripatch.runtime.roi import crop_patches
from agripatch.runtime.select import score_map, select_cells

__all__ = ["MIRRORED_OPTIONS", "OnnxCascade", "check_mirrored", "softmax"]

Graph = Callable[[np.ndarray], list[np.ndarray]]

#: The CascadeConfig fields this runtime reproduces (training-only ones included). A cascade option added to the
#: torch pipeline must be mirrored here before an export that sets it can run (tests/export checks the list).
MIRRORED_OPTIONS = frozenset({"k", "glance", "glance_size", "patch_size", "iou_threshold", "score_mode", "aggregate",
                              "cell_prior", "leaf_min_share", "train_selection", "thresholds", "budget_gmacs", "target_confidence",
                              "temperatures"})


def check_mirrored(config) -> None:
    """Refuse (:class:`ExportFolderError`) a cascade setting an option this runtime does not reproduce (a newer
    torch pipeline's), rather than silently predicting something else."""
    fields = type(config).model_fields
    unknown = [name for name in fields
               if name not in MIRRORED_OPTIONS and getattr(config, name) != fields[name].default]
    if unknown:
        raise ExportFolderError(f"this ONNX runtime does not reproduce the cascade option(s) {', '.join(unknown)}; "
                                "update agripatch/runtime to mirror the torch pipeline")


def softmax(x: np.ndarray) -> np.ndarray:
    """Row softmax in float32 (max-shifted, as torch computes it)."""
    x = np.asarray(x, np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


def _term(logits: np.ndarray, aggregate: str) -> np.ndarray:
    logits = np.asarray(logits, np.float32)
    return logits.copy() if aggregate == "mean_logits" else softmax(logits)


def _finish(total: np.ndarray, n_stages: int, cfg) -> np.ndarray:
    mean = (total / np.float32(n_stages)).astype(np.float32)
    t = np.float32(cfg.temperature(n_stages - 1))
    if cfg.aggregate == "mean_logits":
        return softmax(mean / t if t != 1 else mean)
    return mean if t == 1 else softmax(np.log(np.maximum(mean, np.float32(1e-30))) / t)


@dataclass
class _Located:
    """The cells of the batch photos ``rows``: AnchorNet logits, selection, boxes in photo pixels, score maps."""

    rows: np.ndarray
    logits: np.ndarray
    indices: np.ndarray
    scores: np.ndarray
    boxes: np.ndarray
    maps: np.ndarray
    features: np.ndarray
    plant_share: np.ndarray

    def position(self, rows: np.ndarray) -> np.ndarray:
        """Indices into this object's arrays of the batch photos ``rows`` (which must be located)."""
        where = {int(r): i for i, r in enumerate(self.rows)}
        return np.array([where[int(r)] for r in rows], dtype=np.int64)


class OnnxCascade:
    """The cascade of an export folder over ONNX graphs (or any callables with the same contract).

    Args:
        manifest: the folder's :class:`~agripatch.runtime.manifest.ExportManifest`.
        glance: graph ``glance [B, 3, G, G] (0..1) -> (logits [B, C], cam [B, C, gh, gw], features [B, D],
            leaf share [B, N])`` (:class:`agripatch.pipeline.cascade.GlanceScorer`).
        classifier: graph ``normalised patches [B, 3, S, S] -> [logits [B, C]]``.
        glance_classifier: with ``glance="classifier"``, the classifier graph at the glance size.
    """

    def __init__(self, manifest: ExportManifest, glance: Graph, classifier: Graph,
                 glance_classifier: Graph | None = None):
        self.manifest = manifest
        self.config = manifest.config
        self.glance = glance
        self.classifier = classifier
        self.glance_classifier = glance_classifier
        check_mirrored(self.config)
        if self.config.glance == "classifier" and glance_classifier is None:
            raise ValueError("a cascade with glance='classifier' needs the glance_classifier graph")

    # ------------------------------------------------------------------ inputs and selection

    def _prepare(self, images: Sequence[np.ndarray], glances: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The glance batch (0..1 float32) and the photo sizes [B, 2]."""
        size = self.config.glance_size
        if glances is None:
            glance = glance_batch(images, size)
        else:
            glances = np.asarray(glances)
            if glances.shape != (len(images), 3, size, size):
                raise ValueError(f"glances must be [{len(images)}, 3, {size}, {size}], got {glances.shape}")
            glance = glances.astype(np.float32) / np.float32(255.0) if glances.dtype == np.uint8 \
                else glances.astype(np.float32, copy=False)
        hw = np.array([[img.shape[0], img.shape[1]] for img in images], dtype=np.float64).reshape(-1, 2)
        return glance, hw

    def _locate(self, glance: np.ndarray, hw: np.ndarray, rows: np.ndarray) -> _Located | None:
        """Glance graph, score map, K cells and their boxes in photo pixels for the photos ``rows``."""
        cfg = self.config
        if rows.size == 0:
            return None
        logits, cam, features, share = self.glance(glance[rows])
        maps = score_map(cam, logits, cfg.score_mode)
        cells = self.manifest.cell_boxes
        if cells.shape[0] != maps.shape[1] * maps.shape[2]:
            raise ValueError(f"cascade.json has {cells.shape[0]} cell boxes for a {maps.shape[1:]} grid")
        scores = maps.reshape(len(rows), -1).astype(np.float32)
        ranking = scores
        if cfg.cell_prior == "leaf":  # cells without enough plant pixels rank last (pipeline/priors.py)
            ranking = apply_leaf_prior(scores, share, cfg.leaf_min_share)
        selection = select_cells(ranking, cells, cfg.k, cfg.iou_threshold)
        size = (cfg.glance_size, cfg.glance_size)
        boxes = scale_boxes(selection.boxes.astype(np.float32), size, hw[rows]).astype(np.float32)
        picked = np.take_along_axis(scores, selection.indices, axis=1)  # the class map's own score, as torch reports
        return _Located(rows, logits, selection.indices, picked, boxes, maps, features,
                        np.asarray(share, np.float32).mean(axis=1))

    def _crop(self, images: Sequence[np.ndarray], located: _Located, rows: np.ndarray) -> np.ndarray:
        """Normalised patches [R, K, 3, S, S] of the photos ``rows``."""
        cfg = self.config
        return crop_patches([images[int(r)] for r in rows], located.boxes[located.position(rows)], cfg.patch_size,
                            self.manifest.classifier_mean, self.manifest.classifier_std)

    def _glance_logits(self, glance: np.ndarray, hw: np.ndarray) -> tuple[np.ndarray, _Located | None]:
        """Stage-0 logits for every photo; with an AnchorNet glance also every photo's cells."""
        if self.config.glance == "anchornet":
            located = self._locate(glance, hw, np.arange(glance.shape[0]))
            return located.logits, located
        m = np.asarray(self.manifest.classifier_mean, np.float32).reshape(1, 3, 1, 1)
        s = np.asarray(self.manifest.classifier_std, np.float32).reshape(1, 3, 1, 1)
        return self.glance_classifier((glance - m) / s)[0], None

    # ------------------------------------------------------------------ predictions

    def predict(self, images: Sequence[np.ndarray], glances: np.ndarray | None = None, *,
                thresholds: Sequence[float] | None = None) -> list[PatchPrediction]:
        """Classify full-resolution HWC RGB photos (uint8, or float 0..1) with early exits, like
        ``PatchPipeline.predict``; ``glances`` optionally gives the [B, 3, G, G] glance batch already made."""
        cfg = self.config
        thr = np.asarray(expand_thresholds(thresholds if thresholds is not None else self.manifest.thresholds,
                                           cfg.n_stages), dtype=np.float32)
        b = len(images)
        if b == 0:
            return []
        glance, hw = self._prepare(images, glances)
        costs = self.manifest.stage_macs
        glance_logits, located = self._glance_logits(glance, hw)
        total = _term(glance_logits, cfg.aggregate)
        probs = _finish(total, 1, cfg)
        final = probs.copy()
        stage = np.full(b, -1, dtype=np.int64)
        done = probs.max(axis=1) >= thr[0]
        stage[done] = 0

        running = np.flatnonzero(~done)
        if located is None:
            located = self._locate(glance, hw, running)
        patch_logits: list[list[np.ndarray]] = [[] for _ in range(b)]
        if running.size:
            patches = self._crop(images, located, running)  # [R, K, 3, S, S]
            slot = np.full(b, -1, dtype=np.int64)
            slot[running] = np.arange(running.size)
            for s in range(1, cfg.k + 1):
                if running.size == 0:
                    break
                logits = self.classifier(patches[slot[running], s - 1])[0]
                for r, row_logits in zip(running.tolist(), logits):
                    patch_logits[r].append(row_logits)
                total[running] = total[running] + _term(logits, cfg.aggregate)
                probs = _finish(total[running], s + 1, cfg)
                stop = probs.max(axis=1) >= thr[s]
                if s == cfg.k:  # the last stage always exits
                    stop[:] = True
                final[running[stop]] = probs[stop]
                stage[running[stop]] = s
                running = running[~stop]
        return self._assemble(final, stage, costs, located, patch_logits)

    def _assemble(self, final: np.ndarray, stage: np.ndarray, costs: np.ndarray, located: _Located | None,
                  patch_logits: list[list[np.ndarray]]) -> list[PatchPrediction]:
        if located is None:
            return assemble_predictions(final, stage, costs, np.zeros(0, np.int64), None, None, None, None, None,
                                        patch_logits)
        return assemble_predictions(final, stage, costs, located.rows, located.boxes, located.scores,
                                    located.indices, located.maps, located.features, patch_logits,
                                    located.plant_share)

    def stage_probabilities(self, images: Sequence[np.ndarray], glances: np.ndarray | None = None) -> StageOutputs:
        """Every stage for every photo (no early exit): probabilities [N, k + 1, C] and the stage costs, like
        ``PatchPipeline.stage_probabilities`` (to choose thresholds for a budget)."""
        cfg = self.config
        costs = self.manifest.stage_macs.copy()
        if not len(images):
            return StageOutputs(np.zeros((0, cfg.n_stages, 0), np.float32), costs)
        glance, hw = self._prepare(images, glances)
        rows = np.arange(len(images))
        glance_logits, located = self._glance_logits(glance, hw)
        total = _term(glance_logits, cfg.aggregate)
        stages = [_finish(total, 1, cfg)]
        if located is None:
            located = self._locate(glance, hw, rows)
        patches = self._crop(images, located, rows)
        for s in range(1, cfg.k + 1):
            total = total + _term(self.classifier(patches[:, s - 1])[0], cfg.aggregate)
            stages.append(_finish(total, s + 1, cfg))
        return StageOutputs(np.stack(stages, axis=1).astype(np.float32), costs, located.features,
                            located.plant_share)
