"""What the cascade's networks are fed: photos as CHW tensors and the one input normalisation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["ImageLike", "normalize", "stats", "to_chw"]

ImageLike = Union[np.ndarray, Tensor]


def to_chw(image: ImageLike) -> Tensor:
    """One photo as a [3, H, W] tensor, uint8 (0..255) or float (0..1), without copying.

    Accepts an HWC RGB numpy array (what PIL / OpenCV-after-cvtColor give) or a CHW tensor.
    """
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"numpy photos must be HWC RGB, got shape {image.shape}")
        image = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
    elif not isinstance(image, Tensor):
        raise TypeError(f"photos must be numpy arrays or tensors, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"tensor photos must be [3, H, W], got shape {tuple(image.shape)}")
    if image.dtype != torch.uint8 and not image.is_floating_point():
        raise ValueError(f"photos must be uint8 or float, got {image.dtype}")
    if image.shape[1] < 1 or image.shape[2] < 1:
        raise ValueError(f"empty photo of shape {tuple(image.shape)}")
    return image


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Per-channel (x - mean) / std on a [B, 3, H, W] batch in 0..1: the one input normalisation."""
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


def stats(
    model: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None, name: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Normalisation of a model: explicit > ``model.cfg`` > timm's ``pretrained_cfg``."""
    if mean is None or std is None:
        for attr in ("cfg", "pretrained_cfg", "default_cfg"):
            cfg = getattr(model, attr, None)
            if isinstance(cfg, dict) and "mean" in cfg and "std" in cfg:
                mean = cfg["mean"] if mean is None else mean
                std = cfg["std"] if std is None else std
                break
    if mean is None or std is None:
        raise ValueError(f"cannot tell the {name}'s normalisation: pass {name}_mean and {name}_std")
    mean, std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    if len(mean) != 3 or len(std) != 3 or any(v <= 0 for v in std):
        raise ValueError(f"{name} mean/std need 3 values and positive std, got {mean} / {std}")
    return mean, std
