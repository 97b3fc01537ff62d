"""An export folder ready to diagnose photos on ONNX Runtime: the same interface as
:class:`agripatch.predict.predictor.Predictor`, so `predict folder` and the API work with either backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agripatch.errors import AgripatchError
from agripatch.io.sources import photo_files
from agripatch.io.text import text
from agripatch.pipeline.exits import ExitOutputs, expand_thresholds
from agripatch.pipeline.prediction import PatchPrediction
from agripatch.pipeline.predictor_base import BasePredictor
from agripatch.runtime.cascade import OnnxCascade
from agripatch.runtime.graphs import OnnxGraph, default_threads, providers_for
from agripatch.runtime.manifest import ExportManifest
from agripatch.runtime.photos import as_hwc, runtime_item

__all__ = ["OnnxPredictor"]


class OnnxPredictor(BasePredictor):
    """An exported cascade on ONNX Runtime with its exit thresholds.

    Args:
        folder: an `agripatch export` folder (with cascade.json).
        thresholds: exit thresholds (1 or k + 1 values); default: the calibrated ones in cascade.json.
        topk: how many classes each record lists.
        int8: use the int8 graphs (the folder must have been exported with ``--int8``).
        device: ``auto``, ``cpu`` or ``cuda`` (execution providers).
        threads: intra-op threads per graph; default ``OMP_NUM_THREADS`` when set.
        severity: False measures no severity; True requires the export to (its model measured severity); None as
            the export says.
    """

    def __init__(self, folder: str | Path, thresholds: Sequence[float] | None = None, *, topk: int = 3,
                 int8: bool = False, device: str = "cpu", threads: int | None = None, severity: bool | None = None):
        self.manifest = ExportManifest.load(folder)
        if severity and self.manifest.config.severity is None:
            raise AgripatchError(f"{folder} was exported from a model that measures no severity; export a model file "
                                 "with cascade.severity (or predict with the model file and --severity)")
        self.variant = "onnx_int8" if int8 else "onnx"
        providers = providers_for(device)
        threads = default_threads() if threads is None else threads
        graphs = {}
        for name in self.manifest.graph_names():
            path, entry = self.manifest.graph(self.variant, name)
            graphs[name] = OnnxGraph(path, input_name=entry.input, threads=threads, providers=providers)
        self.graphs = graphs
        self.cascade = OnnxCascade(self.manifest, graphs["glance"], graphs["classifier"],
                                   graphs.get("glance_classifier"), graphs.get("full_image"), graphs.get("symptom_map"),
                                   severity=severity is not False)
        self.config = config = self.cascade.config
        self.thresholds = expand_thresholds(thresholds if thresholds is not None else self.manifest.thresholds,
                                            config.n_exits)
        self.topk = topk
        self.classes = [text(str(c)) for c in self.manifest.classes]
        self.refusal = self.manifest.refusal

    def _cascade(self):
        return self.cascade

    def cell_boxes(self) -> np.ndarray:
        """Every AnchorNet cell's box on the glance, [gh * gw, 4] float32 (for heat overlays)."""
        return self.manifest.cell_boxes.copy()

    def decode_min_side(self) -> int:
        """Shorter side photos are decoded at (the exported ``PatchPipeline.decode_min_side``)."""
        return self.manifest.decode_min_side

    @property
    def precision(self) -> str:
        """The graphs' arithmetic: ``int8`` or ``float32``."""
        return "int8" if self.variant == "onnx_int8" else "float32"

    @property
    def device(self) -> str:
        """Where the graphs run, e.g. ``onnxruntime:CPUExecutionProvider`` (``-int8`` for the int8 graphs)."""
        suffix = "-int8" if self.variant == "onnx_int8" else ""
        return f"onnxruntime:{self.graphs['glance'].provider}{suffix}"

    def item(self, source: Any, index: int = 0, *, defer_full: bool = False) -> dict[str, Any]:
        """A photo (path, PIL image or HxWx3 uint8 array) decoded and resized as the cascade needs it, torch-free
        (``defer_full``: see :func:`agripatch.io.sources.load_item`)."""
        return runtime_item(source, index=index, min_side=self.decode_min_side(), glance_size=self.glance_size,
                            defer_full=defer_full, orientation=self.orientation)

    @staticmethod
    def _inputs(items: Sequence[dict[str, Any]]) -> tuple[list[np.ndarray], np.ndarray | None]:
        """HWC photos and, when every item carries one, the glance batch (numpy or torch items alike)."""
        images = [as_hwc(item["image"]) for item in items]
        if all(item.get("glance") is not None for item in items):
            return images, np.stack([np.asarray(item["glance"]) for item in items])
        return images, None

    def run(self, items: Sequence[dict[str, Any]]) -> list[PatchPrediction]:
        """The cascade's predictions for readable items (from :meth:`item`, ``photo_item`` or a PhotoDataset)."""
        if not items:
            return []
        images, glances = self._inputs(items)
        return self.cascade.predict(images, glances, thresholds=self.exit_thresholds(), files=photo_files(items))

    def exit_probabilities(self, items: Sequence[dict[str, Any]]) -> ExitOutputs:
        """Every exit's probabilities for readable items (to choose thresholds for a budget)."""
        images, glances = self._inputs(items)
        return self.cascade.exit_probabilities(images, glances, files=photo_files(items))
