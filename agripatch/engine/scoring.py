"""Scoring labelled photos, the library under `agripatch evaluate`, training's validation and `agripatch calibrate`:
every exit's probabilities for every readable photo (and the full-image baseline's), each photo decoded once.

Exits are replayed from these outputs (:func:`~agripatch.pipeline.exits.simulate_exits`, bit for bit what
`predict` decides), so every threshold costs no model run.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset

from agripatch.data.photos import PhotoDataset
from agripatch.data.splits import classes_of, load_splits, samples_for
from agripatch.errors import DatasetError
from agripatch.io.exposure import exposure
from agripatch.io.glance import read_glance
from agripatch.io.sources import photo_files
from agripatch.models.fuse import run_network
from agripatch.pipeline.bundle import ModelBundle
from agripatch.pipeline.cascade import PatchPipeline, normalize
from agripatch.pipeline.cells import bare_top_cell_shares, off_leaf_classes
from agripatch.pipeline.exits import ExitOutputs
from agripatch.pipeline.severity import Severity

__all__ = ["Scored", "baseline_probabilities", "glance_features", "score_photos", "split_dataset"]


@dataclass
class Scored:
    """One pass of the cascade (and the baseline) over labelled photos.

    ``outputs`` are the cascade's per-stage probabilities, ``exit_seconds`` [k + 1] its model time per
    stage summed over photos (stage 1 includes cutting the patches), ``baseline_probs`` [N, C] the
    baseline's, ``errors`` the unreadable files as (path, reason), ``severities`` every photo's severity when
    the cascade measures it.
    """

    outputs: ExitOutputs
    labels: np.ndarray
    paths: list[str]
    errors: list[tuple[str, str]] = field(default_factory=list)
    exit_seconds: np.ndarray | None = None
    baseline_probs: np.ndarray | None = None
    baseline_seconds: float = 0.0
    severities: list[Severity] | None = None


def _loader(dataset: PhotoDataset, batch_size: int, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=list)


@torch.no_grad()
def baseline_probabilities(bundle: ModelBundle, files: list[Path], turns: Sequence[int] | None = None) -> np.ndarray:
    """The full-image baseline's probabilities [N, C] for image files, each made as its training evaluated it
    (reduced decode for its size, then the area filter), not from the cascade's larger decode; each turned as
    ``turns`` says (the quarter turns its cascade read it with)."""
    size = int(bundle.baseline_spec["input_size"])
    turns = [0] * len(files) if turns is None else list(turns)
    return _baseline_forward(bundle, torch.from_numpy(np.stack([read_glance(file, size, turn)
                                                                for file, turn in zip(files, turns)])))


@torch.no_grad()
def _baseline_forward(bundle: ModelBundle, inputs: torch.Tensor) -> np.ndarray:
    """The baseline's probabilities for its inputs [N, 3, S, S] in 0..1."""
    spec = bundle.baseline_spec
    x = normalize(inputs.to(bundle.pipeline.device), spec["mean"], spec["std"])
    return torch.softmax(run_network(bundle.baseline, x), dim=1).cpu().numpy()


def score_photos(pipeline: PatchPipeline, dataset: PhotoDataset, *, baseline: ModelBundle | None = None,
                 batch_size: int = 16, workers: int = 0) -> Scored:
    """Every stage's probabilities (and the baseline's, from ``baseline``'s model file) for every readable
    photo of ``dataset``, decoding each photo once; unreadable ones are listed, not fatal."""
    parts, labels, paths, errors, base_parts = [], [], [], [], []
    seconds, base_seconds = np.zeros(pipeline.config.n_exits), 0.0
    for batch in _loader(dataset, batch_size, workers):
        errors.extend((item["path"], item["error"]) for item in batch if item["image"] is None)
        good = [item for item in batch if item["image"] is not None]
        if not good:
            continue
        images = [item["image"] for item in good]
        timing = np.zeros(pipeline.config.n_exits)
        parts.append(pipeline.exit_probabilities(images, _glances(good), timing=timing, files=photo_files(good)))
        seconds += timing
        if baseline is not None:
            start = time.perf_counter()
            if "baseline" in good[0]:  # made in the decoding workers (split_dataset asks for it)
                base_parts.append(_baseline_forward(baseline, torch.stack([item["baseline"] for item in good])))
            else:
                base_parts.append(baseline_probabilities(baseline, [dataset.root / str(item["path"]) for item in good],
                                                         [item.get("turns", 0) for item in good]))
            base_seconds += time.perf_counter() - start
        labels.extend(item["label"] for item in good)
        paths.extend(item["path"] for item in good)
    if not parts:
        raise DatasetError("no readable photo to evaluate")
    outputs = ExitOutputs.concat(parts)
    return Scored(outputs, np.asarray(labels, dtype=np.int64), paths, errors, seconds,
                  np.concatenate(base_parts) if base_parts else None, base_seconds, outputs.severities)


