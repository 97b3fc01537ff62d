"""The self-describing model file: everything `evaluate` and `predict` need, in one safe file.

It holds the architecture names and weights of AnchorNet, the patch classifier and (optionally) the
full-image baseline and the symptom map that measures severity, the class names, each model's normalisation and input size, the cascade settings
(K, sizes, thresholds) and the recipe that made it. It is a dict of tensors and primitives saved with
`torch.save` and read with `weights_only=True`: opening a model file never runs code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from agripatch.errors import CheckpointError
from agripatch.io.torchfile import (
    cpu_state_dict,
    load_matching_state,
    load_object,
    save_object,
)
from agripatch.models.fuse import inference_model
from agripatch.pipeline.cascade import FullImage, PatchPipeline, SymptomReader
from agripatch.pipeline.config import CascadeConfig
from agripatch.pipeline.refusal import Refusal

MODEL_FORMAT = "agripatch-model/1"


@dataclass
class ModelSpec:
    """One network in the bundle: registered architecture name, its weights and its input normalisation."""

    arch: str
    state_dict: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: int
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form for the model file."""
        return {"arch": self.arch, "state_dict": self.state_dict, "mean": list(self.mean), "std": list(self.std),
                "input_size": int(self.input_size), "kwargs": dict(self.kwargs)}

    @classmethod
    def from_module(cls, arch: str, module: nn.Module, mean, std, input_size: int, **kwargs) -> ModelSpec:
        """Capture a trained module's weights (on CPU) with its description."""
        return cls(arch, cpu_state_dict(module), tuple(mean), tuple(std), input_size, kwargs)


@dataclass
class ModelBundle:
    """A loaded model file: the ready cascade, the optional baseline and the metadata."""

    classes: list[str]
    pipeline: PatchPipeline
    baseline: nn.Module | None
    baseline_spec: dict[str, Any] | None
    meta: dict[str, Any]
    path: Path | None = None
    refusal: Refusal | None = None
    dtype: torch.dtype = torch.float32

    @property
    def precision(self) -> str:
        """The dtype the networks run in, as ``evaluate`` and ``predict`` report it (``float32``, ``bfloat16``)."""
        return str(self.dtype).removeprefix("torch.")

    def place(self, device: torch.device, precision: str = "auto") -> torch.dtype:
        """Put every network on ``device`` in the dtype inference runs in there (``precision``: see
        :func:`~agripatch.device.inference_dtype`; bf16 on CPUs with AMX), in eval mode; returns that dtype.

        The one placement rule of ``predict`` and ``evaluate``, so the cascade and the baseline it is compared
        with always run alike. Only the networks change dtype; the cascade's own arithmetic stays float32.
        """
        from agripatch.device import inference_dtype

        self.dtype = inference_dtype(device, precision)
        pipeline = self.pipeline.to(device)
        for network in (pipeline.anchornet, pipeline.classifier, pipeline.full_image, pipeline.symptom_map,
                        self.baseline):
            if network is not None:
                network.to(device=device, dtype=self.dtype).eval()
        pipeline.eval()
        return self.dtype


def save_model_file(
    path: str | Path,
    *,
    classes: list[str],
    anchornet: ModelSpec,
    classifier: ModelSpec,
    cascade: CascadeConfig | dict[str, Any],
    baseline: ModelSpec | None = None,
    recipe_yaml: str = "",
    metrics: dict[str, Any] | None = None,
    refusal: Refusal | None = None,
    symptom_map: ModelSpec | None = None,
) -> Path:
    """Write the one model file atomically (``symptom_map``: the network of ``cascade.severity``)."""
    obj = {
        "format": MODEL_FORMAT,
        "classes": list(classes),
        "anchornet": anchornet.to_dict(),
        "classifier": classifier.to_dict(),
        "baseline": baseline.to_dict() if baseline is not None else None,
        "cascade": cascade.stored() if isinstance(cascade, CascadeConfig) else CascadeConfig.from_stored(cascade).stored(),
        "recipe": recipe_yaml,
        "metrics": dict(metrics or {}),
        "refusal": refusal.to_stored() if refusal is not None else None,
        "symptom_map": symptom_map.to_dict() if symptom_map is not None else None,
    }
    return save_object(obj, path)


def _probe(spec: dict[str, Any]) -> torch.Tensor:
    size = max(int(spec.get("input_size", 224)), 224)
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def _build_anchornet(spec: dict[str, Any], classes: list[str], source: str, fold: bool) -> nn.Module:
    from agripatch.models import create_anchornet

    model = create_anchornet(spec["arch"], num_classes=len(classes), pretrained=False, class_names=list(classes),
                             **spec.get("kwargs", {}))
    load_matching_state(model, spec["state_dict"], source)
    return inference_model(model, _probe(spec), method="forward_cam") if fold else model.eval()


