"""The Python API, as small as the CLI: load a model file, predict photos.

    import agripatch
    model = agripatch.load("runs/ibean/model.pt")
    print(model.classes)
    for record in model.predict(["leaf.jpg", pil_image, numpy_array]):
        print(record["label"], record["confidence"], record["stage"], [b["box"] for b in record["boxes"]])

Each record is what `agripatch predict folder` writes to ``predictions.jsonl`` (without crop and overlay
file names): label, confidence, top-k, exit stage, MACs spent, the boxes the diagnosis rests on in
the original photo's pixels, and (when the model measures it) severity: the share of the leaf with symptoms.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agripatch.pipeline.config import PREDICT_BATCH_SIZE

__all__ = ["Model", "load"]


class Model:
    """A trained agripatch model (glance + patches cascade) ready to predict."""

    def __init__(self, predictor):
        self._predictor = predictor

    @property
    def classes(self) -> list[str]:
        """The class names, in the order of the model's outputs."""
        return list(self._predictor.classes)

    @property
    def thresholds(self) -> list[float]:
        """The exit thresholds in use (glance + k patches)."""
        return list(self._predictor.thresholds)

    def predict(self, photos: Sequence[Any] | Any, *, batch_size: int = PREDICT_BATCH_SIZE) -> list[dict[str, Any]]:
        """Diagnose photos: file paths, PIL images, HxWx3 uint8 RGB arrays or CHW tensors (one or a list).

        Returns one record per photo, in order; an unreadable file gives ``{"path", "error"}``.
        """
        if isinstance(photos, (str, Path)) or not isinstance(photos, Sequence):
            photos = [photos]
        return self._predictor.predict(list(photos), batch_size=batch_size)

    def __repr__(self) -> str:
        return f"agripatch.Model(classes={self.classes}, thresholds={self.thresholds})"


def load(path: str | Path, *, device: str = "auto", thresholds: Sequence[float] | None = None, topk: int = 3,
         severity: bool | None = None, precision: str = "auto") -> Model:
    """Load a model file written by `agripatch train` (only that file is needed).

    Args:
        path: the model file (``RUN/model.pt``).
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        thresholds: exit thresholds (1 or k + 1 values) instead of the calibrated ones in the file.
        topk: how many classes each record lists.
        severity: True adds each photo's ``severity`` (percent of the leaf with symptoms) and ``severity_class``
            (with the package's symptom map when the file holds none); None: as the model file says.
        precision: the networks' dtype: ``auto`` (bf16 on CPUs with AMX units, else float32), ``float32`` or
            ``bfloat16``.

    Example::

        model = agripatch.load("runs/ibean/model.pt")
        records = model.predict(["a.jpg", "b.jpg"])
    """
    from agripatch.predict.predictor import Predictor

    return Model(Predictor.from_file(path, device=device, thresholds=thresholds, topk=topk, severity=severity,
                                     precision=precision))
