"""The cascade's two networks as ONNX graphs: torch.onnx.export with a dynamic batch, then a check on ONNX Runtime.

* glance: :class:`agripatch.pipeline.cascade.GlanceScorer` (a 0..1 glance [B, 3, G, G], normalised inside the
  graph -> ``logits`` [B, C], ``cam`` [B, C, gh, gw], pooled ``features`` [B, D], cells' ``leaf_share`` [B, N]);
* classifier: the patch classifier (normalised patches [B, 3, S, S] -> ``logits`` [B, C]); with
  ``glance="classifier"`` the same network is also exported at the glance size (``glance_classifier``);
* full_image: with ``cascade.full_image_exit``, the full-image model (the whole photo shrunk to its size and
  normalised [B, 3, F, F] -> ``logits`` [B, C]);
* symptom_map: with ``cascade.severity``, the symptom map (the whole photo shrunk with its aspect kept and
  normalised [B, 3, H, W], H and W any multiples of its stride -> ``logits`` [B, 3, H/s, W/s]).

Each graph is checked right after export: ONNX Runtime and PyTorch must agree on a random batch whose size
differs from the export example (so the batch really is dynamic).
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agripatch.export.errors import ExportError
from agripatch.pipeline.cascade import PatchPipeline
from agripatch.runtime.errors import require

__all__ = ["OPSET", "GraphSpec", "check_onnx", "export_onnx", "graph_specs"]

#: ONNX opset of the exported graphs (ONNX Runtime >= 1.14 runs it).
OPSET = 18


@dataclass
class GraphSpec:
    """One network to export: its name in cascade.json, the module, an example input, input and output names."""

    name: str
    module: nn.Module
    example: torch.Tensor
    input: str
    outputs: tuple[str, ...]
    stride: int | None = None  # height and width are dynamic too, in multiples of this (the symptom map)


def graph_specs(pipeline: PatchPipeline, batch: int = 2) -> list[GraphSpec]:
    """The graphs the runtime needs for this cascade, with random example inputs of ``batch`` photos."""
    cfg = pipeline.config
    gen = torch.Generator().manual_seed(0)
    glance = torch.rand(batch, 3, cfg.glance_size, cfg.glance_size, generator=gen)
    patches = torch.randn(batch, 3, cfg.patch_size, cfg.patch_size, generator=gen)
    specs = [GraphSpec("glance", pipeline.glance_scorer().eval(), glance, "glance",
                       ("logits", "cam", "features", "leaf_share")),
             GraphSpec("classifier", pipeline.classifier.eval(), patches, "patches", ("logits",))]
    if cfg.glance == "classifier":
        normalised = torch.randn(batch, 3, cfg.glance_size, cfg.glance_size, generator=gen)
        specs.append(GraphSpec("glance_classifier", pipeline.classifier.eval(), normalised, "glance", ("logits",)))
    if cfg.full_image_exit:
        whole = pipeline.full_image_spec
        photo = torch.randn(batch, 3, whole.size, whole.size, generator=gen)
        specs.append(GraphSpec("full_image", whole.network.eval(), photo, "photo", ("logits",)))
    if cfg.severity is not None:
        s = cfg.severity.stride
        photo = torch.randn(batch, 3, 4 * s, 6 * s, generator=gen)
        specs.append(GraphSpec("symptom_map", pipeline.symptom_map.eval(), photo, "photo", ("logits",), stride=s))
    return specs


def export_onnx(spec: GraphSpec, path: Path) -> None:
    """Write ``spec`` as a self-contained ONNX file (weights inside) with a dynamic batch dimension."""
    require("onnxscript", "agripatch export --format onnx")
    batch = torch.export.Dim("batch", min=1, max=65536)
    dims = {0: batch}
    if spec.stride is not None:
        dims.update({2: spec.stride * torch.export.Dim("rows", min=1, max=1024),
                     3: spec.stride * torch.export.Dim("columns", min=1, max=1024)})
    chatter = io.StringIO()
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            torch.onnx.export(spec.module, (spec.example,), str(path), input_names=[spec.input],
                              output_names=list(spec.outputs), opset_version=OPSET, dynamo=True,
                              external_data=False, dynamic_shapes=(dims,), verbose=False)
    except Exception as error:  # noqa: BLE001 - the exporter raises many types; report one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(f"torch.onnx.export failed for the {spec.name} graph: "
                          f"{type(error).__name__}: {first}") from None


def check_onnx(spec: GraphSpec, path: Path, batch: int = 3, tolerance: float = 1e-3) -> float:
    """Run the graph on ONNX Runtime and the module in PyTorch on the same random batch; return the largest
    absolute difference, or raise :class:`ExportError` when it exceeds ``tolerance`` x the output scale."""
    ort = require("onnxruntime", "agripatch export")
    gen = torch.Generator().manual_seed(1)
    shape = (batch,) + tuple(spec.example.shape[1:])
    if spec.stride is not None:  # another height and width than the example's, so they really are dynamic
        shape = (batch, 3, shape[2] + spec.stride, shape[3] + 3 * spec.stride)
    x = torch.rand(shape, generator=gen) if spec.name == "glance" else torch.randn(shape, generator=gen)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(list(spec.outputs), {spec.input: x.numpy()})
    with torch.no_grad():
        ref = spec.module(x)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    worst = 0.0
    for name, a, b in zip(spec.outputs, got, ref):
        b = b.float().numpy()
        if a.shape != b.shape:
            raise ExportError(f"the exported {spec.name} graph gives {name} of shape {a.shape}, PyTorch {b.shape}")
        diff = float(np.abs(a - b).max()) if a.size else 0.0
        if diff > tolerance * max(1.0, float(np.abs(b).max())):
            raise ExportError(f"the exported {spec.name} graph disagrees with PyTorch ({name}: max |diff| {diff:.3g})")
        worst = max(worst, diff)
    return worst