def _build_classifier(spec: dict[str, Any], classes: list[str], source: str, fold: bool) -> nn.Module:
    from agripatch.models import create_classifier

    model, _ = create_classifier(spec["arch"], num_classes=len(classes), pretrained=False, **spec.get("kwargs", {}))
    load_matching_state(model, spec["state_dict"], source)
    return inference_model(model, _probe(spec)) if fold else model.eval()


def _build_symptom_map(spec: dict[str, Any], source: str, fold: bool) -> nn.Module:
    from agripatch.models.symptom_map import create_symptom_map

    model = create_symptom_map(spec["arch"], **spec.get("kwargs", {}))
    load_matching_state(model, spec["state_dict"], source)
    return inference_model(model, torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))) if fold \
        else model.eval()


def shipped_symptom_map_spec(config: CascadeConfig) -> ModelSpec | None:
    """The model file entry of the shipped symptom map a cascade measures severity with (None without
    ``cascade.severity``): its unfolded weights, so the file loads like every other network."""
    from agripatch.models.symptom_map import shipped_symptom_map

    if config.severity is None:
        return None
    network = shipped_symptom_map(config.severity.map)
    return ModelSpec.from_module(config.severity.map, network, network.cfg["mean"], network.cfg["std"],
                                 config.severity.side)


def _cascade_config(stored: Any, path: Path) -> CascadeConfig:
    try:
        return CascadeConfig.from_stored(stored)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"model file {str(path)!r} has an invalid cascade entry: {error}") from None


def load_model_file(path: str | Path, *, fold: bool = True) -> ModelBundle:
    """Rebuild the cascade (and baseline) from a model file alone, for inference; clear errors for foreign files.

    ``fold`` lays the networks out for inference (:func:`~agripatch.models.fuse.inference_model`: BatchNorm
    folded into the convolutions, channels-last weights): the same function, several times faster on the
    CPU; pass False to get the networks exactly as trained.
    """
    path = Path(path)
    obj = load_object(path, MODEL_FORMAT)
    try:
        classes = list(obj["classes"])
        anchornet = _build_anchornet(obj["anchornet"], classes, str(path), fold)
        classifier = _build_classifier(obj["classifier"], classes, str(path), fold)
        cascade = _cascade_config(obj["cascade"], path)
        baseline, full_image = None, None
        if obj.get("baseline") is not None:
            baseline = _build_classifier(obj["baseline"], classes, str(path), fold)
            full_image = FullImage.of(baseline, obj["baseline"])
        if cascade.full_image_exit and full_image is None:
            raise CheckpointError(f"model file {str(path)!r} asks for a full-image exit but holds no baseline model")
        symptoms = None
        if obj.get("symptom_map") is not None:
            symptoms = SymptomReader.of(_build_symptom_map(obj["symptom_map"], str(path), fold), obj["symptom_map"])
        if cascade.severity is not None and symptoms is None:
            raise CheckpointError(f"model file {str(path)!r} asks for severity but holds no symptom map")
        pipeline = PatchPipeline(
            anchornet, classifier, cascade,
            anchornet_mean=obj["anchornet"]["mean"], anchornet_std=obj["anchornet"]["std"],
            classifier_mean=obj["classifier"]["mean"], classifier_std=obj["classifier"]["std"],
            full_image=full_image if cascade.full_image_exit else None,
            symptoms=symptoms if cascade.severity is not None else None,
        )
    except KeyError as error:
        raise CheckpointError(f"model file {str(path)!r} lacks the entry {error}; was it written by agripatch train?") from None
    meta = {key: obj[key] for key in ("cascade", "recipe", "metrics")}
    baseline_spec = None
    if obj.get("baseline") is not None:
        baseline_spec = {key: value for key, value in obj["baseline"].items() if key != "state_dict"}
    meta["anchornet"] = {key: value for key, value in obj["anchornet"].items() if key != "state_dict"}
    meta["classifier"] = {key: value for key, value in obj["classifier"].items() if key != "state_dict"}
    refusal = Refusal.from_stored(obj["refusal"]) if obj.get("refusal") else None  # None in pre-refusal files
    pipeline.refusal = refusal
    return ModelBundle(classes=classes, pipeline=pipeline.eval(), baseline=baseline, baseline_spec=baseline_spec,
                       meta=meta, path=path, refusal=refusal)
