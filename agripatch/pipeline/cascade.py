"""Glance + patches cascade: classify a crop photo cheaply, look closer only when unsure.

Stage 0 (the glance) classifies the whole photo resized to ``glance_size``: either with
AnchorNet's own logits (``glance="anchornet"``; its CAM then comes for free) or with the
downstream classifier (``glance="classifier"``). Images whose top softmax probability reaches
``thresholds[0]`` stop there. For the others AnchorNet's CAM ranks its grid cells, K cells are
kept by greedy IoU suppression (:func:`~agripatch.pipeline.select.select_cells`), their boxes
are mapped to the ORIGINAL photo's pixels and cut from it at full resolution; stage s = 1..K
classifies patch s, only for the images still running (batched across them), and the images
whose aggregated prediction reaches ``thresholds[s]`` stop. Stage K always stops.

Aggregation (``aggregate="mean_logits"``, the default): the prediction after stage s is
``softmax(mean(logits of the glance and patches 1..s))``. The glance counts as one stage, so
every look weighs the same. The mean of logits is the renormalised geometric mean of the
views' softmaxes (a product of experts): views that agree sharpen the prediction, so the
confidence the exit rule reads can grow as consistent evidence accumulates, and a view that
rules a class out pulls it down. ``aggregate="mean_probs"`` averages softmax probabilities
instead (never more confident than its most confident view). With ``glance="anchornet"`` the
glance logits come from another network than the patch logits; both must share the class
list and should be calibrated comparably.

Evaluation does not need to re-run models for every threshold:
:meth:`PatchPipeline.stage_probabilities` records every stage's probabilities once, and
:func:`simulate_exits`, :func:`sweep_thresholds` and :func:`thresholds_for_budget` replay the
exits in numpy, bit-for-bit the decisions :meth:`PatchPipeline.predict` makes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch
from torch import Tensor, nn

from agripatch.data.photos import make_glance
from agripatch.errors import AgripatchError
from agripatch.pipeline.macs import count_macs
from agripatch.pipeline.select import (
    Selection,
    crop_patches,
    map_boxes,
    score_map,
    select_cells,
)

__all__ = [
    "NEVER_EXIT",
    "CascadeConfig",
    "PatchPipeline",
    "PatchPrediction",
    "StageOutputs",
    "ThresholdChoice",
    "accuracy_preserving_thresholds",
    "make_glance",
    "simulate_exits",
    "sweep_thresholds",
    "thresholds_for_budget",
    "to_chw",
]

ImageLike = Union[np.ndarray, Tensor]

#: A threshold no softmax probability reaches: the stage never exits early.
NEVER_EXIT = math.inf

_GLANCES = ("anchornet", "classifier")
_AGGREGATES = ("mean_logits", "mean_probs")


@dataclass
class CascadeConfig:
    """How the cascade looks and when it stops.

    Attributes:
        k: patches per image (stages 1..k after the glance).
        glance_size: side of the square glance input (the whole photo, resized, aspect ratio
            not kept); AnchorNet always runs at this size.
        patch_size: side of the square patches fed to the classifier.
        iou_threshold: suppression threshold between the fixed-size cell boxes (0.25 drops
            grid neighbours whose receptive fields overlap heavily, keeps diagonal ones).
        glance: ``"anchornet"`` (AnchorNet's logits are the stage-0 prediction) or
            ``"classifier"`` (the classifier on the glance image; AnchorNet then runs only for
            the images that go on).
        thresholds: k + 1 exit thresholds on the top softmax probability, one per stage; the
            last one is ignored (stage k always exits). Default: 0.9 for every stage.
        score_mode: how cells are ranked, see :func:`~agripatch.pipeline.select.score_map`
            (``"predicted"`` uses AnchorNet's own predicted class).
        aggregate: ``"mean_logits"`` or ``"mean_probs"`` over the stages seen so far.
    """

    k: int = 3
    glance_size: int = 224
    patch_size: int = 224
    iou_threshold: float = 0.25
    glance: str = "anchornet"
    thresholds: list[float] | None = None
    score_mode: str | int = "predicted"
    aggregate: str = "mean_logits"

    def __post_init__(self) -> None:
        if self.k < 1:
            raise ValueError(f"k must be >= 1, got {self.k}")
        if self.glance_size < 1 or self.patch_size < 1:
            raise ValueError("glance_size and patch_size must be positive")
        if not 0.0 <= self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [0, 1], got {self.iou_threshold}")
        if self.glance not in _GLANCES:
            raise ValueError(f"glance must be one of {_GLANCES}, got {self.glance!r}")
        if self.aggregate not in _AGGREGATES:
            raise ValueError(f"aggregate must be one of {_AGGREGATES}, got {self.aggregate!r}")
        if self.thresholds is None:
            self.thresholds = [0.9] * (self.k + 1)
        self.thresholds = _check_thresholds(self.thresholds, self.k + 1)


def _check_thresholds(thresholds: Sequence[float], n_stages: int) -> list[float]:
    values = [float(t) for t in thresholds]
    if len(values) != n_stages:
        raise ValueError(f"need {n_stages} thresholds (glance + k patches), got {len(values)}")
    if any(math.isnan(t) for t in values):
        raise ValueError("thresholds must not be NaN")
    return values


@dataclass
class PatchPrediction:
    """The cascade's answer for one photo.

    Attributes:
        label: predicted class index.
        probs: [C] aggregated probabilities at the exit stage.
        stage: exit stage, 0 (glance) .. k (all patches).
        boxes: [k, 4] the selected boxes in ORIGINAL photo pixels (x0, y0, x1, y1), all k even
            when fewer were read; [0, 4] when AnchorNet never ran (``glance="classifier"`` and
            an exit at stage 0).
        box_scores: [k] cell scores of those boxes.
        cells: [k] their row-major grid cell indices.
        patch_logits: [stage, C] classifier logits of the patches actually read.
        cam: [gh, gw] the cell score map used for the selection (for overlays), or None.
        macs: multiply-accumulates actually spent on this photo (see ``stage_macs``).
    """

    label: int
    probs: np.ndarray
    stage: int
    boxes: np.ndarray
    box_scores: np.ndarray
    cells: np.ndarray
    patch_logits: np.ndarray
    cam: np.ndarray | None
    macs: int


@dataclass
class StageOutputs:
    """Every stage's prediction for a set of photos, for replaying exits offline.

    ``probs`` [N, k + 1, C] float32 are the aggregated probabilities after each stage and
    ``stage_macs`` [k + 1] int64 the cumulative cost of exiting at each stage.
    """

    probs: np.ndarray
    stage_macs: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[StageOutputs]) -> StageOutputs:
        """Join batches (they must share the same per-stage cost)."""
        if not parts:
            raise ValueError("nothing to concatenate")
        for part in parts[1:]:
            if not np.array_equal(part.stage_macs, parts[0].stage_macs):
                raise ValueError("batches with different stage costs cannot be joined")
        return cls(np.concatenate([p.probs for p in parts]), parts[0].stage_macs.copy())


def to_chw(image: ImageLike) -> Tensor:
    """One photo as a [3, H, W] tensor, uint8 (0..255) or float (0..1), without copying.

    Accepts an HWC RGB numpy array (what PIL / OpenCV-after-cvtColor give) or a CHW tensor.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"numpy photos must be HWC RGB, got shape {image.shape}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    elif not isinstance(image, Tensor):
        raise TypeError(f"photos must be numpy arrays or tensors, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"tensor photos must be [3, H, W], got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise ValueError(f"photos must be uint8 or float, got {image.dtype}")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"empty photo of shape {tuple(image.shape)}")
    return image


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Per-channel (x - mean) / std on a [B, 3, H, W] batch in 0..1: the one input normalisation."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def _stats(
    model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None, name: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation of a model: explicit > ``model.cfg`` > timm's ``pretrained_cfg``."""
    if mean is None or std is None:
        for attr in ("cfg", "pretrained_cfg", "default_cfg"):
            cfg = getattr(model, attr, None)
            if isinstance(cfg, dict) and "mean" in cfg and "std" in cfg:
                mean = cfg["mean"] if mean is None else mean
                std = cfg["std"] if std is None else std
                break
    if mean is None or std is None:
        raise ValueError(f"cannot tell the {name}'s normalisation: pass {name}_mean and {name}_std")
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3 or any(v <= 0 for v in std):
        raise ValueError(f"{name} mean/std need 3 values and positive std, got {mean} / {std}")
    return mean, std


def _accumulate(total: Tensor | None, logits: Tensor, aggregate: str) -> Tensor:
    term = logits.float() if aggregate == "mean_logits" else torch.softmax(logits.float(), dim=1)
    return term.clone() if total is None else total + term


def _finish(total: Tensor, n_stages: int, aggregate: str) -> Tensor:
    mean = total / n_stages
    return torch.softmax(mean, dim=1) if aggregate == "mean_logits" else mean


@contextmanager
def _inference(module: nn.Module) -> Iterator[None]:
    """Eval mode for the duration, then every submodule's own flag back."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


@dataclass
class _Looked:
    """What the glance and the selection produced for a batch (internal)."""

    rows: Tensor  # [R] images that got a selection (long, on CPU)
    selection: Selection | None  # for ``rows``
    boxes: Tensor | None  # [R, K, 4] original pixels, CPU float32
    maps: Tensor | None  # [R, gh, gw]


class PatchPipeline(nn.Module):
    """AnchorNet + downstream classifier as one early-exit predictor.

    Args:
        anchornet: module with ``forward_cam(x) -> (logits [B, C], cam [B, C, gh, gw])`` and
            ``cell_boxes(height, width) -> [gh * gw, 4]`` (input pixels, row-major cells).
        classifier: module mapping normalised [N, 3, S, S] images to logits [N, C] (any S).
        config: the cascade's settings.
        anchornet_mean, anchornet_std, classifier_mean, classifier_std: per-channel
            normalisation on the 0..1 scale; default to ``model.cfg`` / timm's
            ``pretrained_cfg``.
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
    ) -> None:
        super().__init__()
        self.anchornet = anchornet
        self.classifier = classifier
        self.config = config if config is not None else CascadeConfig()
        self.anchornet_mean, self.anchornet_std = _stats(anchornet, anchornet_mean, anchornet_std, "anchornet")
        self.classifier_mean, self.classifier_std = _stats(classifier, classifier_mean, classifier_std, "classifier")

    @property
    def device(self) -> torch.device:
        """Where the models live (the device of AnchorNet's first parameter)."""
        for p in self.anchornet.parameters():
            return p.device
        return torch.device("cpu")

    def stage_macs(self) -> np.ndarray:
        """Cumulative MACs per photo of exiting at stage 0..k, [k + 1] int64.

        Stage 0 costs the glance (AnchorNet's ``forward_cam``, or the classifier at
        ``glance_size``); later stages add AnchorNet when it is not the glance, and one
        classifier run at ``patch_size`` per patch read. Box selection and cropping are not
        multiply-accumulates and count zero.
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
        return np.array([first] + [base + i * patch for i in range(1, cfg.k + 1)], dtype=np.int64)

    # ---------------------------------------------------------------- shared steps

    def _prepare(
        self, originals: Sequence[ImageLike] | Tensor, glance_batch: Tensor | None
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Photos as CHW tensors, the glance batch (0..1, on the model device) and sizes [B, 2]."""
        images = [to_chw(o) for o in originals]
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
        hw = torch.tensor([[img.shape[1], img.shape[2]] for img in images], dtype=torch.float64).reshape(-1, 2)
        return images, glance, hw

    def _glance(self, glance: Tensor, hw: Tensor) -> tuple[Tensor, _Looked | None]:
        """Stage-0 logits for every photo; with an AnchorNet glance also every photo's cells."""
        if self.config.glance == "anchornet":
            logits, cam = self._anchor(glance)
            return logits, self._from_cam(logits, logits, cam, torch.arange(glance.shape[0]), hw)
        return self.classifier(normalize(glance, self.classifier_mean, self.classifier_std)), None

    def _select(self, glance: Tensor, hw: Tensor, glance_logits: Tensor, rows: Tensor) -> _Looked:
        """Classifier glance: run AnchorNet and the selection on the photos ``rows`` only."""
        if rows.numel() == 0:
            return _Looked(rows, None, None, None)
        anchor_logits, cam = self._anchor(glance[rows.to(glance.device)])
        return self._from_cam(glance_logits, anchor_logits, cam, rows, hw)

    def _anchor(self, glance: Tensor) -> tuple[Tensor, Tensor]:
        return self.anchornet.forward_cam(normalize(glance, self.anchornet_mean, self.anchornet_std))

    def _from_cam(self, glance_logits: Tensor, anchor_logits: Tensor, cam: Tensor, rows: Tensor, hw: Tensor) -> _Looked:
        """Score map, K cells and their boxes in original pixels for the photos ``rows``."""
        cfg = self.config
        if anchor_logits.shape[1] != glance_logits.shape[1]:
            raise ValueError(f"AnchorNet has {anchor_logits.shape[1]} classes, the classifier {glance_logits.shape[1]}")
        maps = score_map(cam, anchor_logits, cfg.score_mode)
        cell_boxes = self.anchornet.cell_boxes(cfg.glance_size, cfg.glance_size)
        if tuple(cell_boxes.shape) != (maps.shape[1] * maps.shape[2], 4):
            raise ValueError(f"cell_boxes gave {tuple(cell_boxes.shape)} for a {tuple(maps.shape[1:])} grid")
        selection = select_cells(maps.flatten(1), cell_boxes.to(maps.device), cfg.k, cfg.iou_threshold)
        size = (cfg.glance_size, cfg.glance_size)
        boxes = map_boxes(selection.boxes.detach().cpu().float(), size, hw[rows])
        return _Looked(rows, selection, boxes, maps)

    def _crop(self, images: list[Tensor], looked: _Looked, rows: Tensor) -> Tensor:
        """Patches [len(rows), K, 3, S, S] of the photos ``rows`` (a subset of ``looked.rows``)."""
        cfg = self.config
        position = {int(r): i for i, r in enumerate(looked.rows)}
        pos = torch.tensor([position[int(r)] for r in rows], dtype=torch.long)
        patches = crop_patches(
            [images[int(r)] for r in rows],
            looked.boxes[pos],
            cfg.patch_size,
            self.classifier_mean,
            self.classifier_std,
            device=self.device,
        )
        return patches.view(len(rows), cfg.k, 3, cfg.patch_size, cfg.patch_size)

    # ---------------------------------------------------------------- public API

    @torch.no_grad()
    def predict(
        self,
        originals: Sequence[ImageLike] | Tensor,
        glance_batch: Tensor | None = None,
        *,
        thresholds: Sequence[float] | None = None,
    ) -> list[PatchPrediction]:
        """Classify full-resolution photos with early exits.

        Args:
            originals: photos at full resolution, HWC uint8 RGB numpy arrays or [3, H, W]
                tensors (uint8, or float in 0..1); sizes may differ.
            glance_batch: optional precomputed glance input [B, 3, glance, glance], uint8 or
                float 0..1, NOT normalised (e.g. resized by a data loader's workers); by default
                the photos are resized here with :func:`make_glance`.
            thresholds: override ``config.thresholds`` for this call (k + 1 values).

        Returns:
            One :class:`PatchPrediction` per photo, in order.
        """
        cfg = self.config
        thr_list = _check_thresholds(thresholds if thresholds is not None else cfg.thresholds, cfg.k + 1)
        with _inference(self):
            images, glance, hw = self._prepare(originals, glance_batch)
            b = len(images)
            if b == 0:
                return []
            costs = self.stage_macs()
            thr = torch.tensor(thr_list, dtype=torch.float32)

            glance_logits, looked = self._glance(glance, hw)
            total = _accumulate(None, glance_logits, cfg.aggregate).cpu()
            probs = _finish(total, 1, cfg.aggregate)
            final = probs.clone()
            stage = torch.full((b,), -1, dtype=torch.long)
            done = probs.max(dim=1).values >= thr[0]
            stage[done] = 0

            running = (~done).nonzero().flatten()
            if looked is None:
                looked = self._select(glance, hw, glance_logits, running)
            patch_logits: list[list[Tensor]] = [[] for _ in range(b)]
            if running.numel():
                patches = self._crop(images, looked, running)  # [R, K, 3, S, S]
                slot = torch.full((b,), -1, dtype=torch.long)
                slot[running] = torch.arange(running.numel())
                for s in range(1, cfg.k + 1):
                    if running.numel() == 0:
                        break
                    logits = self.classifier(patches[slot[running], s - 1]).float().cpu()
                    for r, row_logits in zip(running.tolist(), logits):
                        patch_logits[r].append(row_logits)
                    total[running] = _accumulate(total[running], logits, cfg.aggregate)
                    probs = _finish(total[running], s + 1, cfg.aggregate)
                    stop = probs.max(dim=1).values >= thr[s]
                    if s == cfg.k:  # the last stage always exits
                        stop[:] = True
                    final[running[stop]] = probs[stop]
                    stage[running[stop]] = s
                    running = running[~stop]

        return self._assemble(final, stage, costs, looked, patch_logits)

    def _assemble(
        self,
        final: Tensor,
        stage: Tensor,
        costs: np.ndarray,
        looked: _Looked,
        patch_logits: list[list[Tensor]],
    ) -> list[PatchPrediction]:
        c = final.shape[1]
        position = {int(r): i for i, r in enumerate(looked.rows)}
        out = []
        for i in range(final.shape[0]):
            j = position.get(i)
            if j is None:
                boxes, scores = np.zeros((0, 4), np.float32), np.zeros(0, np.float32)
                cells, cam = np.zeros(0, np.int64), None
            else:
                sel = looked.selection
                boxes = looked.boxes[j].numpy().astype(np.float32)
                scores = sel.scores[j].float().cpu().numpy()
                cells = sel.indices[j].cpu().numpy()
                cam = looked.maps[j].float().cpu().numpy()
            logits = torch.stack(patch_logits[i]).numpy() if patch_logits[i] else np.zeros((0, c), np.float32)
            probs = final[i].numpy()
            s = int(stage[i])
            out.append(
                PatchPrediction(
                    label=int(final[i].argmax()),
                    probs=probs,
                    stage=s,
                    boxes=boxes,
                    box_scores=scores,
                    cells=cells,
                    patch_logits=logits,
                    cam=cam,
                    macs=int(costs[s]),
                )
            )
        return out

    @torch.no_grad()
    def stage_probabilities(
        self, originals: Sequence[ImageLike] | Tensor, glance_batch: Tensor | None = None
    ) -> StageOutputs:
        """Run every stage for every photo (no early exit) and record each stage's prediction.

        Returns :class:`StageOutputs` with probabilities [N, k + 1, C] (the same aggregation as
        :meth:`predict`) and the cumulative cost per stage, so :func:`simulate_exits` can replay
        any thresholds without running a model again.
        """
        cfg = self.config
        with _inference(self):
            images, glance, hw = self._prepare(originals, glance_batch)
            costs = self.stage_macs()
            if not images:
                return StageOutputs(np.zeros((0, cfg.k + 1, 0), np.float32), costs)
            rows = torch.arange(len(images))
            glance_logits, looked = self._glance(glance, hw)
            if looked is None:
                looked = self._select(glance, hw, glance_logits, rows)
            total = _accumulate(None, glance_logits, cfg.aggregate).cpu()
            stages = [_finish(total, 1, cfg.aggregate)]
            patches = self._crop(images, looked, rows)
            for s in range(1, cfg.k + 1):
                logits = self.classifier(patches[:, s - 1]).float().cpu()
                total = _accumulate(total, logits, cfg.aggregate)
                stages.append(_finish(total, s + 1, cfg.aggregate))
        return StageOutputs(torch.stack(stages, dim=1).numpy(), costs)


# -------------------------------------------------------------------- offline exit replay


def _exit_thresholds(thresholds: float | Sequence[float], n_stages: int, dtype: np.dtype) -> np.ndarray:
    values = [float(thresholds)] * n_stages if np.isscalar(thresholds) else _check_thresholds(thresholds, n_stages)
    if any(math.isnan(v) for v in values):
        raise ValueError("thresholds must not be NaN")
    # Compare in the probabilities' own precision, as predict() does in float32.
    return np.asarray(values, dtype=dtype)


def simulate_exits(
    stage_probs: np.ndarray,
    stage_macs: np.ndarray,
    thresholds: float | Sequence[float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Replay the cascade's exits: per photo the prediction, exit stage and MACs spent.

    A photo exits at the first stage s whose top probability is ``>= thresholds[s]`` (a single
    float means the same threshold at every stage); the last stage always exits. Comparisons
    are made in the probabilities' dtype, like :meth:`PatchPipeline.predict`, so replaying
    :meth:`PatchPipeline.stage_probabilities` reproduces its decisions exactly.

    Args:
        stage_probs: [N, k + 1, C] per-stage probabilities.
        stage_macs: [k + 1] cumulative cost of exiting at each stage, or [N, k + 1].
        thresholds: one float, or k + 1 floats.

    Returns:
        ``(pred [N] int64, exit_stage [N] int64, macs [N] int64)``.
    """
    replay = _Replay.of(stage_probs, stage_macs)
    return replay.run(thresholds)


@dataclass
class _Replay:
    """Per-stage confidence and prediction, computed once for many threshold replays."""

    conf: np.ndarray  # [N, S] top probability per stage
    pred: np.ndarray  # [N, S] arg-max class per stage
    costs: np.ndarray  # [S] or [N, S]

    @classmethod
    def of(cls, stage_probs: np.ndarray, stage_macs: np.ndarray) -> _Replay:
        probs = np.asarray(stage_probs)
        if probs.ndim != 3:
            raise ValueError(f"stage_probs must be [N, k + 1, C], got shape {probs.shape}")
        n, n_stages, _ = probs.shape
        costs = np.asarray(stage_macs)
        if costs.shape not in ((n_stages,), (n, n_stages)):
            raise ValueError(f"stage_macs must be [{n_stages}] or [{n}, {n_stages}], got {costs.shape}")
        if not np.issubdtype(probs.dtype, np.floating):
            probs = probs.astype(np.float64)
        return cls(probs.max(axis=2), probs.argmax(axis=2).astype(np.int64), costs)

    def run(self, thresholds: float | Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n, n_stages = self.conf.shape
        thr = _exit_thresholds(thresholds, n_stages, self.conf.dtype)
        hits = self.conf >= thr[None, :]
        hits[:, -1] = True
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
    stage_macs: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    grid: Iterable[float | Sequence[float]] | None = None,
) -> list[dict]:
    """Accuracy and mean cost for each threshold of ``grid`` (accuracy-vs-MACs curves).

    Each grid item is one threshold shared by all stages, or a list of k + 1 per-stage
    thresholds; the default grid is 0, 0.05, .., 1 and :data:`NEVER_EXIT`.

    Returns:
        One dict per item: ``threshold``, ``accuracy``, ``mean_macs`` and ``exit_histogram``
        (photos exiting at each stage 0..k).
    """
    replay = _Replay.of(stage_probs, stage_macs)
    y = _labels(labels, replay.conf.shape[0])
    if grid is None:
        grid = [round(0.05 * i, 2) for i in range(21)] + [NEVER_EXIT]
    return [replay.evaluate(t, y) for t in grid]


@dataclass
class ThresholdChoice:
    """The shared exit threshold picked for a MAC budget.

    ``thresholds`` is ready for :class:`CascadeConfig` (k + 1 copies of ``threshold``);
    ``accuracy`` is None when no labels were given.
    """

    threshold: float
    thresholds: list[float]
    mean_macs: float
    accuracy: float | None
    exit_histogram: list[int]


def thresholds_for_budget(
    stage_probs: np.ndarray,
    stage_macs: np.ndarray,
    budget_macs: float,
    labels: Sequence[int] | np.ndarray | None = None,
    *,
    max_candidates: int = 2048,
) -> ThresholdChoice:
    """Pick one threshold, shared by all stages, whose mean MACs per photo fit ``budget_macs``.

    Raising a shared threshold only delays exits, so mean cost grows with it; the candidates
    are the observed top probabilities themselves (every point where a decision flips; at most
    ``max_candidates`` of them, evenly spaced quantiles beyond), plus 0 and
    :data:`NEVER_EXIT`. With ``labels`` the most accurate candidate within budget wins (ties:
    the cheaper one); without labels the most expensive one within budget wins, i.e. only the
    most confident photos exit early and the budget is spent on the least confident ones.

    Raises:
        ValueError: when even exiting every photo at the glance exceeds the budget.
    """
    probs = np.asarray(stage_probs)
    if probs.ndim != 3 or probs.shape[0] == 0:
        raise ValueError(f"stage_probs must be a non-empty [N, k + 1, C], got shape {probs.shape}")
    replay = _Replay.of(probs, stage_macs)
    y = _labels(labels, probs.shape[0])
    conf = np.unique(replay.conf[:, :-1].astype(np.float64))
    if conf.size > max_candidates:
        conf = np.unique(np.quantile(conf, np.linspace(0.0, 1.0, max_candidates), method="nearest"))
    candidates = np.concatenate([[0.0], conf, [NEVER_EXIT]])

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
        cheapest = float(np.asarray(stage_macs)[..., 0].mean())
        raise ValueError(f"budget {budget_macs:.0f} MACs is below the glance alone ({cheapest:.0f} MACs per photo)")
    n_stages = probs.shape[1]
    t = float(best["threshold"])
    return ThresholdChoice(t, [t] * n_stages, best["mean_macs"], best["accuracy"], best["exit_histogram"])


def accuracy_preserving_thresholds(
    stage_probs: np.ndarray,
    stage_macs: np.ndarray,
    labels: Sequence[int] | np.ndarray,
    *,
    tolerance: float = 0.005,
) -> ThresholdChoice:
    """The cheapest shared exit threshold whose accuracy is within ``tolerance`` of the best one.

    This is how `agripatch train` calibrates exits on the validation split when the recipe names
    neither thresholds nor a budget: give up at most half a point of accuracy (by default) for
    every photo that can stop early. Candidates are the :func:`sweep_thresholds` grid.
    """
    probs = np.asarray(stage_probs)
    if probs.ndim != 3 or probs.shape[0] == 0:
        raise ValueError(f"stage_probs must be a non-empty [N, k + 1, C], got shape {probs.shape}")
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    sweep = sweep_thresholds(probs, stage_macs, labels)
    best_acc = max(point["accuracy"] for point in sweep)
    eligible = [point for point in sweep if point["accuracy"] >= best_acc - tolerance - 1e-12]
    chosen = min(eligible, key=lambda point: (point["mean_macs"], -point["accuracy"]))
    t = float(min(chosen["threshold"], 1.0))
    return ThresholdChoice(t, [t] * probs.shape[1], chosen["mean_macs"], chosen["accuracy"],
                           list(chosen["exit_histogram"]))


def parse_thresholds(text: str | None, n_stages: int) -> list[float] | None:
    """Parse a `--thresholds` option: one value for every stage, or one per stage (glance + K patches)."""
    if text is None:
        return None
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise AgripatchError(f"--thresholds {text!r}: give comma-separated numbers, e.g. 0.9,0.9,0") from None
    if len(values) == 1:
        values = values * n_stages
    if len(values) != n_stages:
        raise AgripatchError(f"--thresholds needs 1 or {n_stages} values (glance + {n_stages - 1} patches), got {len(values)}")
    return values


def decode_min_side(glance_size: int, patch_size: int, receptive_field: int) -> int:
    """Shorter side a photo must keep so that nothing the cascade looks at loses pixels.

    The glance needs ``glance_size`` pixels per side; a patch is one AnchorNet cell, ``receptive_field``
    glance pixels, i.e. ``receptive_field * side / glance_size`` photo pixels, and should have at least
    ``patch_size`` of them: ``side >= patch_size * glance_size / receptive_field``. A 48-MP photo is then
    decoded at 1/2..1/8 (JPEG DCT scaling) whenever its short side allows, which is most of the cost.
    """
    if min(glance_size, patch_size, receptive_field) < 1:
        raise ValueError("glance_size, patch_size and receptive_field must be positive")
    return max(int(glance_size), math.ceil(patch_size * glance_size / receptive_field))
