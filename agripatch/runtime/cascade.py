"""The cascade of an export folder on ONNX Runtime: :class:`~agripatch.pipeline.core.CascadeCore` (the same
decisions as PyTorch, written once) over the exported graphs and a numpy crop (:mod:`agripatch.runtime.roi`,
the matrices of :mod:`agripatch.pipeline.crop` applied in numpy). Imports no torch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from agripatch.io.deferred import pixels
from agripatch.io.exposure import exposed_like
from agripatch.io.glance import PhotoFile, glance_batch, shrink_array
from agripatch.pipeline.core import CascadeCore
from agripatch.pipeline.exits import ExitOutputs
from agripatch.pipeline.prediction import PatchPrediction
from agripatch.pipeline.timing import part
from agripatch.runtime.manifest import ExportManifest
from agripatch.runtime.roi import crop_patches, normalise

__all__ = ["OnnxCascade", "OnnxNetworks"]

Graph = Callable[[np.ndarray], list[np.ndarray]]


class OnnxNetworks:
    """:class:`~agripatch.pipeline.core.Networks` on ONNX graphs (or any callables with the same contract).

    Args:
        manifest: the folder's :class:`~agripatch.runtime.manifest.ExportManifest`.
        glance: graph ``glance [B, 3, G, G] (0..1) -> (logits [B, C], cam [B, C, gh, gw], features [B, D],
            leaf share [B, N])`` (:class:`agripatch.pipeline.cascade.GlanceScorer`).
        classifier: graph ``normalised patches [B, 3, S, S] -> [logits [B, C]]``.
        glance_classifier: with ``glance="classifier"``, the classifier graph at the glance size.
        full_image: with ``full_image_exit``, the full-image model's graph (normalised whole photos -> [logits]).
        symptom_map: with ``severity``, the symptom map's graph (normalised whole photos -> [logits]).
    """

    def __init__(self, manifest: ExportManifest, glance: Graph, classifier: Graph,
                 glance_classifier: Graph | None = None, full_image: Graph | None = None,
                 symptom_map: Graph | None = None):
        if manifest.config.glance == "classifier" and glance_classifier is None:
            raise ValueError("a cascade with glance='classifier' needs the glance_classifier graph")
        if manifest.config.full_image_exit and (full_image is None or manifest.full_image is None):
            raise ValueError("a cascade with a full-image exit needs the full_image graph and its input entry")
        self.manifest = manifest
        self.glance = glance
        self.classifier = classifier
        self.glance_classifier = glance_classifier
        self.full_image = full_image
        self.symptom_map = symptom_map

    def score_glance(self, glance: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(np.asarray(a, np.float32) for a in self.glance(glance[rows])[:4])

    def glance_views(self, glance: np.ndarray, rows: np.ndarray, turns: Sequence[int], exposure: float) -> np.ndarray:
        picked = glance[rows]
        views = [np.rot90(picked, int(k), axes=(2, 3)) for k in turns]
        if exposure > 0:
            views.append(exposed_like(picked, exposure))
        return np.concatenate(views)  # a new, contiguous array

    def classify_glance(self, glance: np.ndarray) -> np.ndarray:
        return self.glance_classifier(normalise(glance, self.manifest.classifier_mean, self.manifest.classifier_std))[0]

    def crop(self, images: Sequence[np.ndarray], boxes: np.ndarray, slot: int) -> np.ndarray:
        return crop_patches(images, boxes, self.manifest.config.patch_size, self.manifest.classifier_mean,
                            self.manifest.classifier_std, slot=slot)

    def classify(self, patches: np.ndarray) -> np.ndarray:
        return self.classifier(patches)[0]

    def classify_photo(self, images: Sequence[np.ndarray], files: Sequence[PhotoFile | None]) -> np.ndarray:
        spec = self.manifest.full_image
        assert spec is not None and self.full_image is not None
        return self.full_image(normalise(glance_batch(images, spec.size, files), spec.mean, spec.std))[0]

    def map_symptoms(self, images: Sequence[np.ndarray], height: int, width: int) -> np.ndarray:
        spec = self.manifest.symptom_map
        if spec is None or self.symptom_map is None:
            raise ValueError("this export measures no severity (no symptom_map graph)")
        photos = np.stack([shrink_array(image, height, width) for image in images])
        return self.symptom_map(normalise(photos, spec.mean, spec.std))[0]


class OnnxCascade:
    """The cascade of an export folder: HWC RGB photos (uint8, or float 0..1) in, predictions out, like
    ``PatchPipeline.predict`` / ``exit_probabilities``; ``glances`` optionally gives the [B, 3, G, G] glance
    batch already made (uint8 or 0..1). Arguments as :class:`OnnxNetworks`; ``severity`` False measures no severity
    even when the export can."""

    def __init__(self, manifest: ExportManifest, glance: Graph, classifier: Graph,
                 glance_classifier: Graph | None = None, full_image: Graph | None = None,
                 symptom_map: Graph | None = None, *, severity: bool = True):
        self.manifest = manifest
        if not severity and manifest.config.cell_prior == "symptom":
            raise ValueError("this export ranks its cells by the symptom map (cell_prior 'symptom'): it cannot run "
                             "without severity")
        self.config = manifest.config if severity else manifest.config.model_copy(update={"severity": None})
        networks = OnnxNetworks(manifest, glance, classifier, glance_classifier, full_image, symptom_map)
        self.core = CascadeCore(self.config, networks, manifest.cell_boxes, manifest.exit_macs,
                                refusal=manifest.refusal)

    @property
    def times(self):
        """The core's :class:`~agripatch.pipeline.timing.PartTimes` (None: not profiling); set it to profile."""
        return self.core.times

    @times.setter
    def times(self, value) -> None:
        self.core.times = value

    def _prepare(self, images: Sequence[np.ndarray], glances: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """The glance batch (0..1 float32) and the photo sizes [B, 2]."""
        size = self.config.glance_size
        if glances is None:
            glance = glance_batch([pixels(image) for image in images], size)
        else:
            glances = np.asarray(glances)
            if glances.shape != (len(images), 3, size, size):
                raise ValueError(f"glances must be [{len(images)}, 3, {size}, {size}], got {glances.shape}")
            glance = glances.astype(np.float32) / np.float32(255.0) if glances.dtype == np.uint8 \
                else glances.astype(np.float32, copy=False)
        hw = np.array([[img.shape[0], img.shape[1]] for img in images], dtype=np.float64).reshape(-1, 2)
        return glance, hw

    def predict(self, images: Sequence[np.ndarray], glances: np.ndarray | None = None, *,
                thresholds: Sequence[float] | None = None,
                files: Sequence[PhotoFile | None] | None = None) -> list[PatchPrediction]:
        """Each photo's prediction with early exits (default thresholds: the folder's calibrated ones); ``files``
        as in :meth:`CascadeCore.predict <agripatch.pipeline.core.CascadeCore.predict>`."""
        if not len(images):
            return []
        with part(self.core.times, "inputs"):
            glance, hw = self._prepare(images, glances)
        return self.core.predict(images, glance, hw, thresholds if thresholds is not None else self.manifest.thresholds,
                                 files)

    def exit_probabilities(self, images: Sequence[np.ndarray], glances: np.ndarray | None = None, *,
                            timing: np.ndarray | None = None,
                            files: Sequence[PhotoFile | None] | None = None) -> ExitOutputs:
        """Every exit for every photo (no early exit), to replay thresholds offline."""
        if not len(images):
            return self.core.exit_probabilities([], None, np.zeros((0, 2)))
        glance, hw = self._prepare(images, glances)
        return self.core.exit_probabilities(images, glance, hw, timing=timing, files=files)
