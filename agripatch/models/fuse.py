"""Inference-only speed-ups: fold every BatchNorm into the convolution before it, apply the activation after a
convolution as that convolution writes its output, and keep activations channels-last (:func:`inference_model`
does all three; every network that no longer trains goes through it).

In eval mode a BatchNorm is a per-channel affine map, so ``bn(conv(x))`` equals one convolution with
scaled weights and a shifted bias. On the CPU the BatchNorm pass over a large feature map is memory-bound
and costs as much as the convolution itself (measured: about half of ``anchornet_mbv2_s8``'s time at 224
px), so folding it away speeds up inference without changing what is computed (up to float rounding) and
without touching the receptive field (no layer changes size or padding).

Pairs are found structurally: inside each module, a BatchNorm child registered right after a Conv2d child
is that convolution's norm (true for torchvision/timm blocks and for agripatch's AnchorNets, which apply
them in registration order). :func:`fold_batchnorm` checks the folded model against the original on a
probe input and refuses to return a model that computes something else.

An activation after a folded convolution (ReLU, ReLU6, SiLU) is a second pass over a large feature map: 14% of the
iBean cascade's CPU time went to ReLU6's clamps. :func:`fuse_activations` hands each such pair to oneDNN as one
call (``mkldnn::_convolution_pointwise``, the kernel ``torch.compile`` uses on the CPU, here without a compiler),
with the same probe check. The fused call runs only where it can (a CPU tensor in the weights' dtype, float32, or
bf16 where the CPU has bf16 units; no gradient; not while exporting or compiling); anywhere else the pair runs as
the two modules it was, so ONNX graphs do not change.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import conv_flop_count, register_flop_formula

__all__ = ["ConvActivation", "fold_batchnorm", "fuse_activations", "inference_model", "network_dtype",
           "run_network"]


def _folded_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A copy of ``conv`` whose output equals ``bn(conv(x))`` with ``bn`` in eval mode."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1.0 / torch.sqrt(
        bn.running_var + bn.eps)
    shift = bn.bias.detach() if bn.affine else torch.zeros_like(bn.running_mean)
    fused = copy.deepcopy(conv)
    weight = conv.weight.detach() * scale.reshape(-1, 1, 1, 1)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.weight = nn.Parameter(weight, requires_grad=False)
    fused.bias = nn.Parameter((bias - bn.running_mean) * scale + shift, requires_grad=False)
    return fused


def _after_norm(bn: nn.BatchNorm2d) -> nn.Module:
    """What remains of a norm layer once its affine part is folded: timm's BatchNormAct2d keeps drop + act."""
    tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
    return nn.Sequential(*tail) if tail else nn.Identity()


def _fold_pair(conv: nn.Module, norm: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """A convolution and the BatchNorm after it as the folded convolution and what remains of the norm."""
    if (type(conv) is nn.Conv2d and isinstance(norm, nn.BatchNorm2d) and norm.track_running_stats
            and norm.num_features == conv.out_channels):
        return _folded_conv(conv, norm), _after_norm(norm)
    return None


def _rewrite_pairs(module: nn.Module, rewrite) -> int:
    """Replace, in ``module`` and every submodule, each two consecutive children that ``rewrite(child, next_child)``
    maps to a new pair (None: leave them); returns how many. The new modules are not walked again."""
    count, made = 0, []
    children = list(module.named_children())
    for (name, child), (next_name, next_child) in zip(children, children[1:]):
        pair = rewrite(child, next_child)
        if pair is not None:
            setattr(module, name, pair[0])
            setattr(module, next_name, pair[1])
            made += pair
            count += 1
    for _, child in module.named_children():
        if not any(child is new for new in made):
            count += _rewrite_pairs(child, rewrite)
    return count


def _checked_rewrite(model: nn.Module, rewrite, probe: torch.Tensor | None, method: str,
                     tolerance: float) -> nn.Module:
    """An eval-mode copy of ``model`` with its pairs rewritten (:func:`_rewrite_pairs`) when that copy gives the same
    outputs on ``probe`` (:func:`_same_outputs`); else, or when nothing matched, an unchanged eval-mode copy."""
    original = copy.deepcopy(model).eval()
    changed = copy.deepcopy(model).eval()
    if _rewrite_pairs(changed, rewrite) == 0:
        return original
    return changed if _same_outputs(original, changed, probe, method, tolerance) else original


@torch.no_grad()
def fold_batchnorm(model: nn.Module, probe: torch.Tensor | None = None, *, method: str = "forward",
                   tolerance: float = 1e-3) -> nn.Module:
    """An eval-mode copy of ``model`` with BatchNorm folded into the preceding convolutions.

    ``probe`` (default: a random 1 x 3 x 224 x 224 batch) is run through ``model.<method>`` before and after;
    if any output moves by more than ``tolerance`` relative to its scale, the fold misread the network's
    structure and the unfolded copy is returned instead, so the result always computes the same function.
    """
    return _checked_rewrite(model, _fold_pair, probe, method, tolerance)


def _same_outputs(original: nn.Module, changed: nn.Module, probe: torch.Tensor | None, method: str,
                  tolerance: float) -> bool:
    """Whether ``changed.<method>`` gives ``original``'s outputs on ``probe`` (default: a seeded random 1 x 3 x 224
    x 224 batch), each within ``tolerance`` of its scale."""
    device = next((p.device for p in original.parameters()), torch.device("cpu"))
    x = probe if probe is not None else torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    x = x.to(device)
    before, after = getattr(original, method)(x), getattr(changed, method)(x)
    before = before if isinstance(before, tuple) else (before,)
    after = after if isinstance(after, tuple) else (after,)
    return all(float((a - b).abs().max()) <= tolerance * (float(a.abs().max()) + 1e-6) for a, b in zip(before, after))


def _onednn_dtypes() -> tuple[torch.dtype, ...]:
    """The dtypes oneDNN's fused convolution takes on this CPU: float32, and bf16 where the CPU has bf16 units."""
    bf16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    return (torch.float32, torch.bfloat16) if bf16 else (torch.float32,)


_ONEDNN_DTYPES = _onednn_dtypes()


def network_dtype(module: nn.Module) -> torch.dtype:
    """The floating dtype ``module`` computes in: its first floating parameter's (float32 without any)."""
    return next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)


