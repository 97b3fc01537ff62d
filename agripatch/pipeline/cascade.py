"""The cascade on PyTorch: AnchorNet and the downstream classifier as one early-exit predictor.

The decisions (cell selection, aggregation, exits) are :class:`~agripatch.pipeline.core.CascadeCore`'s, shared
with the ONNX runtime; this module supplies the PyTorch networks and the full-resolution crop (roi_align's
sampling as two matrix products per box, :mod:`agripatch.pipeline.crop`). :meth:`PatchPipeline.locate` and :meth:`PatchPipeline.crop` are THE selection path: the patch
stage of `agripatch train` calls them too (with its own choice of which class ranks the cells), so a change to
selection changes training and inference alike.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from agripatch.data.photos import make_glance, shrink_photos
from agripatch.io.deferred import DeferredPhoto, pixels
from agripatch.io.exposure import exposed_like
from agripatch.io.glance import PhotoFile
from agripatch.models.fuse import run_network
from agripatch.pipeline.config import CascadeConfig
from agripatch.pipeline.core import CascadeCore, Located
from agripatch.pipeline.exits import ExitOutputs
from agripatch.pipeline.inputs import ImageLike, normalize, stats, to_chw
from agripatch.pipeline.macs import count_macs
from agripatch.pipeline.prediction import PatchPrediction
from agripatch.pipeline.refusal import Refusal
from agripatch.pipeline.priors import BoxMeans, plant_mask
from agripatch.pipeline.select import crop_patches, decode_min_side
from agripatch.pipeline.severity import SeverityConfig
from agripatch.pipeline.timing import PartTimes, part

__all__ = ["FullImage", "GlanceScorer", "Located", "PatchPipeline", "PatchPrediction", "SymptomReader", "make_glance",
           "normalize", "to_chw"]


def _numpy(t: Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


@contextmanager
def _inference(module: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every submodule's own flag back (nothing to do, and no walk over the
    submodules, when all are in eval mode already, as loaded models are: the walk cost 0.2 ms a photo)."""
    flags = [(m, m.training) for m in module.modules() if m.training]
    if not flags:
        yield
        return
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


