"""Glance + patches cascade: classify a crop photo cheaply, look closer only when unsure.

Stage 0 (the glance) classifies the whole photo resized to ``glance_size``: either with AnchorNet's own
logits (``glance="anchornet"``; its CAM then comes for free) or with the downstream classifier
(``glance="classifier"``). Photos whose top probability reaches ``thresholds[0]`` stop there. For the
others, :meth:`PatchPipeline.locate` ranks AnchorNet's grid cells, keeps K by greedy IoU suppression and
maps their boxes to the ORIGINAL photo's pixels; :meth:`PatchPipeline.crop` cuts them from it at full
resolution; stage s = 1..K classifies patch s for the photos still running, and those whose aggregated
prediction reaches ``thresholds[s]`` stop. Stage K always stops.

``locate`` and ``crop`` are THE selection path: the patch stage of `agripatch train` calls them too (with
its own choice of which class ranks the cells), so a change to selection changes training and
inference alike.

Aggregation (``aggregate="mean_logits"``, the default): the prediction after stage s is
``softmax(mean(logits of the glance and patches 1..s))``, a product of experts in which views that agree
sharpen the prediction; ``"mean_probs"`` averages probabilities instead. Exits are replayed offline from
:meth:`PatchPipeline.stage_probabilities` by :mod:`agripatch.pipeline.exits`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from agripatch.data.photos import make_glance
from agripatch.pipeline.config import CascadeConfig
from agripatch.pipeline.exits import StageOutputs, expand_thresholds
from agripatch.pipeline.inputs import ImageLike, normalize, stats, to_chw
from agripatch.pipeline.macs import count_macs
from agripatch.pipeline.prediction import PatchPrediction, assemble_predictions
from agripatch.pipeline.priors import apply_leaf_prior, leaf_share
from agripatch.pipeline.select import (
    Selection,
    crop_patches,
    decode_min_side,
    map_boxes,
    score_map,
    select_cells,
)

__all__ = ["GlanceScorer", "Located", "PatchPipeline", "PatchPrediction", "make_glance", "normalize", "to_chw"]



@dataclass
class Located:
    """AnchorNet's view of the photos ``rows`` of a batch: their cells, boxes and score maps.

    ``rows`` [R] (CPU long) index the batch; ``logits`` [R, C] are AnchorNet's, ``selection`` holds the K
    cells per photo, ``boxes`` [R, K, 4] are in each photo's own pixels (CPU float32), ``maps``
    [R, gh, gw] are the score maps the cells were ranked by and ``features`` [R, D] AnchorNet's pooled
    glance features (CPU float32), ``plant_share`` [R] the mean plant share of their cells (CPU float32).
    """

    rows: Tensor
    logits: Tensor | None
    selection: Selection | None
    boxes: Tensor | None
    maps: Tensor | None
    features: Tensor | None = None
    plant_share: Tensor | None = None

    def position(self, rows: Tensor) -> Tensor:
        """Indices into this object's tensors of the batch photos ``rows`` (which must be located)."""
        where = {int(r): i for i, r in enumerate(self.rows)}
        return torch.tensor([where[int(r)] for r in rows], dtype=torch.long)


def _accumulate(total: Tensor | None, logits: Tensor, aggregate: str) -> Tensor:
    term = logits.float() if aggregate == "mean_logits" else torch.softmax(logits.float(), dim=1)
    return term.clone() if total is None else total + term