def _in_dtype(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x`` in ``dtype`` (itself when it is already: nothing is recorded while exporting)."""
    return x if x.dtype == dtype else x.to(dtype)


def run_network(network: nn.Module, x: torch.Tensor, method: str = "forward"):
    """``network.<method>(x)`` in the dtype of the network's weights (bf16 where inference placed it there), each
    output tensor back in float32: the one way every caller feeds a network at inference."""
    call = network if method == "forward" else getattr(network, method)  # the module itself: its hooks run
    out = call(_in_dtype(x, network_dtype(network)))
    if isinstance(out, tuple):
        return tuple(_in_dtype(t, torch.float32) for t in out)
    return _in_dtype(out, torch.float32)


#: oneDNN's names (and fixed arguments) of the activations it applies inside a convolution
_ONEDNN_ACTIVATIONS: dict[type, tuple[str, list[float]]] = {nn.ReLU: ("relu", []), nn.ReLU6: ("hardtanh", [0.0, 6.0]),
                                                            nn.SiLU: ("swish", [])}


if torch.backends.mkldnn.is_available():
    @register_flop_formula(torch.ops.mkldnn._convolution_pointwise)
    def _fused_conv_flop(x_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
        """The fused call costs its convolution's MACs (:func:`agripatch.pipeline.macs.count_macs` meters aten ops)."""
        return conv_flop_count(x_shape, w_shape, out_shape)


class ConvActivation(nn.Module):
    """``activation(conv(x))`` as one oneDNN call on the CPU (see the module docstring); the two modules elsewhere."""

    def __init__(self, conv: nn.Conv2d, activation: nn.Module):
        super().__init__()
        self.conv, self.activation = conv, activation
        self.attr, self.scalars = _ONEDNN_ACTIVATIONS[type(activation)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution and its activation (fused where oneDNN can take them)."""
        conv = self.conv
        if (x.device.type != "cpu" or x.dtype != conv.weight.dtype or x.dtype not in _ONEDNN_DTYPES
                or (torch.is_grad_enabled() and (x.requires_grad or conv.weight.requires_grad))
                or torch.compiler.is_compiling() or torch.jit.is_tracing()):
            return self.activation(conv(x))
        return torch.ops.mkldnn._convolution_pointwise(
            x, conv.weight, conv.bias, list(conv.padding), list(conv.stride), list(conv.dilation), conv.groups,
            self.attr, self.scalars, None)


def _activation_in(module: nn.Module) -> nn.Module | None:
    """The one activation oneDNN can fuse that ``module`` applies (itself, or a Sequential of it and Identities)."""
    parts = [m for m in module if not isinstance(m, nn.Identity)] if isinstance(module, nn.Sequential) else [module]
    return parts[0] if len(parts) == 1 and type(parts[0]) in _ONEDNN_ACTIVATIONS else None


def _fuse_pair(conv: nn.Module, after: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """A convolution and the activation after it as one :class:`ConvActivation` (and an Identity in its place)."""
    activation = _activation_in(after)
    if (type(conv) is nn.Conv2d and activation is not None and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str)):
        return ConvActivation(conv, activation), nn.Identity()
    return None


@torch.no_grad()
def fuse_activations(model: nn.Module, probe: torch.Tensor | None = None, *, method: str = "forward",
                     tolerance: float = 1e-3) -> nn.Module:
    """An eval-mode copy of ``model`` whose convolutions apply the activation after them (:class:`ConvActivation`).

    Only on builds with oneDNN; checked on ``probe`` as :func:`fold_batchnorm` checks its fold, returning the
    unfused copy when any output moves.
    """
    if not torch.backends.mkldnn.is_available():
        return copy.deepcopy(model).eval()
    return _checked_rewrite(model, _fuse_pair, probe, method, tolerance)


def inference_model(model: nn.Module, probe: torch.Tensor | None = None, *, method: str = "forward") -> nn.Module:
    """An eval-mode copy of ``model`` laid out for fast inference: BatchNorm folded (:func:`fold_batchnorm`), each
    convolution's activation fused into it (:func:`fuse_activations`) and weights channels-last, so every
    convolution reads and writes NHWC activations whatever the input's layout.

    Channels-last is what oneDNN's depthwise and 1x1 kernels are fast on. Measured on this project's 2-core CPU
    (batch 16, 1 thread): ``anchornet_mbv2_s8`` at 160 px 39.0 -> 20.0 ms, ``mobilenetv2_100`` at 128 px
    42.7 -> 27.0 ms and at 224 px 135.7 -> 83.0 ms; outputs move by float rounding only (1e-5).
    """
    folded = fold_batchnorm(model, probe, method=method)
    return fuse_activations(folded, probe, method=method).to(memory_format=torch.channels_last)