class GlanceScorer(nn.Module):
    """Everything the cascade computes from the glance, as one module (the cascade calls it and
    `agripatch export` exports it whole, so the ONNX runtime gets the same numbers):

    a 0..1 glance batch [B, 3, G, G] -> ``(logits [B, C], cam [B, C, gh, gw], features [B, D], leaf [B, N])``:
    AnchorNet on the normalised glance, its pooled features (for refusing photos unlike the training photos;
    D = 0 for an AnchorNet without ``forward_glance``) and the plant-pixel share of each of the N cells
    (:func:`~agripatch.pipeline.priors.leaf_share`, through :class:`~agripatch.pipeline.priors.BoxMeans`).
    """

    def __init__(self, anchornet: nn.Module, mean: Sequence[float], std: Sequence[float], cell_boxes: Tensor,
                 glance_size: int):
        super().__init__()
        self.anchornet = anchornet
        self.mean, self.std = tuple(mean), tuple(std)
        self.register_buffer("cell_boxes", cell_boxes.detach().float().clone(), persistent=False)
        self.cell_means = BoxMeans(self.cell_boxes, glance_size, glance_size).to(self.cell_boxes.device)

    def forward(self, glance: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(logits, cam, features, leaf)`` of a 0..1 glance batch (see the class)."""
        x = normalize(glance, self.mean, self.std)
        if hasattr(self.anchornet, "forward_glance"):
            logits, cam, features = run_network(self.anchornet, x, "forward_glance")
        else:
            logits, cam = run_network(self.anchornet, x, "forward_cam")
            features = logits.new_zeros(logits.shape[0], 0)
        return logits, cam, features, self.cell_means(plant_mask(glance))


@dataclass(frozen=True)
class FullImage:
    """The full-image exit's model (``cascade.full_image_exit``): the network, the side it reads the whole photo
    at, and its normalisation (0..1 scale)."""

    network: nn.Module
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, network: nn.Module, spec: dict) -> FullImage:
        """The full-image exit reading photos with ``network`` as its model file entry ``spec`` says (its
        ``input_size``, ``mean`` and ``std``: the baseline's)."""
        return cls(network, int(spec["input_size"]), tuple(spec["mean"]), tuple(spec["std"]))


@dataclass(frozen=True)
class SymptomReader:
    """The symptom map that measures severity (``cascade.severity``): the network and its normalisation (0..1
    scale)."""

    network: nn.Module
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, network: nn.Module, spec: dict) -> SymptomReader:
        """The reader of a model file entry ``spec`` (its ``mean`` and ``std``)."""
        return cls(network, tuple(spec["mean"]), tuple(spec["std"]))

    @classmethod
    def shipped(cls, name: str, device: torch.device | str = "cpu") -> SymptomReader:
        """The package's own symptom map ``name`` (:func:`~agripatch.models.symptom_map.shipped_symptom_map`), laid
        out for inference: what a cascade measures severity with when its model file holds no map of its own."""
        from agripatch.models.symptom_map import shipped_symptom_map

        return cls.of_map(shipped_symptom_map(name), device)

    @classmethod
    def of_map(cls, network: nn.Module, device: torch.device | str = "cpu") -> SymptomReader:
        """A symptom map as it is (e.g. tuned on a run's lesion masks), laid out for inference on ``device`` (a copy:
        ``network`` itself is left as it is)."""
        from agripatch.models.fuse import inference_model

        return cls(inference_model(network).to(device), tuple(network.cfg["mean"]),
                   tuple(network.cfg["std"]))

    def severity_config(self, config: SeverityConfig) -> SeverityConfig:
        """``config`` with this network's stride and cost terms (its MACs on three input sizes solved for
        ``a*H*W + b*(H + W) + c``), so every photo's severity cost is known without a profiler."""
        s = int(self.network.stride)
        sizes = [(8 * s, 8 * s), (8 * s, 16 * s), (16 * s, 16 * s)]
        macs = [count_macs(self.network, (1, 3, h, w)) for h, w in sizes]
        terms = np.linalg.solve(np.array([[h * w, h + w, 1.0] for h, w in sizes]), np.array(macs, np.float64))
        return config.model_copy(update={"macs_terms": [float(t) for t in terms], "stride": s})


class PatchPipeline(nn.Module):
    """AnchorNet + downstream classifier as one early-exit predictor.

    Args:
        anchornet: module with ``forward_cam(x) -> (logits [B, C], cam [B, C, gh, gw])`` and
            ``cell_boxes(height, width) -> [gh * gw, 4]`` (input pixels, row-major cells).
        classifier: module mapping normalised [N, 3, S, S] images to logits [N, C] (any S).
        config: the cascade's settings (:class:`~agripatch.pipeline.config.CascadeConfig`).
        anchornet_mean, anchornet_std, classifier_mean, classifier_std: per-channel normalisation on
            the 0..1 scale; default to ``model.cfg`` / timm's ``pretrained_cfg``.
        full_image: with ``config.full_image_exit``, the full-image model and how it reads a photo:
            :class:`FullImage` (the run's baseline).
        symptoms: with ``config.severity``, the symptom map (:class:`SymptomReader`).
    """

    def __init__(
        self,
        anchornet: nn.Module,
        classifier: nn.Module,
        config: CascadeConfig | None = None,
        *,
        anchornet_mean: Sequence[float] | None = None,
        anchornet_std: Sequence[float] | None = None,
        classifier_mean: Sequence[float] | None = None,
        classifier_std: Sequence[float] | None = None,
        full_image: FullImage | None = None,
        symptoms: SymptomReader | None = None,
    ) -> None:
        super().__init__()
        self.anchornet = anchornet
        self.classifier = classifier
        self.config = config if config is not None else CascadeConfig()
        if self.config.full_image_exit and full_image is None:
            raise ValueError("cascade.full_image_exit needs the full-image model: train the baseline stage "
                             "(stages.baseline.enabled=true), whose network reads those photos")
        self.full_image = full_image.network if full_image is not None else None  # a submodule: .to() moves it
        self.full_image_spec = full_image
        if self.config.severity is not None and symptoms is None:
            raise ValueError("cascade.severity needs a symptom map (SymptomReader)")
        self.symptom_map = symptoms.network if symptoms is not None else None  # a submodule: .to() moves it
        self.symptoms = symptoms
        self.times: PartTimes | None = None  # set a PartTimes to profile the runs (benchmarks/cascade_profile.py)
        self.refusal: Refusal | None = None  # the model file's refusal, for CascadeCore.nearest_views
        self.anchornet_mean, self.anchornet_std = stats(anchornet, anchornet_mean, anchornet_std, "anchornet")
        self.classifier_mean, self.classifier_std = stats(classifier, classifier_mean, classifier_std, "classifier")

    @property
    def device(self) -> torch.device:
        """Where the models live (the device of AnchorNet's first parameter)."""
        for p in self.anchornet.parameters():
            return p.device
        return torch.device("cpu")

    def with_classifier(self, classifier: nn.Module) -> PatchPipeline:
        """The same cascade reading patches with another classifier (the one a training stage updates)."""
        return self._rebuilt(classifier, self.config, self.full_image_spec)

    def with_full_image(self, full_image: FullImage | None) -> PatchPipeline:
        """The same cascade with the full-image exit reading photos with ``full_image`` (None: without the exit).
        The exits change, so the thresholds and temperatures are dropped: calibrate the result."""
        config = self.config.model_copy(update={"full_image_exit": full_image is not None, "thresholds": None,
                                                "temperatures": None})
        return self._rebuilt(self.classifier, config, full_image)

    def with_severity(self, symptoms: SymptomReader | None, config: SeverityConfig | None = None) -> PatchPipeline:
        """The same cascade measuring severity with ``symptoms`` (``config``: its settings, default
        :class:`~agripatch.pipeline.severity.SeverityConfig`; None: without severity). The diagnosis is unchanged, unless
        the cascade ranks its cells by the map (``cell_prior="symptom"``)."""
        if symptoms is None and self.config.cell_prior == "symptom":
            raise ValueError("this cascade ranks its cells by the symptom map (cell_prior 'symptom'): it cannot run "
                             "without severity")
        severity = None if symptoms is None else symptoms.severity_config(config or SeverityConfig())
        return self._rebuilt(self.classifier, self.config.model_copy(update={"severity": severity}),
                             self.full_image_spec, symptoms)

    def measuring_severity(self, severity: bool | None) -> PatchPipeline:
        """This cascade measuring severity as asked: True keeps its own symptom map or adds the package's
        (:meth:`SymptomReader.shipped`), False drops it, None leaves the model file's choice."""
        if severity is None or severity == (self.config.severity is not None):
            return self
        return self.with_severity(SymptomReader.shipped(SeverityConfig().map, self.device) if severity else None)

    def with_symptom_prior(self, side: int | None = None) -> PatchPipeline:
        """This cascade ranking its cells by the symptom map (``cell_prior="symptom"``): its own map, else the
        package's (severity is then measured too), read at long side ``side`` (None: the map's own side). What the
        networks say is unchanged; which patches they read moves (benchmarks/README.md, "Patches on symptoms
        without masks")."""
        pipeline = self.measuring_severity(True)
        severity = pipeline.config.severity
        if side is not None and side != severity.side:
            severity = severity.model_copy(update={"side": side, "source": f"{severity.source}; the map read at {side} px"})
        config = pipeline.config.model_copy(update={"cell_prior": "symptom", "severity": severity})
        return pipeline._rebuilt(pipeline.classifier, config, pipeline.full_image_spec)

    def _rebuilt(self, classifier: nn.Module, config: CascadeConfig, full_image: FullImage | None,
                 symptoms: SymptomReader | None = None) -> PatchPipeline:
        symptoms = (symptoms or self.symptoms) if config.severity is not None else None
        rebuilt = PatchPipeline(self.anchornet, classifier, config, anchornet_mean=self.anchornet_mean,
                                anchornet_std=self.anchornet_std, classifier_mean=self.classifier_mean,
                                classifier_std=self.classifier_std, full_image=full_image, symptoms=symptoms)
        rebuilt.refusal = self.refusal
        return rebuilt

    def decode_min_side(self) -> int:
        """Shorter side a photo must keep when decoded so that no patch loses pixels (see ``select``), nor the
        full-image exit's whole photo (at least that model's input size)."""
        cfg = self.config
        side = decode_min_side(cfg.glance_size, cfg.patch_size, self.anchornet.receptive_field.size)
        if cfg.severity is not None:  # the symptom map's input is never an upscaled reduced decode either
            side = max(side, cfg.severity.side)
        return max(side, self.full_image_spec.size) if cfg.full_image_exit else side

    def exit_macs(self) -> np.ndarray:
        """Cumulative MACs per photo of stopping at each exit, [n_exits] int64.

        Exit 0 costs the glance (AnchorNet's ``forward_cam``, or the classifier at ``glance_size``);
        later exits add AnchorNet when it is not the glance, and one classifier run at ``patch_size``
        per patch read; the full-image exit adds the full-image model at its size. Box selection and
        cropping are not multiply-accumulates and count zero.
        """
        cfg = self.config
        g, s = (1, 3, cfg.glance_size, cfg.glance_size), (1, 3, cfg.patch_size, cfg.patch_size)
        anchor = count_macs(self.anchornet, g, device=self.device, method="forward_cam")
        patch = count_macs(self.classifier, s, device=self.device)
        if cfg.glance == "anchornet":
            first, base = anchor, anchor
        else:
            first = count_macs(self.classifier, g, device=self.device)
            base = first + anchor
        costs = [first] + [base + i * patch for i in range(1, cfg.k + 1)]
        if cfg.full_image_exit:
            costs.append(costs[-1] + self.full_image_macs())
        return np.array(costs, dtype=np.int64)

    def full_image_macs(self) -> int | None:
        """MACs a photo of the full-image exit's model at its size (None without a full-image exit): the exit's
        cost, and what the default exits may spend at most (``choose_thresholds``'s ``ceiling_macs``)."""
        if not self.config.full_image_exit:
            return None
        size = self.full_image_spec.size
        return count_macs(self.full_image, (1, 3, size, size), device=self.device)

    # ---------------------------------------------------------------- the selection path

    def _prepare(self, originals: Sequence[ImageLike] | Tensor,
                 glance_batch: Tensor | None) -> tuple[list[Tensor], Tensor, np.ndarray]:
        """Photos as CHW tensors (a :class:`~agripatch.io.deferred.DeferredPhoto` kept as it is, for the core to
        decode if it reads the photo), the glance batch (0..1, on the model device) and sizes [B, 2]."""
        if glance_batch is None:
            originals = [pixels(o) for o in originals]
        images = [o if isinstance(o, DeferredPhoto) else to_chw(o) for o in originals]
        size = self.config.glance_size
        if glance_batch is None:
            glance = make_glance(images, size, self.device)
        else:
            if glance_batch.shape != (len(images), 3, size, size):
                raise ValueError(
                    f"glance_batch must be [{len(images)}, 3, {size}, {size}], got {tuple(glance_batch.shape)}"
                )
            glance = glance_batch.to(self.device)
            glance = glance.float() / 255.0 if glance.dtype == torch.uint8 else glance.float()
        hw = np.array([img.hw if isinstance(img, DeferredPhoto) else (img.shape[1], img.shape[2]) for img in images],
                      dtype=np.float64).reshape(-1, 2)
        return images, glance, hw

    def glance_scorer(self) -> GlanceScorer:
        """The glance's computations as one module (shares AnchorNet's weights)."""
        size = self.config.glance_size
        boxes = self.anchornet.cell_boxes(size, size).to(self.device)
        return GlanceScorer(self.anchornet, self.anchornet_mean, self.anchornet_std, boxes, size)

    def core(self) -> CascadeCore:
        """The backend-neutral cascade over these modules (:mod:`agripatch.pipeline.core`)."""
        scorer = self.glance_scorer()
        return CascadeCore(self.config, _TorchNetworks(self, scorer), _numpy(scorer.cell_boxes), self.exit_macs(),
                           times=self.times, refusal=self.refusal)

    @torch.no_grad()
    def locate(
        self,
        originals: Sequence[ImageLike] | Tensor,
        glance_batch: Tensor | None = None,
        *,
        rank_by: Tensor | np.ndarray | None = None,
    ) -> Located:
        """Where to look in each photo: AnchorNet's K cells and their boxes in the photo's own pixels.

        ``rank_by`` ([B] class indices) ranks each photo's cells by that class's map instead of the
        config's ``score_mode``: training ranks by the true or a random class (``train_selection``).
        """
        with _inference(self.anchornet):
            images, glance, hw = self._prepare(originals, glance_batch)
            if rank_by is not None:
                rank_by = np.asarray(rank_by.cpu() if isinstance(rank_by, Tensor) else rank_by, np.int64).reshape(-1)
                if rank_by.size != len(images):
                    raise ValueError(f"rank_by needs one class per photo ({len(images)}), got {rank_by.size}")
            core = self.core()
            symptoms = core.symptom_maps(images, hw)[1] if self.config.cell_prior == "symptom" else None
            return core.locate(glance, hw, np.arange(len(images)), rank_by, symptoms)

    def crop(self, originals: Sequence[ImageLike] | Tensor, located: Located) -> Tensor:
        """Patches [R, K, 3, S, S] of every located photo, cut at full resolution from ``originals`` (the whole
        batch) and normalised for the classifier."""
        return _TorchNetworks(self, None).crop([originals[int(r)] for r in located.rows], located.boxes)

    # ---------------------------------------------------------------- predictions

    @torch.no_grad()
    def predict(
        self,
        originals: Sequence[ImageLike] | Tensor,
        glance_batch: Tensor | None = None,
        *,
        thresholds: Sequence[float] | None = None,
        files: Sequence[PhotoFile | None] | None = None,
    ) -> list[PatchPrediction]:
        """Classify full-resolution photos with early exits.

        Args:
            originals: photos at full resolution, HWC uint8 RGB numpy arrays or [3, H, W] tensors
                (uint8, or float in 0..1); sizes may differ.
            glance_batch: optional precomputed glance input [B, 3, glance, glance], uint8 or float
                0..1, NOT normalised (e.g. resized by a data loader's workers); by default the photos
                are resized here with :func:`make_glance`.
            thresholds: override the config's exit thresholds for this call (1 or k + 1 values).
            files: optional, the file each photo was decoded from (None for in-memory ones), so the full-image
                exit makes its input from the file as its network's training did
                (:func:`agripatch.io.glance.whole_photo`).

        Returns:
            One :class:`PatchPrediction` per photo, in order.
        """
        thresholds = thresholds if thresholds is not None else self.config.exit_thresholds()
        with _inference(self):
            with part(self.times, "inputs"):
                images, glance, hw = self._prepare(originals, glance_batch)
            return self.core().predict(images, glance, hw, thresholds, files)

    @torch.no_grad()
    def exit_probabilities(
        self,
        originals: Sequence[ImageLike] | Tensor,
        glance_batch: Tensor | None = None,
        *,
        timing: np.ndarray | None = None,
        files: Sequence[PhotoFile | None] | None = None,
    ) -> ExitOutputs:
        """Run every exit for every photo (no early exit) and record each exit's prediction
        (:meth:`CascadeCore.exit_probabilities <agripatch.pipeline.core.CascadeCore.exit_probabilities>`;
        ``files`` as in :meth:`predict`)."""
        with _inference(self):
            images, glance, hw = self._prepare(originals, glance_batch)
            return self.core().exit_probabilities(images, glance, hw, timing=timing, files=files)


class _TorchNetworks:
    """:class:`~agripatch.pipeline.core.Networks` on PyTorch modules: the glance scorer, the classifier and
    torchvision's ``roi_align`` for the crop, on the pipeline's device."""

    def __init__(self, pipeline: PatchPipeline, scorer: GlanceScorer | None):
        self.pipeline = pipeline
        self.scorer = scorer

    def score_glance(self, glance: Tensor, rows: np.ndarray) -> tuple[np.ndarray, ...]:
        picked = glance[torch.from_numpy(rows).to(glance.device)]
        return tuple(_numpy(t) for t in self.scorer(picked))

    def glance_views(self, glance: Tensor, rows: np.ndarray, turns: Sequence[int], exposure: float) -> Tensor:
        picked = glance[torch.from_numpy(rows).to(glance.device)]
        views = [picked.rot90(int(k), (2, 3)) for k in turns]
        if exposure > 0:
            views.append(torch.from_numpy(exposed_like(_numpy(picked), exposure)).to(glance.device, glance.dtype))
        return torch.cat(views).contiguous()

    def classify_glance(self, glance: Tensor) -> np.ndarray:
        p = self.pipeline
        return _numpy(run_network(p.classifier, normalize(glance, p.classifier_mean, p.classifier_std)))

    def crop(self, images: Sequence[ImageLike | Tensor], boxes: np.ndarray, slot: int | None = None) -> Tensor:
        p, cfg = self.pipeline, self.pipeline.config
        patches = crop_patches([to_chw(image) for image in images], torch.from_numpy(np.asarray(boxes, np.float32)),
                               cfg.patch_size, p.classifier_mean, p.classifier_std, device=p.device, slot=slot)
        return patches if slot is not None else patches.view(len(images), cfg.k, 3, cfg.patch_size, cfg.patch_size)

    def classify(self, patches: Tensor) -> np.ndarray:
        return _numpy(run_network(self.pipeline.classifier, patches))

    def classify_photo(self, images: Sequence[ImageLike | Tensor], files: Sequence[PhotoFile | None]) -> np.ndarray:
        p = self.pipeline
        spec = p.full_image_spec
        x = make_glance([to_chw(image) for image in images], spec.size, p.device, files)
        return _numpy(run_network(p.full_image, normalize(x, spec.mean, spec.std)))

    def map_symptoms(self, images: Sequence[ImageLike | Tensor], height: int, width: int) -> np.ndarray:
        p = self.pipeline
        x = shrink_photos([to_chw(image) for image in images], height, width, p.device)
        return _numpy(run_network(p.symptom_map, normalize(x, p.symptoms.mean, p.symptoms.std)))
