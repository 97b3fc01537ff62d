"""Static int8 quantization of an exported graph with ONNX Runtime (QDQ, uint8 activations, per-channel weights).

Choices, and why:

* QDQ format, uint8 activations and int8 weights (U8S8): on this project's x86 CPU (AVX512-VNNI) it ran the
  cascade 1.5x faster than fp32, where ONNX Runtime's S8S8 default was slower than fp32 (iBean validation,
  `benchmarks/export_check.py`);
* per-channel weight scales: the networks are MobileNet/EfficientNet-like, whose depthwise convolutions have
  very different ranges from channel to channel, where one scale per tensor loses most of the precision;
* MinMax calibration with a moving average over the calibration batches, on the float cascade's own glances and
  patches (:mod:`agripatch.export.calibration`): a few extreme batches no longer set the ranges (top-1 agreement
  with fp32 0.983 -> 0.991); ONNX Runtime's percentile and entropy calibrators fail on these graphs;
* the heads stay float: the nodes that compute the graph outputs (the logits' Gemm, the CAM's Einsum and
  its scaling) are excluded, so probabilities keep their resolution and the CAM that ranks the cells is not
  flattened to 256 levels (ties would change which cells are read). They are a negligible share of the MACs;
* ``quant_pre_process`` (shape inference and graph optimisation) first, as ONNX Runtime advises.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from agripatch.export.errors import ExportError
from agripatch.runtime.errors import require

__all__ = ["head_nodes", "quantize_graph"]

#: Ops that may sit between the last feature map and an output (walked back from the outputs).
_HEAD_OPS = {"Gemm", "MatMul", "Einsum", "Div", "Mul", "Add", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
             "Transpose", "Identity"}


def head_nodes(model) -> list[str]:
    """Names of the nodes computing the graph outputs from the last pooled/feature tensors (kept float)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    keep, stack = [], [o.name for o in model.graph.output]
    seen: set[str] = set()
    while stack:
        node = producers.get(stack.pop())
        if node is None or node.name in seen or node.op_type not in _HEAD_OPS:
            continue
        seen.add(node.name)
        keep.append(node.name)
        stack.extend(node.input)
    return keep


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over one array, in batches."""

    def __init__(self, input_name: str, data: np.ndarray, batch_size: int = 16):
        self.input_name, self.data, self.batch_size, self.start = input_name, data, batch_size, 0

    def get_next(self):
        """The next calibration batch as ``{input name: array}``, or None at the end."""
        if self.start >= len(self.data):
            return None
        batch = self.data[self.start:self.start + self.batch_size]
        self.start += self.batch_size
        return {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)}

    def rewind(self) -> None:
        """Start again from the first batch (the calibrator may read the data twice)."""
        self.start = 0


def quantize_graph(src: Path, dst: Path, input_name: str, data: np.ndarray) -> dict:
    """Quantize the float graph ``src`` into ``dst`` calibrated on ``data``; returns what was done (for
    cascade.json)."""
    onnx = require("onnx", "agripatch export --int8")
    require("onnxruntime", "agripatch export --int8")
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    with tempfile.TemporaryDirectory(dir=dst.parent) as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        try:
            quant_pre_process(str(src), str(prepared))
        except Exception as error:  # noqa: BLE001 - report the tool's reason on one line
            raise ExportError(f"int8: onnxruntime quant_pre_process failed on {src.name}: {error}") from None
        excluded = head_nodes(onnx.load(str(prepared)))
        try:
            quantize_static(str(prepared), str(dst), _Reader(input_name, data), quant_format=QuantFormat.QDQ,
                            per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=excluded,
                            extra_options={"CalibMovingAverage": True})
        except Exception as error:  # noqa: BLE001
            raise ExportError(f"int8: onnxruntime quantize_static failed on {src.name}: {error}") from None
    return {"format": "QDQ", "activations": "uint8", "weights": "int8 per-channel", "calibration": "MinMax (moving average)",
            "float_nodes": excluded, "calibration_inputs": int(len(data))}
