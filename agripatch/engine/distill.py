"""Distillation: a cheap stage learns from a larger full-image model's view of each training photo.

The teacher is the full-image baseline inside another agripatch model file (e.g. a ``mobilenetv2_100`` at
512 px trained with the same data). Its probabilities for every training photo are computed once, from the
photo made the way its own training evaluated it, and kept in the run folder (``teacher_probs.npz``), so a
resumed run reads the same targets. A distilled stage adds ``weight`` times the usual soft-target term to
its classification loss: T^2 * KL(teacher || student) at temperature T (Hinton et al. 2015); the patch stage
gives each patch its photo's targets. Validation, prediction and the model file are unchanged.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agripatch.engine.scoring import baseline_probabilities
from agripatch.errors import CheckpointError, DatasetError
from agripatch.io.atomic import atomic_write_bytes
from agripatch.io.sources import file_sha256
from agripatch.pipeline.bundle import ModelBundle, load_model_file

__all__ = ["DistilledForward", "TeacherTargets", "distill_loss", "load_teacher", "teacher_targets"]

TARGETS_FILE = "teacher_probs.npz"


def distill_loss(student_logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Mean over rows of T^2 * KL(teacher_T || student_T): both distributions softened at ``temperature``
    (the teacher's as ``softmax(log p / T)``), scaled by T^2 so its gradient keeps the size of a hard-label loss."""
    if student_logits.shape != teacher_probs.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher probabilities "
                         f"{tuple(teacher_probs.shape)} must have the same shape")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    t = float(temperature)
    dtype = torch.promote_types(student_logits.dtype, torch.float32)  # bf16 logits: the loss in fp32
    teacher = torch.softmax(torch.log(teacher_probs.to(dtype).clamp_min(1e-12)) / t, dim=1)
    student = F.log_softmax(student_logits.to(dtype) / t, dim=1)
    return F.kl_div(student, teacher, reduction="batchmean") * t * t


def load_teacher(path: str | Path, classes: list[str]) -> ModelBundle:
    """The teacher model file, checked to hold a full-image baseline for these classes (clear errors otherwise)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"teacher model file {str(path)!r} does not exist; pass the model.pt of a run "
                              "that trained a full-image baseline")
    bundle = load_model_file(path)
    if bundle.baseline is None:
        raise CheckpointError(f"teacher {str(path)!r} has no full-image baseline to learn from; train it with "
                              "stages.baseline.enabled=true (e.g. data.baseline_size=512)")
    if list(bundle.classes) != list(classes):
        raise DatasetError(f"teacher {str(path)!r} knows the classes {bundle.classes}, the data has {classes}; "
                           "distil from a model trained on the same class folders")
    return bundle


def _key(rel: str | Path) -> str:
    """A training photo's path relative to the data root, spelled one way."""
    return Path(rel).as_posix()


class TeacherTargets:
    """The teacher's probabilities per training photo (relative path -> [C] float32)."""

    def __init__(self, paths: list[str], probs: np.ndarray):
        if len(paths) != len(probs):
            raise ValueError(f"{len(paths)} paths for {len(probs)} rows of probabilities")
        self.paths = [_key(p) for p in paths]
        self.probs = np.asarray(probs, dtype=np.float32)
        self._row = {p: i for i, p in enumerate(self.paths)}

    def __getitem__(self, rel: str | Path) -> torch.Tensor:
        return torch.from_numpy(self.probs[self._row[_key(rel)]])

    def save(self, path: Path, teacher: str) -> None:
        """Write them atomically with the teacher's identity, so a resume can tell they are its targets."""
        buffer = io.BytesIO()
        np.savez(buffer, paths=np.array(self.paths), probs=self.probs, teacher=np.array(str(teacher)))
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path, teacher: str, paths: list[str]) -> TeacherTargets | None:
        """Saved targets of this teacher for exactly these photos, else None (they are computed again)."""
        if not path.is_file():
            return None
        with np.load(path, allow_pickle=False) as saved:
            if str(saved["teacher"]) != str(teacher) or list(saved["paths"]) != [_key(p) for p in paths]:
                return None
            return cls(list(saved["paths"]), saved["probs"])


def teacher_targets(teacher: str | Path, classes: list[str], root: Path, paths: list[str], cache: Path, *,
                    device: torch.device, batch_size: int = 32, progress=None) -> TeacherTargets:
    """The teacher's probabilities for the training photos ``paths`` (under ``root``): read from ``cache`` when it
    holds this teacher's targets for these photos, else computed once (each photo as the teacher's training
    evaluated it) and written there."""
    identity = f"sha256:{file_sha256(teacher)}"  # saved targets are reused only for the very same weights
    saved = TeacherTargets.load(cache, identity, paths)
    if saved is not None:
        return saved
    bundle = load_teacher(teacher, classes)
    bundle.baseline.to(device)
    bundle.pipeline.to(device)
    task = progress.add_task("teacher", total=len(paths), info="") if progress is not None else None
    parts = []
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        parts.append(baseline_probabilities(bundle, [root / str(p) for p in chunk]))
        if task is not None:
            progress.update(task, advance=len(chunk))
    if task is not None:
        progress.remove_task(task)
    targets = TeacherTargets(paths, np.concatenate(parts) if parts else np.zeros((0, len(classes)), np.float32))
    targets.save(cache, identity)
    return targets


class DistilledForward:
    """A stage's forward plus ``weight`` times :func:`distill_loss` against the batch's ``teacher`` rows, as one
    more extra loss term. Each teacher row is repeated for the logits rows of its photo (K patches per photo).
    Validation (eval mode) is the wrapped forward unchanged."""

    def __init__(self, inner: Callable, weight: float, temperature: float):
        self.inner = inner
        self.weight = float(weight)
        self.temperature = float(temperature)

    def __call__(self, model: nn.Module, batch: dict[str, Any], mixup=None):
        out = self.inner(model, batch, mixup)
        if not model.training or "teacher" not in batch:
            return out
        logits = out[0]
        teacher = batch["teacher"].to(logits.device)
        if len(logits) % len(teacher):
            raise ValueError(f"{len(logits)} logits rows for {len(teacher)} photos' teacher targets")
        teacher = teacher.repeat_interleave(len(logits) // len(teacher), dim=0)
        return (*out, self.weight * distill_loss(logits, teacher, self.temperature))
