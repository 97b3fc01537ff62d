"""The glance + patches cascade, written once for every backend (numpy, torch-free).

Exit 0 (the glance) classifies the whole photo shrunk to ``glance_size``: with AnchorNet's own logits
(``glance="anchornet"``; its class map then comes for free) or with the downstream classifier
(``glance="classifier"``). Photos whose calibrated confidence reaches ``thresholds[0]`` stop there. For the
others :meth:`CascadeCore.locate` ranks AnchorNet's cells (:mod:`~agripatch.pipeline.cells`), keeps K and maps
their boxes to the photo's own pixels; the backend cuts them at full resolution; exit s = 1..K classifies patch
s for the photos still running, and those whose aggregated prediction reaches ``thresholds[s]`` stop. The last
exit always stops: exit K, or with ``full_image_exit`` exit K + 1, where the full-image model reads the photos the
patches left unsure and its answer and the patches' weigh half each.

With ``severity`` the symptom map reads every photo first (:meth:`CascadeCore.severities`): each prediction
carries the leaf's symptom share and class, and with ``cell_prior="symptom"`` the same map ranks the cells.

Aggregation (``aggregate="mean_logits"``, the default): the prediction after exit s is
``softmax(mean(logits of the glance and patches 1..s) / T_s)``, a product of experts in which views that agree
sharpen the prediction, tempered by exit s's calibrated temperature (:mod:`~agripatch.pipeline.calibration`);
``"mean_probs"`` averages probabilities instead.

A backend supplies only the networks and the crop (:class:`Networks`): PyTorch modules and torch matrix products
(:mod:`agripatch.pipeline.cascade`) or ONNX graphs and numpy ones (:mod:`agripatch.runtime`), both applying the
one crop rule of :mod:`agripatch.pipeline.crop`.
Everything that decides (selection, aggregation, exits) happens here, in float32, so both backends decide
alike. Training's patch stage selects its cells through :meth:`CascadeCore.locate` too.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from agripatch.io.deferred import DeferredPhoto, pixels
from agripatch.io.glance import PhotoFile, reduced_at_least
from agripatch.pipeline.boxes import scale_boxes
from agripatch.pipeline.cells import (
    apply_share_prior,
    cell_symptom_shares,
    leafy_symptom_shares,
    map_classes,
    plant_shares_for,
    score_map,
    select_cells,
)
from agripatch.pipeline.exits import ExitOutputs, expand_thresholds, stops
from agripatch.pipeline.prediction import PatchPrediction, assemble_predictions
from agripatch.pipeline.refusal import Refusal
from agripatch.pipeline.severity import Severity, map_hw, read_severity
from agripatch.pipeline.timing import PartTimes, part

__all__ = ["CascadeCore", "Located", "Networks", "softmax"]


class Networks(Protocol):
    """What a backend gives the cascade: its networks and its crop, on its own arrays.

    ``glance`` is the backend's glance batch [B, 3, G, G] (0..1), ``rows`` numpy int64 indices into it; every
    method returns float32 numpy arrays except :meth:`crop`, whose patches stay on the backend (a torch tensor
    on the GPU, say) until :meth:`classify` reads them. Patches are cut one exit at a time, only for the photos
    still running, so a photo that stops after its first patch never pays for cutting the others.
    """

    def score_glance(self, glance: Any, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """AnchorNet on the glances ``rows``: ``(logits [R, C], cam [R, C, gh, gw], features [R, D], plant share
        of every cell [R, N])`` (:class:`agripatch.pipeline.cascade.GlanceScorer`)."""

    def classify_glance(self, glance: Any) -> np.ndarray:
        """The downstream classifier on the whole glance batch (``glance="classifier"``): logits [B, C]."""

    def glance_views(self, glance: Any, rows: np.ndarray, turns: Sequence[int], exposure: float) -> Any:
        """The glances ``rows`` turned by each of ``turns`` quarter turns anticlockwise, then (``exposure`` > 0)
        re-exposed to that level (:func:`~agripatch.io.exposure.exposed_like`), one batch on the backend, view after
        view ([V * R, 3, G, G]): what :meth:`score_glance` reads in one call."""

    def crop(self, images: Sequence[Any], boxes: np.ndarray, slot: int) -> Any:
        """Normalised patches [R, 3, S, S]: box ``slot`` of each photo's boxes [R, K, 4] (photo pixels), cut at full
        resolution (:mod:`agripatch.pipeline.crop`; the sampling ratio comes from all K boxes)."""

    def classify(self, patches: Any) -> np.ndarray:
        """The classifier's logits [R, C] for patches [R, 3, S, S]."""

    def classify_photo(self, images: Sequence[Any], files: Sequence[PhotoFile | None]) -> np.ndarray:
        """The full-image model's logits [R, C] for whole photos (``full_image_exit``): each made as that model's
        training made it, from its file where known (:func:`agripatch.io.glance.whole_photo`)."""

    def map_symptoms(self, images: Sequence[Any], height: int, width: int) -> np.ndarray:
        """The symptom map's logits [R, 3, height / s, width / s] for whole photos, each shrunk to ``height`` x
        ``width`` (:func:`agripatch.io.glance.shrink_array`; ``cascade.severity``)."""


