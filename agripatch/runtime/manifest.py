"""``cascade.json``: what an `agripatch export` folder holds and everything the runtime needs besides the graphs.

Written by :mod:`agripatch.export.manifest`, read here without torch. The schema (format
``agripatch-export/1``) is documented in :func:`agripatch.export.manifest.build_manifest`; this reader
validates the parts the runtime uses (the cascade config with pydantic, the graph files and their sha256)
and exposes them as numpy arrays and plain values.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agripatch.io.sources import file_sha256
from agripatch.pipeline.config import CascadeConfig
from agripatch.pipeline.refusal import Refusal
from agripatch.runtime.errors import ExportFolderError

__all__ = ["EXPORT_FORMAT", "MANIFEST_NAME", "ExportManifest", "FullImageInput", "GraphEntry", "SymptomMapInput",
           "file_sha256", "manifest_sha256", "parse_thresholds"]

EXPORT_FORMAT = "agripatch-export/1"
MANIFEST_NAME = "cascade.json"
#: Graph sets an export folder may hold, by the name cascade.json lists them under.
VARIANTS = ("onnx", "onnx_int8", "tflite")


def manifest_sha256(folder: str | Path) -> str:
    """The identity of an export folder: the sha256 of its cascade.json (which lists every graph's sha256)."""
    return file_sha256(Path(folder) / MANIFEST_NAME)


def parse_thresholds(values: list[Any]) -> list[float]:
    """Thresholds as floats; strict JSON writes a never-exit threshold as the string "inf"."""
    out = [float(v) for v in values]
    if any(math.isnan(v) for v in out):
        raise ValueError("thresholds must not be NaN")
    return out


@dataclass(frozen=True)
class GraphEntry:
    """One graph file of the folder: its name, sha256, input name, output names and batch (``"dynamic"`` or N)."""

    file: str
    sha256: str
    input: str
    outputs: tuple[str, ...]
    batch: str | int = "dynamic"


@dataclass(frozen=True)
class FullImageInput:
    """How the full-image exit's graph reads a photo: shrunk to ``size`` x ``size``, normalised by mean and std."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> FullImageInput:
        """From cascade.json's ``full_image`` entry."""
        return cls(int(data["size"]), tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]))


@dataclass(frozen=True)
class SymptomMapInput:
    """How the symptom map's graph reads a photo: normalised by mean and std (its size: ``cascade.severity``)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> SymptomMapInput:
        """From cascade.json's ``symptom_map`` entry."""
        return cls(tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]))


@dataclass
class ExportManifest:
    """A parsed cascade.json (see the module docstring); ``data`` keeps the whole document."""

    folder: Path
    data: dict[str, Any]
    config: CascadeConfig
    classes: list[str]
    thresholds: list[float]
    cell_boxes: np.ndarray
    decode_min_side: int
    exit_macs: np.ndarray
    classifier_mean: tuple[float, float, float]
    classifier_std: tuple[float, float, float]
    refusal: Refusal | None = None
    full_image: FullImageInput | None = None
    symptom_map: SymptomMapInput | None = None

    @classmethod
    def load(cls, folder: str | Path) -> ExportManifest:
        """Read and check ``folder/cascade.json``; :class:`ExportFolderError` with the reason otherwise."""
        folder = Path(folder)
        path = folder / MANIFEST_NAME
        if not path.is_file():
            raise ExportFolderError(f"{str(folder)!r} is not an agripatch export folder (no {MANIFEST_NAME}); "
                                    "make one with `agripatch export RUN/model.pt --format onnx --out DIR`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ExportFolderError(f"{path} is unreadable: {error}") from None
        if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise ExportFolderError(f"{path} has format {found!r}, this agripatch reads {EXPORT_FORMAT!r}")
        try:
            config = CascadeConfig.from_stored(data["cascade"])
            classifier = data["classifier"]
            manifest = cls(
                folder=folder, data=data, config=config, classes=[str(c) for c in data["classes"]],
                thresholds=parse_thresholds(data["thresholds"]),
                cell_boxes=np.asarray(data["cell_boxes"], dtype=np.float32).reshape(-1, 4),
                decode_min_side=int(data["decode_min_side"]),
                exit_macs=np.asarray(data["stage_macs"], dtype=np.int64),
                classifier_mean=tuple(float(v) for v in classifier["mean"]),
                classifier_std=tuple(float(v) for v in classifier["std"]),
                refusal=Refusal.from_stored(data["refusal"]) if data.get("refusal") else None,
                full_image=FullImageInput.from_stored(data["full_image"]) if data.get("full_image") else None,
                symptom_map=SymptomMapInput.from_stored(data["symptom_map"]) if data.get("symptom_map") else None,
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ExportFolderError(f"{path} is incomplete or invalid: {type(error).__name__}: {error}") from None
        if len(manifest.thresholds) != config.n_exits or len(manifest.exit_macs) != config.n_exits:
            raise ExportFolderError(f"{path}: thresholds and stage_macs need {config.n_exits} values each")
        if config.full_image_exit and manifest.full_image is None:
            raise ExportFolderError(f"{path} asks for a full-image exit but has no full_image entry; export the "
                                    "model again with this version")
        if config.severity is not None and manifest.symptom_map is None:
            raise ExportFolderError(f"{path} asks for severity but has no symptom_map entry; export the model again "
                                    "with this version")
        return manifest

    def graph_names(self) -> list[str]:
        """The graphs this cascade runs: glance, classifier, and glance_classifier / full_image when it uses them."""
        names = ["glance", "classifier"]
        if self.config.glance == "classifier":
            names.append("glance_classifier")
        if self.config.full_image_exit:
            names.append("full_image")
        if self.config.severity is not None:
            names.append("symptom_map")
        return names

    def variants(self) -> list[str]:
        """The graph sets this folder holds (``onnx``, ``onnx_int8``, ``tflite``)."""
        return [name for name in VARIANTS if name in self.data.get("graphs", {})]

    def graph(self, variant: str, name: str, *, verify: bool = True) -> tuple[Path, GraphEntry]:
        """Path and entry of graph ``name`` (one of :meth:`graph_names`) of ``variant``;
        with ``verify`` its sha256 must match cascade.json, so the folder's identity covers the graphs."""
        graphs = self.data.get("graphs", {})
        if variant not in graphs:
            hint = " (export again with --int8)" if variant == "onnx_int8" else ""
            raise ExportFolderError(f"{self.folder} has no {variant} graphs{hint}; it holds: "
                                    f"{', '.join(self.variants()) or 'none'}")
        if name not in graphs[variant]:
            raise ExportFolderError(f"{self.folder}: cascade.json lists no {variant} graph {name!r}")
        raw = graphs[variant][name]
        entry = GraphEntry(file=str(raw["file"]), sha256=str(raw["sha256"]), input=str(raw["input"]),
                           outputs=tuple(str(o) for o in raw["outputs"]), batch=raw.get("batch", "dynamic"))
        path = self.folder / entry.file
        if Path(entry.file).name != entry.file or not path.is_file():
            raise ExportFolderError(f"{self.folder}: graph file {entry.file!r} is missing")
        if verify and file_sha256(path) != entry.sha256:
            raise ExportFolderError(f"{path} does not match the sha256 in cascade.json (modified or replaced); "
                                    "export the model again")
        return path, entry
