"""Downstream classifiers: timm models with offline ImageNet weights and a new class head.

The downstream network reads the patches AnchorNet selects (and, in the cascade, the whole photo).
It is an ordinary timm model; this module only makes the weights offline-safe (through
:mod:`agripatch.models.weights`) and returns the preprocessing the weights were trained with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from agripatch.errors import WeightsError
from agripatch.models.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    WeightSource,
    load_weights,
    offline_architectures,
    resolve_imagenet_weights,
)

__all__ = ["create_classifier", "list_offline_classifiers"]


def _timm_defaults(model: nn.Module) -> dict[str, Any]:
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    return {
        "mean": tuple(cfg.get("mean", IMAGENET_MEAN)),
        "std": tuple(cfg.get("std", IMAGENET_STD)),
        "input_size": tuple(cfg.get("input_size", (3, 224, 224))),
        "interpolation": cfg.get("interpolation", "bilinear"),
        "crop_pct": cfg.get("crop_pct", 0.875),
    }


def _load(model: nn.Module, state: dict, origin: str) -> None:
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise WeightsError(f"{origin} does not fit {type(model).__name__}: {first}"[:600]) from exc


def _fine_tuned(name: str, num_classes: int, path: Path, **kwargs: Any) -> tuple[nn.Module, str] | None:
    """A file that already holds this timm model with ``num_classes`` outputs (a fine-tuned one)."""
    import timm

    state = load_weights(path)
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
    own = model.state_dict()
    if set(state) != set(own) or any(tuple(state[k].shape) != tuple(v.shape) for k, v in own.items()):
        return None
    _load(model, state, f"weights file '{path}'")
    return model, f"file {path}"


def create_classifier(
    name: str, num_classes: int, *, pretrained: bool | str | Path = True, **kwargs: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Build timm model ``name`` with ``num_classes`` outputs and return ``(model, data_cfg)``.

    ``pretrained=True`` loads ImageNet weights offline (weight packages for tf_efficientnet_lite0..2
    and mobilenetv2_100, else the local timm / Hugging Face cache), then replaces the classifier.
    With ``num_classes`` equal to the weights' 1000 ImageNet classes the ImageNet head is kept.
    A path loads a weights file: an ImageNet checkpoint (any key naming that maps by order) or this
    model already fine-tuned to ``num_classes``. ``data_cfg`` holds mean, std, input_size,
    interpolation, crop_pct and ``weights`` (where they came from).
    """
    import timm

    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    source: WeightSource | None = None
    if pretrained is False:
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
        origin = "random init"
    elif pretrained is True:
        source = resolve_imagenet_weights(name)
    else:
        path = Path(pretrained).expanduser()
        done = _fine_tuned(name, num_classes, path, **kwargs)
        if done is not None:
            model, origin = done
        else:
            source = resolve_imagenet_weights(name, source=path)
    if source is not None:
        model = timm.create_model(name, pretrained=False, **kwargs)
        _load(model, source.state_dict, source.origin)
        if num_classes != model.num_classes:  # 1000 classes keep the ImageNet head (sanity checks, features)
            model.reset_classifier(num_classes)
        origin = f"ImageNet from {source.origin}"
    data_cfg = _timm_defaults(model)
    if source is not None:
        data_cfg.update(mean=tuple(source.mean), std=tuple(source.std), input_size=tuple(source.input_size))
    data_cfg.update(architecture=name, num_classes=num_classes, weights=origin)
    return model, data_cfg


def list_offline_classifiers() -> list[str]:
    """timm architectures whose ImageNet weights are available offline right now."""
    return offline_architectures()