def _glances(items: list[dict]) -> torch.Tensor | None:
    """The items' glances (made from each file as training evaluates it), or None when the dataset made none."""
    return torch.stack([item["glance"] for item in items]) if items[0]["glance"] is not None else None


def glance_features(pipeline: PatchPipeline, dataset: PhotoDataset, *, batch_size: int = 32,
                    workers: int = 0) -> tuple[np.ndarray, list[int]]:
    """AnchorNet's pooled glance features [N, D] of every readable photo of ``dataset``, with their labels."""
    features, labels = [], []
    for batch in _loader(dataset, batch_size, workers):
        good = [item for item in batch if item["image"] is not None]
        if good:
            features.append(pipeline.locate([item["image"] for item in good], _glances(good)).features)
            labels.extend(item["label"] for item in good)
    if not features:
        raise DatasetError("no readable photo to compute features on")
    return np.concatenate(features), labels


def median_exposure(dataset: PhotoDataset, *, limit: int = 1000, batch_size: int = 32, workers: int = 0) -> float:
    """The median exposure (:func:`~agripatch.io.exposure.exposure`) of the glances of up to ``limit`` of
    ``dataset``'s readable photos, evenly spaced: the level the refusal's exposure view brings a photo to
    (:attr:`~agripatch.pipeline.refusal.Refusal.view_exposure`), set by training and ``agripatch calibrate`` alike."""
    picks = np.unique(np.linspace(0, len(dataset) - 1, min(limit, len(dataset))).round().astype(int)).tolist()
    levels = []
    for batch in _loader(Subset(dataset, picks), batch_size, workers):
        good = [item for item in batch if item["image"] is not None]
        if good:
            levels.append(exposure(_glances(good).numpy()))
    if not levels:
        raise DatasetError("no readable photo to meter the exposure of")
    return float(np.median(np.concatenate(levels)))


def own_class_top_shares(pipeline: PatchPipeline, dataset: PhotoDataset, *, batch_size: int = 32,
                         workers: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The plant share [N] of the cell that each readable photo's own class map ranks first (no cell prior), with
    the labels [N]: what :func:`~agripatch.pipeline.cells.off_leaf_classes` decides from."""
    shares, labels = [], []
    for batch in _loader(dataset, batch_size, workers):
        good = [item for item in batch if item["image"] is not None]
        if good:
            classes = np.array([item["label"] for item in good], np.int64)
            located = pipeline.locate([item["image"] for item in good], _glances(good), rank_by=classes)
            top = located.maps.reshape(len(good), -1).argmax(axis=1)
            shares.append(located.cell_shares[np.arange(len(good)), top])
            labels.append(classes)
    if not shares:
        raise DatasetError("no readable photo to rank cells on")
    return np.concatenate(shares), np.concatenate(labels)


def fit_off_leaf_classes(pipeline: PatchPipeline, dataset: PhotoDataset, classes: list[str], *,
                         batch_size: int = 32, workers: int = 0, log=print) -> list[int]:
    """The off-leaf classes (:func:`~agripatch.pipeline.cells.off_leaf_classes`) of ``dataset``'s training photos
    under ``pipeline``'s ``leaf_min_share``, logging each class's bare share and the list: the one fit of training
    and ``agripatch calibrate``."""
    min_share = pipeline.config.leaf_min_share
    shares, labels = own_class_top_shares(pipeline, dataset, batch_size=batch_size, workers=workers)
    bare = bare_top_cell_shares(shares, labels, len(classes), min_share)
    found = off_leaf_classes(shares, labels, len(classes), min_share)
    log(f"cell prior: photos whose top cell holds under {min_share:.0%} plant pixels: "
        f"{', '.join(f'{classes[c]} {share:.0%}' for c, share in bare.items())}; ranked by the class map alone, and not refused for lacking green: "
        f"{', '.join(classes[c] for c in found) or 'none'} ({len(labels)} training photos)")
    return found


def split_dataset(bundle: ModelBundle, data: Path, split: str, *, glance_only: bool = False) -> PhotoDataset:
    """The labelled photos of one split of ``data``, checked against the model's classes, decoded as it needs
    (``glance_only``: for the glance and no more, what a pass that reads only glances needs)."""
    rows = load_splits(data)
    data_classes = classes_of(rows)
    if data_classes != bundle.classes:
        raise DatasetError(f"classes of {data} {data_classes} do not match the model's {bundle.classes}")
    samples = samples_for(rows, split, bundle.classes)
    if not samples:
        raise DatasetError(f"split {split!r} of {data} is empty; choose --split train, val or test")
    glance = bundle.pipeline.config.glance_size
    with_baseline = bundle.baseline_spec is not None and not glance_only
    baseline_size = int(bundle.baseline_spec["input_size"]) if with_baseline else None
    return PhotoDataset(data, [path for path, _ in samples], labels=[label for _, label in samples],
                        min_side=glance if glance_only else bundle.pipeline.decode_min_side(), glance_size=glance,
                        baseline_size=baseline_size, orientation=bundle.pipeline.config.photo_orientation)