def _check_files(files: Sequence[PhotoFile | None] | None, count: int) -> None:
    """A ``files`` argument (None, or one entry per photo) is whole, before any network runs."""
    if files is not None and len(files) != count:
        raise ValueError(f"{len(files)} files for {count} photos")


def softmax(x: np.ndarray) -> np.ndarray:
    """Row softmax in float32 (max-shifted)."""
    x = np.asarray(x, np.float32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)


@dataclass
class Located:
    """AnchorNet's view of the photos ``rows`` of a batch (numpy, CPU).

    ``logits`` [R, C] are AnchorNet's; ``cells`` [R, K] the chosen row-major cells, ``scores`` [R, K] their class
    map scores, ``boxes`` [R, K, 4] float32 their boxes in each photo's own pixels; ``maps`` [R, gh, gw] the score
    maps the cells were ranked by (before any cell prior); ``features`` [R, D] AnchorNet's pooled glance features,
    ``plant_share`` [R] the mean plant share of the photo's cells and ``cell_shares`` [R, N] each cell's. Every
    field but ``rows`` is None when no photo was located.
    """

    rows: np.ndarray
    logits: np.ndarray | None = None
    cells: np.ndarray | None = None
    scores: np.ndarray | None = None
    boxes: np.ndarray | None = None
    maps: np.ndarray | None = None
    features: np.ndarray | None = None
    cell_shares: np.ndarray | None = None
    view_macs: np.ndarray | None = None  # [R] what judging each photo on its glance's views cost (nearest_views)
    distances: np.ndarray | None = None  # [R] each photo's refusal distance, its nearest view's (nearest_views)
    views: np.ndarray | None = None  # [R] which view the refusal judged each photo on (-1: as it is; nearest_views)

    @property
    def plant_share(self) -> np.ndarray | None:
        """[R] the mean plant share of each located photo's cells (None when no photo was located)."""
        return None if self.cell_shares is None else self.cell_shares.mean(axis=1)

    def position(self, rows: np.ndarray) -> np.ndarray:
        """Indices into this object's arrays of the batch photos ``rows`` (which must be located)."""
        where = {int(r): i for i, r in enumerate(self.rows)}
        return np.array([where[int(r)] for r in rows], dtype=np.int64)


