"""ONNX graphs in ONNX Runtime sessions: device to execution providers, thread count, one call per batch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from agripatch.errors import AgripatchError
from agripatch.runtime.errors import require

__all__ = ["CPU_CALL_ROWS", "OnnxGraph", "default_threads", "providers_for"]

#: Rows per ONNX Runtime call on a CPU. A larger batch is run as several calls: at 64 glances a call the iBean glance
#: graph's activations outgrow the cache (1.37 ms a glance, against 1.16 in calls of 16; the patch classifier is
#: the same at 16 or 64; benchmarks/README.md, "Where the cascade's time goes").
CPU_CALL_ROWS = 16


def default_threads() -> int | None:
    """Intra-op threads: ``OMP_NUM_THREADS`` when set (what torch honours, so both backends share the machine
    alike), else None (ONNX Runtime's own default, one per physical core)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def providers_for(device: str) -> list[str]:
    """Execution providers for ``auto`` (CUDA when ONNX Runtime has it, else CPU), ``cpu`` or ``cuda``."""
    ort = require("onnxruntime", "the onnxruntime backend")
    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device in ("auto", "cuda"):
        if "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if device == "cuda":
            raise AgripatchError("--device cuda: this onnxruntime has no CUDAExecutionProvider "
                                 "(install onnxruntime-gpu) ; use --device cpu")
        return ["CPUExecutionProvider"]
    raise AgripatchError(f"unknown device {device!r}: use auto, cpu or cuda")


class OnnxGraph:
    """One graph file in an InferenceSession: ``graph(x)`` -> its outputs (float32 arrays) for a batch ``x``."""

    def __init__(self, path: str | Path, *, input_name: str, threads: int | None = None,
                 providers: list[str] | None = None):
        ort = require("onnxruntime", "the onnxruntime backend")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        # idle pool threads sleep instead of spinning: between graph calls the cascade crops and decides exits on
        # the same cores, and spinning threads took those cores from it (benchmarks/README.md "Where the time goes")
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.path = Path(path)
        self.session = ort.InferenceSession(str(path), sess_options=options,
                                            providers=providers or ["CPUExecutionProvider"])
        self.input_name = input_name
        self.provider = self.session.get_providers()[0]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        """Run the graph on one non-empty batch (float32 [B, ...]); returns its outputs as float32 arrays. On a CPU
        a batch of more than :data:`CPU_CALL_ROWS` rows runs as several calls, its outputs joined."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows = len(x)
        step = CPU_CALL_ROWS if self.provider == "CPUExecutionProvider" else rows
        if rows <= step:
            return [np.asarray(out, dtype=np.float32) for out in self.session.run(None, {self.input_name: x})]
        parts = [self.session.run(None, {self.input_name: x[i:i + step]}) for i in range(0, rows, step)]
        return [np.concatenate([np.asarray(p[k], dtype=np.float32) for p in parts]) for k in range(len(parts[0]))]

    def describe(self) -> dict[str, Any]:
        """File name and provider, for summaries."""
        return {"file": self.path.name, "provider": self.provider}
