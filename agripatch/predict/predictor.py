"""A model file ready to diagnose photos: the one path from decoded photos to the records users get.

`predict folder` and the Python API (:func:`agripatch.load`) both go through :class:`Predictor`: the
same decode rule, the same exit thresholds, the same record (label, confidence, top-k, exit stage,
boxes in the original photo's pixels).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agripatch.data.photos import photo_item
from agripatch.io.sources import photo_files
from agripatch.pipeline.bundle import ModelBundle, load_model_file
from agripatch.pipeline.cascade import PatchPrediction
from agripatch.pipeline.exits import ExitOutputs, expand_thresholds
from agripatch.pipeline.predictor_base import BasePredictor
from agripatch.predict.outputs import text

__all__ = ["Predictor"]


class Predictor(BasePredictor):
    """A loaded cascade with its exit thresholds.

    Args:
        bundle: the loaded model file (:func:`~agripatch.pipeline.bundle.load_model_file`).
        thresholds: exit thresholds (1 or k + 1 values); default: the model file's calibrated ones.
        topk: how many classes each record lists.
    """

    def __init__(self, bundle: ModelBundle, thresholds: Sequence[float] | None = None, *, topk: int = 3):
        self.bundle = bundle
        self.pipeline = bundle.pipeline
        config = self.pipeline.config
        self.thresholds = expand_thresholds(thresholds if thresholds is not None else config.exit_thresholds(),
                                            config.n_exits)
        self.topk = topk
        self.classes = [text(str(c)) for c in bundle.classes]
        self.refusal = bundle.refusal

    @classmethod
    def from_file(cls, path: str | Path, *, device: str = "auto", severity: bool | None = None,
                  precision: str = "auto", **kwargs: Any) -> Predictor:
        """Load a model file onto ``device`` (auto: CUDA when present). ``severity``: True measures every photo's
        severity (with the package's symptom map when the file holds none), False never, None as the file says.
        ``precision``: the networks' dtype (auto: bf16 on CPUs with AMX, else float32;
        :func:`~agripatch.device.inference_dtype`)."""
        from agripatch.allocator import tune_memory_allocator
        from agripatch.device import resolve_device

        tune_memory_allocator()
        bundle = load_model_file(path)
        bundle.pipeline = bundle.pipeline.measuring_severity(severity)
        bundle.place(resolve_device(device), precision)
        bundle.pipeline.exit_macs()  # metered (and cached) now, not inside the first batch
        return cls(bundle, **kwargs)

    @property
    def config(self):
        """The cascade's settings (the pipeline's own, so a refit config is seen at once)."""
        return self.pipeline.config

    def _cascade(self):
        return self.pipeline

    def cell_boxes(self) -> np.ndarray:
        """Every AnchorNet cell's box on the glance, [gh * gw, 4] float32 (for heat overlays)."""
        return self.pipeline.anchornet.cell_boxes(self.glance_size, self.glance_size).detach().cpu().numpy()

    def decode_min_side(self) -> int:
        """Shorter side photos are decoded at (see :meth:`PatchPipeline.decode_min_side`)."""
        return self.pipeline.decode_min_side()

    def item(self, source: Any, index: int = 0, *, defer_full: bool = False) -> dict[str, Any]:
        """A photo (path, PIL image, HxWx3 uint8 array or CHW tensor) decoded as the cascade needs it
        (``defer_full``: see :func:`agripatch.io.sources.load_item`)."""
        return photo_item(source, index=index, min_side=self.decode_min_side(), glance_size=self.pipeline.config.glance_size,
                          defer_full=defer_full, orientation=self.orientation)

    def run(self, items: Sequence[dict[str, Any]]) -> list[PatchPrediction]:
        """The cascade's predictions for readable items (dicts from :meth:`item` or a PhotoDataset)."""
        if not items:
            return []
        glances = torch.stack([item["glance"] for item in items]) if items[0]["glance"] is not None else None
        return self.pipeline.predict([item["image"] for item in items], glances, thresholds=self.exit_thresholds(),
                                     files=photo_files(items))

    def exit_probabilities(self, items: Sequence[dict[str, Any]]) -> ExitOutputs:
        """Every exit's probabilities for readable items (to choose thresholds for a budget)."""
        glances = torch.stack([item["glance"] for item in items]) if items[0]["glance"] is not None else None
        return self.pipeline.exit_probabilities([item["image"] for item in items], glances, files=photo_files(items))

    @property
    def device(self) -> str:
        """Where the models run."""
        return str(self.pipeline.device)

    @property
    def precision(self) -> str:
        """The dtype the networks run in (``float32`` or ``bfloat16``)."""
        return self.bundle.precision