class CascadeCore:
    """The cascade's decisions over a backend's :class:`Networks`.

    Args:
        config: the cascade's :class:`~agripatch.pipeline.config.CascadeConfig`.
        networks: the backend.
        cell_boxes: [N, 4] every AnchorNet cell's box on the glance (row-major).
        exit_macs: [n_exits] cumulative multiply-accumulates of stopping at each exit.
        times: when given, wall seconds per part of the run (:class:`~agripatch.pipeline.timing.PartTimes`).
    """

    def __init__(self, config, networks: Networks, cell_boxes: np.ndarray, exit_macs: np.ndarray,
                 times: PartTimes | None = None, refusal: Refusal | None = None):
        self.config = config
        self.networks = networks
        self.refusal = refusal
        self.cell_boxes = np.asarray(cell_boxes, np.float32)
        self.exit_macs = np.asarray(exit_macs, np.int64)
        self.times = times

    # ---------------------------------------------------------------- aggregation

    def _term(self, logits: np.ndarray) -> np.ndarray:
        logits = np.asarray(logits, np.float32)
        return logits.copy() if self.config.aggregate == "mean_logits" else softmax(logits)

    def finish(self, total: np.ndarray, n_views: int, exit_index: int | None = None) -> np.ndarray:
        """The prediction after ``n_views`` views' summed terms, tempered by the temperature of ``exit_index``
        (default: exit ``n_views - 1``; the same arithmetic as
        :func:`~agripatch.pipeline.calibration.apply_temperature`)."""
        cfg = self.config
        mean = (total / np.float32(n_views)).astype(np.float32)
        t = np.float32(cfg.temperature(n_views - 1 if exit_index is None else exit_index))
        if cfg.aggregate == "mean_logits":
            return softmax(mean / t if t != 1 else mean)
        return mean if t == 1 else softmax(np.log(np.maximum(mean, np.float32(1e-30))) / t)

    # ---------------------------------------------------------------- selection

    def locate(self, glance: Any, hw: np.ndarray, rows: np.ndarray, rank_by: np.ndarray | None = None,
               symptoms: Sequence[np.ndarray] | None = None) -> Located:
        """AnchorNet, score map, K cells and their boxes in photo pixels for the batch photos ``rows``.

        ``hw`` [B, 2] are the photos' sizes; ``rank_by`` ([R] class indices) ranks the cells by those classes'
        maps instead of the config's ``score_mode`` (training: ``train_selection``); ``symptoms`` ([R] symptom
        probability maps, :attr:`Severity.symptom <agripatch.pipeline.severity.Severity>`) feed
        ``cell_prior="symptom"``.
        """
        cfg = self.config
        rows = np.asarray(rows, np.int64)
        if rows.size == 0:
            return Located(rows)
        with part(self.times, "AnchorNet glance"):
            logits, cam, features, share = self.networks.score_glance(glance, rows)
        with part(self.times, "selection"):
            mode = cfg.score_mode if rank_by is None else rank_by
            maps = score_map(cam, logits, mode)
            if self.cell_boxes.shape[0] != maps.shape[1] * maps.shape[2]:
                raise ValueError(f"{self.cell_boxes.shape[0]} cell boxes for a {maps.shape[1:]} grid")
            scores = maps.reshape(len(rows), -1).astype(np.float32)
            ranking = self._prior(scores, plant_shares_for(share, map_classes(logits, mode), cfg.off_leaf_classes),
                                  symptoms)
            selection = select_cells(ranking, self.cell_boxes, cfg.k, cfg.iou_threshold)
            size = (cfg.glance_size, cfg.glance_size)
            boxes = scale_boxes(selection.boxes, size, np.asarray(hw, np.float64)[rows]).astype(np.float32)
            picked = np.take_along_axis(scores, selection.indices, axis=1)  # the class map's own score
            return Located(rows, logits, selection.indices, picked, boxes, maps, features,
                           np.asarray(share, np.float32))

    def _prior(self, scores: np.ndarray, share: np.ndarray, symptoms: Sequence[np.ndarray] | None) -> np.ndarray:
        """The cells' ranking scores [R, N] under the config's ``cell_prior`` (none, leaf or symptom), from the
        cells' plant shares as the priors read them (:func:`~agripatch.pipeline.cells.plant_shares_for`)."""
        cfg = self.config
        if cfg.cell_prior == "leaf":
            return apply_share_prior(scores, share, cfg.leaf_min_share)
        if cfg.cell_prior == "symptom":
            if symptoms is None or len(symptoms) != len(scores):
                raise ValueError("cell_prior 'symptom' needs every located photo's symptom map")
            shares = np.stack([cell_symptom_shares(self.cell_boxes, cfg.glance_size, m) for m in symptoms])
            return apply_share_prior(scores, leafy_symptom_shares(shares, share, cfg.leaf_min_share),
                                     cfg.symptom_min_share)
        return scores

    def symptom_maps(self, images: Sequence[Any], hw: np.ndarray, files: Sequence[PhotoFile | None] | None = None
                     ) -> tuple[list[Severity] | None, list | None]:
        """Every photo's severity and symptom map when the cascade measures severity (None, None otherwise)."""
        if self.config.severity is None:
            return None, None
        severities = self.severities(images, hw, files)
        return severities, [s.symptom for s in severities]

    def _glance(self, glance: Any, hw: np.ndarray,
                symptoms: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, Located | None]:
        """Exit 0's logits for every photo; with an AnchorNet glance also every photo's cells."""
        if self.config.glance == "anchornet":
            located = self.locate(glance, hw, np.arange(len(hw)), symptoms=symptoms)
            return located.logits, located
        with part(self.times, "classifier glance"):
            return np.asarray(self.networks.classify_glance(glance), np.float32), None

    def _located(self, located: Located | None, glance: Any, hw: np.ndarray, glance_logits: np.ndarray,
                 rows: np.ndarray, symptoms: Sequence[np.ndarray] | None = None) -> Located:
        """With a classifier glance, AnchorNet runs here, only for the photos that go on."""
        if located is None:
            located = self.locate(glance, hw, rows,
                                  symptoms=None if symptoms is None else [symptoms[int(r)] for r in rows])
            if located.logits is not None and located.logits.shape[1] != glance_logits.shape[1]:
                raise ValueError(f"AnchorNet has {located.logits.shape[1]} classes, "
                                 f"the classifier {glance_logits.shape[1]}")
        return located

    def nearest_views(self, glance: Any, located: Located) -> Located:
        """``located`` with the glance features of each photo the refusal would judge on its glance's views
        (:meth:`~agripatch.pipeline.refusal.Refusal.needs_views`: leafy and refused as it is) replaced by those of its
        nearest view among them and itself: the quarter turns a model trained on turns reads alike, and the glance
        re-exposed to the training photos' level. A turned square leaf photo, which the networks read right, is then
        judged as the upright photo it is, a leaf taken a stop too bright as it would have been taken, and a photo
        judged far is far in every view. Only those photos pay AnchorNet again, once per view (``view_macs``; an
        AnchorNet glance only: its cost is exit 0's); the cells and answers do not change."""
        refusal = self.refusal
        if (refusal is None or not refusal.view_count or self.config.glance != "anchornet" or located.features is None
                or not len(located.rows)):
            return located
        best = refusal.distances(located.features)
        need = refusal.needs_views(best, located.plant_share)
        if not need.any():
            return replace(located, distances=best)
        with part(self.times, "refusal views"):
            features, rows, count = located.features.copy(), located.rows[need], refusal.view_count
            views = self.networks.glance_views(glance, rows, list(refusal.view_turns), refusal.view_exposure)
            seen = self.networks.score_glance(views, np.arange(count * len(rows)))[2].reshape(count, len(rows), -1)
            distances = refusal.distances(seen.reshape(count * len(rows), -1)).reshape(count, len(rows))
            nearest = distances.argmin(axis=0)
            nearer = distances[nearest, np.arange(len(rows))] < best[need]
            view, among = nearest[nearer], np.flatnonzero(nearer)  # the nearer view of each photo a view moved
            moved = np.flatnonzero(need)[nearer]  # those photos' positions in ``located``
            features[moved] = seen[view, among]
            best = best.copy()
            best[moved] = distances[view, among]
            views = np.full(len(located.rows), -1, np.int64)
            views[moved] = view
        view_macs = need.astype(np.int64) * count * int(self.exit_macs[0])
        return replace(located, features=features, view_macs=view_macs, distances=best, views=views)

    def _photos(self, images: Sequence[Any], rows: Sequence[int] | np.ndarray) -> list[Any]:
        """The pixels of the batch photos ``rows``, for a network or the crop: a
        :class:`~agripatch.io.deferred.DeferredPhoto` is decoded here, the first time the cascade reads it. Call it
        outside a timed part: its decode is a part of its own, not the crop's or a network's."""
        picked = [images[int(r)] for r in rows]
        pending = any(isinstance(photo, DeferredPhoto) and not photo.decoded for photo in picked)
        with part(self.times if pending else None, "deferred decode"):
            return [pixels(photo) for photo in picked]

    def _map_sources(self, images: Sequence[Any], rows: list[int], size: tuple[int, int],
                     files: Sequence[PhotoFile | None] | None) -> list[Any]:
        """The decoded pixels the symptom map shrinks for the batch photos ``rows`` (at ``size``): each file's
        glance decode where it is large enough, else the photo's own (decoded here if deferred)."""
        kept = [reduced_at_least(None if files is None else files[r], *size) for r in rows]
        own = iter(self._photos(images, [r for r, k in zip(rows, kept) if k is None]))
        return [k if k is not None else next(own) for k in kept]

    def _read_patch(self, images: Sequence[Any], located: Located, rows: np.ndarray, slot: int) -> np.ndarray:
        """Logits [R, C] of patch ``slot`` of the batch photos ``rows``: cut, then classified."""
        photos = self._photos(images, rows)
        with part(self.times, "crop"):
            patches = self.networks.crop(photos, located.boxes[located.position(rows)], slot)
        with part(self.times, "patch classifier"):
            return np.asarray(self.networks.classify(patches), np.float32)

    def _read_photo(self, images: Sequence[Any], rows: np.ndarray, total: np.ndarray,
                    files: Sequence[PhotoFile | None] | None) -> np.ndarray:
        """The full-image exit's prediction [R, C] for the batch photos ``rows``, whose ``total`` holds the glance's
        and the k patches' summed terms: the whole photo and the patches weigh half each (the mean of the patches'
        aggregate and the full-image model's term), tempered by this exit's own temperature.

        Half each, not the whole photo alone: where the full-image model reads better it outvotes an unsure patch
        aggregate, and where it reads worse (small lesions on a large leaf) the patches still count
        (benchmarks/README.md, "A full-image last exit").
        """
        photos = self._photos(images, rows)
        with part(self.times, "full-image model"):
            picked = [None] * len(rows) if files is None else [files[int(r)] for r in rows]
            logits = np.asarray(self.networks.classify_photo(photos, picked), np.float32)
        patches = (total / np.float32(self.config.k + 1)).astype(np.float32)
        return self.finish(patches + self._term(logits), 2, exit_index=self.config.k + 1)

    # ---------------------------------------------------------------- predictions

    def predict(self, images: Sequence[Any], glance: Any, hw: np.ndarray, thresholds: Sequence[float],
                files: Sequence[PhotoFile | None] | None = None) -> list[PatchPrediction]:
        """One :class:`PatchPrediction` per photo, each stopping at the first exit whose confidence reaches its
        threshold (``thresholds``: 1 or ``n_exits`` values; the last exit always stops). ``files`` (one per photo,
        None for in-memory ones) let the full-image exit read each photo as its network was trained to."""
        cfg = self.config
        _check_files(files, len(images))
        thr = np.asarray(expand_thresholds(thresholds, cfg.n_exits), dtype=np.float32)
        b = len(images)
        if b == 0:
            return []
        severities, symptoms = self.symptom_maps(images, hw, files)
        glance_logits, located = self._glance(glance, hw, symptoms)
        total = self._term(glance_logits)
        probs = self.finish(total, 1)
        final = probs.copy()
        taken = np.full(b, -1, dtype=np.int64)
        done = stops(probs.max(axis=1), thr[0], cfg.n_exits == 1)
        taken[done] = 0

        running = np.flatnonzero(~done)
        located = self.nearest_views(glance, self._located(located, glance, hw, glance_logits, running, symptoms))
        patch_logits: list[list[np.ndarray]] = [[] for _ in range(b)]
        for s in range(1, cfg.k + 1):
            if running.size == 0:
                break
            logits = self._read_patch(images, located, running, s - 1)
            with part(self.times, "aggregation and exits"):
                for r, row_logits in zip(running.tolist(), logits):
                    patch_logits[r].append(row_logits)
                total[running] = total[running] + self._term(logits)
                probs = self.finish(total[running], s + 1)
                stop = stops(probs.max(axis=1), thr[s], s == cfg.n_exits - 1)
                final[running[stop]] = probs[stop]
                taken[running[stop]] = s
                running = running[~stop]
        if cfg.full_image_exit and running.size:  # what the patches left unsure, the whole photo reads too
            final[running] = self._read_photo(images, running, total[running], files)
            taken[running] = cfg.k + 1
        with part(self.times, "assembly"):
            out = assemble_predictions(final, taken, self.exit_macs, located.rows, located.boxes, located.scores,
                                       located.cells, located.maps, located.features, patch_logits,
                                       located.plant_share)
        for prediction, severity in zip(out, severities or ()):
            prediction.severity = severity
        if located.distances is not None:  # what the refusal saw (nearest_views); the record judges on its distance
            names = self.refusal.view_names
            for i, row in enumerate(located.rows.tolist()):
                out[row].distance = float(located.distances[i])
                if located.views is not None:
                    out[row].refusal_macs = int(located.view_macs[i])
                    out[row].refusal_view = names[located.views[i]] if located.views[i] >= 0 else None
        return out

    def severities(self, images: Sequence[Any], hw: np.ndarray,
                   files: Sequence[PhotoFile | None] | None = None) -> list[Severity]:
        """Every photo's :class:`~agripatch.pipeline.severity.Severity` (``cascade.severity``): the symptom map on
        the whole photo at its :func:`~agripatch.pipeline.severity.map_hw` size, photos of one size in one call.
        It reads every photo whatever exit it took; it changes the diagnosis only through ``cell_prior="symptom"``.
        A photo whose file's glance decode is at least that size (``files``, :func:`~agripatch.io.glance.
        reduced_at_least`) is shrunk from it, not from the cascade's larger (possibly not yet made) decode."""
        cfg = self.config.severity
        if cfg is None:
            raise ValueError("this cascade measures no severity (cascade.severity is not set)")
        sizes = [map_hw(int(h), int(w), cfg.side, cfg.stride) for h, w in np.asarray(hw)]
        out: list[Severity | None] = [None] * len(sizes)
        for size in dict.fromkeys(sizes):
            rows = [i for i, s in enumerate(sizes) if s == size]
            photos = self._map_sources(images, rows, size, files)
            with part(self.times, "symptom map"):
                logits = np.asarray(self.networks.map_symptoms(photos, *size), np.float32)
                for i, row_logits in zip(rows, logits):
                    out[i] = read_severity(row_logits, cfg)
        return out

    def exit_probabilities(self, images: Sequence[Any], glance: Any, hw: np.ndarray, *,
                            timing: np.ndarray | None = None,
                            files: Sequence[PhotoFile | None] | None = None) -> ExitOutputs:
        """Every exit for every photo (no early exit): probabilities [N, n_exits, C], the exit costs, AnchorNet's
        features and plant shares (and, with ``severity``, every photo's severity: the map runs once for both), so
        :func:`~agripatch.pipeline.exits.simulate_exits` can replay any thresholds without a model. ``timing``
        ([n_exits]), when given, accumulates each exit's wall seconds as :meth:`predict` would spend them (exit 0
        also pays for the symptom map, exit 1 for locating and cutting the patches, except AnchorNet's glance).
        ``files`` as in :meth:`predict`."""
        cfg = self.config
        _check_files(files, len(images))
        if not len(images):
            return ExitOutputs(np.zeros((0, cfg.n_exits, 0), np.float32), self.exit_macs.copy())
        clock = _Clock(timing)
        rows = np.arange(len(images))
        severities, symptoms = self.symptom_maps(images, hw, files)
        glance_logits, located = self._glance(glance, hw, symptoms)
        total = self._term(glance_logits)
        per_exit = [self.finish(total, 1)]
        clock.lap(0)
        located = self.nearest_views(glance, self._located(located, glance, hw, glance_logits, rows, symptoms))
        for s in range(1, cfg.k + 1):
            total = total + self._term(self._read_patch(images, located, rows, s - 1))
            per_exit.append(self.finish(total, s + 1))
            clock.lap(s)
        if cfg.full_image_exit:
            per_exit.append(self._read_photo(images, rows, total, files))
            clock.lap(cfg.k + 1)
        return ExitOutputs(np.stack(per_exit, axis=1).astype(np.float32), self.exit_macs.copy(), located.features,
                            located.plant_share, severities,
                            np.zeros(len(images), np.int64) if located.view_macs is None else located.view_macs)


class _Clock:
    """Adds the wall time since the previous lap to ``timing[exit]`` (no-op without an array)."""

    def __init__(self, timing: np.ndarray | None):
        self.timing = timing
        self.last = time.perf_counter()

    def lap(self, index: int) -> None:
        now = time.perf_counter()
        if self.timing is not None:
            self.timing[index] += now - self.last
        self.last = now