def _finish(total: Tensor, n_stages: int, cfg: CascadeConfig) -> Tensor:
    """The prediction after ``n_stages`` exits' terms, tempered by that exit's temperature (see
    :mod:`~agripatch.pipeline.calibration`; the same arithmetic as its ``apply_temperature``)."""
    mean = total / n_stages
    t = cfg.temperature(n_stages - 1)
    if cfg.aggregate == "mean_logits":
        return torch.softmax(mean / t if t != 1.0 else mean, dim=1)
    if t == 1.0:
        return mean
    return torch.softmax(torch.log(mean.clamp_min(1e-30)) / t, dim=1)


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
    (:func:`~agripatch.pipeline.priors.leaf_share`).
    """

    def __init__(self, anchornet: nn.Module, mean: Sequence[float], std: Sequence[float], cell_boxes: Tensor):
        super().__init__()
        self.anchornet = anchornet
        self.mean, self.std = tuple(mean), tuple(std)
        self.register_buffer("cell_boxes", cell_boxes.detach().float().clone(), persistent=False)

    def forward(self, glance: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(logits, cam, features, leaf)`` of a 0..1 glance batch (see the class)."""
        x = normalize(glance, self.mean, self.std)
        if hasattr(self.anchornet, "forward_glance"):
            logits, cam, features = self.anchornet.forward_glance(x)
        else:
            logits, cam = self.anchornet.forward_cam(x)
            features = logits.new_zeros(logits.shape[0], 0)
        return logits, cam, features, leaf_share(glance, self.cell_boxes)


