"""Build ``cascade.json``, the description of an export folder that the runtime reads (torch-free) with
:class:`agripatch.runtime.manifest.ExportManifest`.
"""

from __future__ import annotations

import importlib.metadata
import time
from pathlib import Path
from typing import Any

from agripatch.version import __version__
from agripatch.pipeline.bundle import MODEL_FORMAT, ModelBundle
from agripatch.pipeline.exits import json_thresholds
from agripatch.runtime.manifest import EXPORT_FORMAT

__all__ = ["build_manifest", "package_versions"]


def package_versions(names: tuple[str, ...] = ("torch", "onnx", "onnxruntime", "onnxscript", "litert-torch",
                                                "ai-edge-litert")) -> dict[str, str]:
    """Versions of the packages that made the export (those installed)."""
    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def build_manifest(bundle: ModelBundle, source: Path, source_sha256: str, graphs: dict[str, dict[str, Any]],
                   *, opset: int | None, calibration: dict[str, Any] | None = None) -> dict[str, Any]:
    """The cascade.json document (schema ``agripatch-export/1``).

    Keys: ``format``; ``agripatch_version``; ``created``; ``source`` (model file name, sha256, format);
    ``classes``; ``cascade`` (``CascadeConfig.stored()``); ``thresholds`` (the calibrated exit thresholds, k + 1,
    "inf" for never); ``glance`` (size, grid, the AnchorNet normalisation applied inside the glance graph);
    ``anchornet`` (arch, receptive field); ``classifier`` (arch, mean, std, patch_size: the runtime normalises
    patches with them); ``cell_boxes`` ([gh * gw, 4] glance pixels, row-major); ``decode_min_side``;
    ``stage_macs`` (cumulative MACs of exiting at exit 0..k; the file keeps its old name); ``graphs`` (per graph set ``onnx`` /
    ``onnx_int8`` / ``tflite``, per graph ``glance`` / ``classifier`` / ``glance_classifier``: file, sha256,
    bytes, input, outputs, batch, check against PyTorch); ``refusal`` (the model's refusal rule, or null);
    ``full_image`` (with ``cascade.full_image_exit``: size, mean, std of the full-image model, which the runtime
    feeds the whole photo shrunk to that size and normalised; else null); ``symptom_map`` (with ``cascade.severity``:
    the map's mean and std; the float graph in every set; else null); ``onnx_opset``; ``calibration`` (int8
    only); ``versions``.
    """
    pipeline = bundle.pipeline
    cfg = pipeline.config
    anchornet = pipeline.anchornet
    rf = anchornet.receptive_field
    cells = anchornet.cell_boxes(cfg.glance_size, cfg.glance_size).detach().cpu().numpy()
    return {
        "format": EXPORT_FORMAT,
        "agripatch_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {"file": source.name, "sha256": source_sha256, "format": MODEL_FORMAT},
        "classes": [str(c) for c in bundle.classes],
        "cascade": cfg.stored(),
        "thresholds": json_thresholds(cfg.exit_thresholds()),
        "glance": {"size": cfg.glance_size, "grid": list(anchornet.grid(cfg.glance_size, cfg.glance_size)),
                   "input_range": "0..1 RGB, normalised inside the glance graph",
                   "mean": list(pipeline.anchornet_mean), "std": list(pipeline.anchornet_std)},
        "anchornet": {"arch": bundle.meta["anchornet"].get("arch"),
                      "receptive_field": {"size": rf.size, "stride": rf.stride, "offset": rf.offset}},
        "classifier": {"arch": bundle.meta["classifier"].get("arch"), "patch_size": cfg.patch_size,
                       "mean": list(pipeline.classifier_mean), "std": list(pipeline.classifier_std)},
        "cell_boxes": cells.tolist(),
        "decode_min_side": int(pipeline.decode_min_side()),
        "stage_macs": [int(v) for v in pipeline.exit_macs()],
        "refusal": bundle.refusal.to_stored() if bundle.refusal is not None else None,
        "full_image": _full_image(pipeline),
        "symptom_map": _symptom_map(pipeline),
        "graphs": graphs,
        "onnx_opset": opset,
        "calibration": calibration,
        "versions": package_versions(),
    }


def _full_image(pipeline: Any) -> dict[str, Any] | None:
    """How the full-image exit's graph reads a photo, or None without that exit."""
    if not pipeline.config.full_image_exit:
        return None
    spec = pipeline.full_image_spec
    return {"size": int(spec.size), "mean": [float(v) for v in spec.mean], "std": [float(v) for v in spec.std],
            "input_range": "the whole photo shrunk to size x size (area filter), 0..1 RGB, then (x - mean) / std"}


def _symptom_map(pipeline: Any) -> dict[str, Any] | None:
    """How the symptom map's graph reads a photo, or None without severity."""
    if pipeline.config.severity is None:
        return None
    reader = pipeline.symptoms
    return {"mean": [float(v) for v in reader.mean], "std": [float(v) for v in reader.std],
            "input_range": "the whole photo shrunk to map_hw (long side cascade.severity.side, area filter), 0..1 RGB, "
                           "then (x - mean) / std"}
