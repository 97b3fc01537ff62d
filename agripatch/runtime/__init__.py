"""agripatch.runtime: the whole cascade on ONNX Runtime, without torch.

Reads an `agripatch export` folder (cascade.json + ONNX graphs) and runs the one cascade core
(:mod:`agripatch.pipeline.core`: cell selection, aggregation, exits) over the ONNX graphs: decode
(:mod:`agripatch.io.images`), glance resize (:mod:`agripatch.io.glance`), the glance graph, full-resolution crops
in numpy (:mod:`.roi`), the classifier graph per exit (:mod:`.cascade`).
:class:`~agripatch.runtime.predictor.OnnxPredictor` has the interface of the torch ``Predictor``:

    from agripatch.runtime import OnnxPredictor
    records = OnnxPredictor("export/").predict(["leaf.jpg"])

Needs ``pip install 'agripatch[onnx]'``. Importing this package imports neither torch nor onnxruntime;
onnxruntime loads when a predictor is built.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OnnxPredictor", "load"]


def __getattr__(name: str) -> Any:
    if name == "OnnxPredictor":
        from agripatch.runtime.predictor import OnnxPredictor

        return OnnxPredictor
    raise AttributeError(name)


def load(folder, **kwargs: Any):
    """An :class:`~agripatch.runtime.predictor.OnnxPredictor` for an export folder (``kwargs``: thresholds, topk,
    int8, device, threads)."""
    from agripatch.runtime.predictor import OnnxPredictor

    return OnnxPredictor(folder, **kwargs)