class PatchPipeline(nn.Module):
    """AnchorNet + downstream classifier as one early-exit predictor.

    Args:
        anchornet: module with ``forward_cam(x) -> (logits [B, C], cam [B, C, gh, gw])`` and
            ``cell_boxes(height, width) -> [gh * gw, 4]`` (input pixels, row-major cells).
        classifier: module mapping normalised [N, 3, S, S] images to logits [N, C] (any S).
        config: the cascade's settings (:class:`~agripatch.pipeline.config.CascadeConfig`).
        anchornet_mean, anchornet_std, classifier_mean, classifier_std: per-channel normalisation on
            the 0..1 scale; default to ``model.cfg`` / timm's ``pretrained_cfg``.
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
        return PatchPipeline(self.anchornet, classifier, self.config, anchornet_mean=self.anchornet_mean,
                             anchornet_std=self.anchornet_std, classifier_mean=self.classifier_mean,
                             classifier_std=self.classifier_std)

    def decode_min_side(self) -> int:
        """Shorter side a photo must keep when decoded so that no patch loses pixels (see ``select``)."""
        cfg = self.config
        return decode_min_side(cfg.glance_size, cfg.patch_size, self.anchornet.receptive_field.size)

    def stage_macs(self) -> np.ndarray:
        """Cumulative MACs per photo of exiting at stage 0..k, [k + 1] int64.

        Stage 0 costs the glance (AnchorNet's ``forward_cam``, or the classifier at ``glance_size``);
        later stages add AnchorNet when it is not the glance, and one classifier run at ``patch_size``
        per patch read. Box selection and cropping are not multiply-accumulates and count zero.
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

    # ---------------------------------------------------------------- the selection path

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

    def glance_scorer(self) -> GlanceScorer:
        """The glance's computations as one module (shares AnchorNet's weights)."""
        size = self.config.glance_size
        boxes = self.anchornet.cell_boxes(size, size).to(self.device)
        return GlanceScorer(self.anchornet, self.anchornet_mean, self.anchornet_std, boxes)

    def _locate_rows(self, glance: Tensor, hw: Tensor, rows: Tensor, rank_by: Tensor | None = None) -> Located:
        """AnchorNet, score map, K cells and their boxes in photo pixels for the batch photos ``rows``."""
        cfg = self.config
        if rows.numel() == 0:
            return Located(rows, None, None, None, None, None)
        scorer = self.glance_scorer()
        logits, cam, features, share = scorer(glance[rows.to(glance.device)])
        maps = score_map(cam, logits, cfg.score_mode if rank_by is None else rank_by)
        cell_boxes = scorer.cell_boxes
        if tuple(cell_boxes.shape) != (maps.shape[1] * maps.shape[2], 4):
            raise ValueError(f"cell_boxes gave {tuple(cell_boxes.shape)} for a {tuple(maps.shape[1:])} grid")
        scores = maps.flatten(1).float()
        ranking = scores
        if cfg.cell_prior == "leaf":
            ranking = apply_leaf_prior(scores, share.float(), cfg.leaf_min_share)
        selection = select_cells(ranking, cell_boxes, cfg.k, cfg.iou_threshold)
        selection = selection._replace(scores=scores.gather(1, selection.indices))  # report the class map's own score
        size = (cfg.glance_size, cfg.glance_size)
        boxes = map_boxes(selection.boxes.detach().cpu().float(), size, hw[rows])
        return Located(rows, logits, selection, boxes, maps, features.detach().float().cpu(),
                       share.detach().float().mean(dim=1).cpu())

    @torch.no_grad()
    def locate(
        self,
        originals: Sequence[ImageLike] | Tensor,
        glance_batch: Tensor | None = None,
        *,
        rank_by: Tensor | None = None,
    ) -> Located:
        """Where to look in each photo: AnchorNet's K cells and their boxes in the photo's own pixels.

        ``rank_by`` ([B] class indices) ranks each photo's cells by that class's map instead of the
        config's ``score_mode``: training ranks by the true or a random class (``train_selection``).
        """
        with _inference(self.anchornet):
            images, glance, hw = self._prepare(originals, glance_batch)
            if rank_by is not None:
                rank_by = torch.as_tensor(rank_by, dtype=torch.long).reshape(-1)
                if rank_by.numel() != len(images):
                    raise ValueError(f"rank_by needs one class per photo ({len(images)}), got {rank_by.numel()}")
            return self._locate_rows(glance, hw, torch.arange(len(images)), rank_by)

    def crop(self, originals: Sequence[ImageLike] | Tensor, located: Located, rows: Tensor | None = None) -> Tensor:
        """Patches [R, K, 3, S, S] of the photos ``rows`` (default: every located photo), cut at full
        resolution from ``originals`` (the whole batch) and normalised for the classifier."""
        cfg = self.config
        rows = located.rows if rows is None else rows
        patches = crop_patches(
            [to_chw(originals[int(r)]) for r in rows],
            located.boxes[located.position(rows)],
            cfg.patch_size,
            self.classifier_mean,
            self.classifier_std,
            device=self.device,
        )
        return patches.view(len(rows), cfg.k, 3, cfg.patch_size, cfg.patch_size)

    def _glance(self, glance: Tensor, hw: Tensor) -> tuple[Tensor, Located | None]:
        """Stage-0 logits for every photo; with an AnchorNet glance also every photo's cells."""
        if self.config.glance == "anchornet":
            located = self._locate_rows(glance, hw, torch.arange(glance.shape[0]))
            return located.logits, located
        return self.classifier(normalize(glance, self.classifier_mean, self.classifier_std)), None

    def _located(self, located: Located | None, glance: Tensor, hw: Tensor, glance_logits: Tensor,
                 rows: Tensor) -> Located:
        """With a classifier glance, AnchorNet runs here, only for the photos that go on."""
        if located is None:
            located = self._locate_rows(glance, hw, rows)
            if located.logits is not None and located.logits.shape[1] != glance_logits.shape[1]:
                raise ValueError(f"AnchorNet has {located.logits.shape[1]} classes, "
                                 f"the classifier {glance_logits.shape[1]}")
        return located

    # ---------------------------------------------------------------- predictions

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
            originals: photos at full resolution, HWC uint8 RGB numpy arrays or [3, H, W] tensors
                (uint8, or float in 0..1); sizes may differ.
            glance_batch: optional precomputed glance input [B, 3, glance, glance], uint8 or float
                0..1, NOT normalised (e.g. resized by a data loader's workers); by default the photos
                are resized here with :func:`make_glance`.
            thresholds: override the config's exit thresholds for this call (1 or k + 1 values).

        Returns:
            One :class:`PatchPrediction` per photo, in order.
        """
        cfg = self.config
        thr_list = expand_thresholds(thresholds if thresholds is not None else cfg.exit_thresholds(), cfg.n_stages)
        with _inference(self):
            images, glance, hw = self._prepare(originals, glance_batch)
            b = len(images)
            if b == 0:
                return []
            costs = self.stage_macs()
            thr = torch.tensor(thr_list, dtype=torch.float32)

            glance_logits, located = self._glance(glance, hw)
            total = _accumulate(None, glance_logits, cfg.aggregate).cpu()
            probs = _finish(total, 1, cfg)
            final = probs.clone()
            stage = torch.full((b,), -1, dtype=torch.long)
            done = probs.max(dim=1).values >= thr[0]
            stage[done] = 0

            running = (~done).nonzero().flatten()
            located = self._located(located, glance, hw, glance_logits, running)
            patch_logits: list[list[Tensor]] = [[] for _ in range(b)]
            if running.numel():
                patches = self.crop(images, located, running)  # [R, K, 3, S, S]
                slot = torch.full((b,), -1, dtype=torch.long)
                slot[running] = torch.arange(running.numel())
                for s in range(1, cfg.k + 1):
                    if running.numel() == 0:
                        break
                    logits = self.classifier(patches[slot[running], s - 1]).float().cpu()
                    for r, row_logits in zip(running.tolist(), logits):
                        patch_logits[r].append(row_logits)
                    total[running] = _accumulate(total[running], logits, cfg.aggregate)
                    probs = _finish(total[running], s + 1, cfg)
                    stop = probs.max(dim=1).values >= thr[s]
                    if s == cfg.k:  # the last stage always exits
                        stop[:] = True
                    final[running[stop]] = probs[stop]
                    stage[running[stop]] = s
                    running = running[~stop]

        return self._assemble(final, stage, costs, located, patch_logits)

    def _assemble(self, final: Tensor, stage: Tensor, costs: np.ndarray, located: Located,
                  patch_logits: list[list[Tensor]]) -> list[PatchPrediction]:
        sel = located.selection
        found = len(located.rows) > 0 and sel is not None

        def array(t: Tensor | None) -> np.ndarray | None:
            return t.float().cpu().numpy() if found and t is not None else None

        return assemble_predictions(
            final.numpy(), stage.numpy(), costs, located.rows.numpy(), array(located.boxes),
            array(sel.scores if sel is not None else None), sel.indices.cpu().numpy() if found else None,
            array(located.maps), array(located.features), [[t.numpy() for t in row] for row in patch_logits],
            array(located.plant_share))

    @torch.no_grad()
    def stage_probabilities(
        self,
        originals: Sequence[ImageLike] | Tensor,
        glance_batch: Tensor | None = None,
        *,
        timing: np.ndarray | None = None,
    ) -> StageOutputs:
        """Run every stage for every photo (no early exit) and record each stage's prediction.

        Returns :class:`~agripatch.pipeline.exits.StageOutputs` with probabilities [N, k + 1, C] (the
        same aggregation as :meth:`predict`) and the cumulative cost per stage, so
        :func:`~agripatch.pipeline.exits.simulate_exits` can replay any thresholds without a model.
        ``timing`` ([k + 1] float array), when given, accumulates each stage's wall seconds as
        :meth:`predict` would spend them (stage 1 also pays for locating and cutting the patches, except
        AnchorNet's glance).
        """
        cfg = self.config
        clock = _StageClock(timing)
        with _inference(self):
            images, glance, hw = self._prepare(originals, glance_batch)
            costs = self.stage_macs()
            if not images:
                return StageOutputs(np.zeros((0, cfg.n_stages, 0), np.float32), costs)
            rows = torch.arange(len(images))
            glance_logits, located = self._glance(glance, hw)
            total = _accumulate(None, glance_logits, cfg.aggregate).cpu()
            stages = [_finish(total, 1, cfg)]
            clock.lap(0)
            located = self._located(located, glance, hw, glance_logits, rows)
            patches = self.crop(images, located, rows)
            for s in range(1, cfg.k + 1):
                logits = self.classifier(patches[:, s - 1]).float().cpu()
                total = _accumulate(total, logits, cfg.aggregate)
                stages.append(_finish(total, s + 1, cfg))
                clock.lap(s)
        features = located.features.numpy() if located.features is not None else None
        shares = located.plant_share.numpy() if located.plant_share is not None else None
        return StageOutputs(torch.stack(stages, dim=1).numpy(), costs, features, shares)


class _StageClock:
    """Adds the wall time since the previous lap to ``timing[stage]`` (no-op without an array)."""

    def __init__(self, timing: np.ndarray | None):
        self.timing = timing
        self.last = time.perf_counter()

    def lap(self, stage: int) -> None:
        now = time.perf_counter()
        if self.timing is not None:
            self.timing[stage] += now - self.last
        self.last = now
