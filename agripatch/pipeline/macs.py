"""Multiply-accumulate counts: the project's ONE cost meter (cascade budgets, reports, tables).

Counts come from :class:`torch.utils.flop_counter.FlopCounterMode`, which applies shape-based
formulas to the aten ops a forward actually runs (convolutions, matmuls, attention), at 2 FLOPs
per multiply-accumulate; element-wise ops (activations, norms, pooling) count zero, the usual
convention of MAC tables in papers.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from agripatch.models.fuse import network_dtype

__all__ = ["clear_macs_cache", "count_macs", "format_gmacs"]

# module -> {(input shape, training flag, device, method): MACs}. Weak keys: a module that is garbage
# collected cannot hand its entry to a new module that happens to get the same id().
_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple, int]] = weakref.WeakKeyDictionary()


def _module_device(module: nn.Module) -> torch.device:
    for tensor in module.parameters():
        return tensor.device
    for tensor in module.buffers():
        return tensor.device
    return torch.device("cpu")


def count_macs(
    module: nn.Module,
    input_shape: Sequence[int],
    *,
    device: torch.device | str | None = None,
    method: str = "forward",
) -> int:
    """MACs of one forward of ``module`` on a zero tensor of ``input_shape`` (batch included).

    ``method`` names the entry point to meter (e.g. ``"forward_cam"`` for an AnchorNet, whose
    per-cell head costs a little more than the pooled one); it must take the input tensor.

    The forward runs in eval mode under ``no_grad`` (the module's training flag is restored
    afterwards), so dropout / batch-norm updates never happen and the cost is the inference
    cost. ``device`` defaults to the device of the module's parameters. Results are cached per
    (module, shape, training flag, device, method); call :func:`clear_macs_cache` after changing a
    module's architecture in place.
    """
    shape = tuple(int(d) for d in input_shape)
    if not shape or any(d < 1 for d in shape):
        raise ValueError(f"input_shape must be positive sizes, got {tuple(input_shape)}")
    target = torch.device(device) if device is not None else _module_device(module)
    key = (shape, module.training, str(target), method)
    per_module = _CACHE.setdefault(module, {})
    if key in per_module:
        return per_module[key]

    was_training = module.training
    module.eval()
    try:
        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            getattr(module, method)(torch.zeros(shape, device=target, dtype=network_dtype(module)))
        macs = int(counter.get_total_flops()) // 2
    finally:
        module.train(was_training)
    per_module[key] = macs
    return macs


def clear_macs_cache() -> None:
    """Forget every cached count (e.g. after replacing a model's head in place)."""
    _CACHE.clear()


def format_gmacs(macs: int | float) -> str:
    """Human-readable giga-MACs with 3 significant digits, e.g. ``"4.12 GMACs"``."""
    return f"{macs / 1e9:.3g} GMACs"
