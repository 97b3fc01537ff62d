"""The trunks AnchorNets are made of, all padding-free so every output cell sees exactly one input box.

* :func:`make_padding_free` strips padding from a network in place and centre-crops its residual skips;
* the published AnchorNet trunk (MBConv blocks, optional squeeze-excitation), randomly initialised;
* trunks cut from timm ImageNet models (the weights loaded offline before the cut).

The registered variants that assemble them are in :mod:`agripatch.models.anchornet`.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from agripatch.models.geometry import CenterCropResidual, GeometryError
from agripatch.models.weights import resolve_imagenet_weights

__all__ = ["make_padding_free", "paper_trunk", "timm_trunk"]


# --- padding removal --------------------------------------------------------------------------


def _plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """An nn.Conv2d with the same weights and padding=0 (replaces Conv2dSame and padded convs)."""
    new = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=0,
        dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
        device=conv.weight.device, dtype=conv.weight.dtype,
    )
    new.weight = conv.weight
    if conv.bias is not None:
        new.bias = conv.bias
    return new


def _plain_pool(pool: nn.Module) -> nn.Module:
    if isinstance(pool, nn.MaxPool2d):
        return nn.MaxPool2d(pool.kernel_size, pool.stride, padding=0, dilation=pool.dilation)
    return nn.AvgPool2d(pool.kernel_size, pool.stride, padding=0)


def make_padding_free(module: nn.Module) -> nn.Module:
    """Remove every padding from ``module`` in place and center-crop its residual skips.

    Padded convolutions and timm's TF 'same' convolutions (Conv2dSame) become plain
    ``nn.Conv2d(padding=0)`` sharing the same weight tensors; padded pools lose their padding;
    explicit pad layers become Identity; every block with ``has_skip`` (timm InvertedResidual,
    DepthwiseSeparableConv) has its internal skip switched off and is wrapped in
    :class:`CenterCropResidual`, which adds the skip center-cropped to the shrunken main path.
    Returns ``module`` (or its replacement when ``module`` itself is such a layer).
    """
    for name, child in list(module.named_children()):
        setattr(module, name, make_padding_free(child))
    cls = type(module).__name__
    same = cls.endswith("Same")  # timm Conv2dSame / MaxPool2dSame / AvgPool2dSame pad in forward()
    if isinstance(module, nn.Conv2d) and (same or module.padding not in ((0, 0), "valid")):
        if type(module) is not nn.Conv2d and not same:
            raise GeometryError(f"cannot strip padding from {cls}: only nn.Conv2d and Conv2dSame are supported")
        return _plain_conv(module)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)) and (same or module.padding not in (0, (0, 0))):
        return _plain_pool(module)
    if type(module).__module__ == "torch.nn.modules.padding":
        return nn.Identity()
    if getattr(module, "has_skip", False):
        module.has_skip = False
        drop_path = getattr(module, "drop_path", None)
        if isinstance(drop_path, nn.Module):
            module.drop_path = nn.Identity()
        return CenterCropResidual(module, drop_path)
    return module


# --- the published architecture ---------------------------------------------------------------


class SqueezeExcite(nn.Module):
    """Squeeze-excitation as in the AnchorNet paper: global pool, 1x1 reduce + SiLU, 1x1 expand + sigmoid.

    It pools over the whole map, so a model containing it is not strictly local.
    """

    geometry = "nonlocal"

    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, reduced, kernel_size=1)
        self.act = nn.SiLU(inplace=True)
        self.expand = nn.Conv2d(reduced, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` rescaled per channel by its globally pooled excitation."""
        scale = self.expand(self.act(self.reduce(x.mean(dim=(2, 3), keepdim=True))))
        return x * scale.sigmoid()


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> list:
    layers: list[tuple[str, nn.Module]] = [
        ("conv", nn.Conv2d(cin, cout, kernel, stride=stride, padding=0, groups=groups, bias=False)),
        ("bn", nn.BatchNorm2d(cout)),
    ]
    if act:
        layers.append(("act", nn.SiLU(inplace=True)))
    return layers


class MBConv(nn.Module):
    """Padding-free MBConv: 1x1 expand, k x k depthwise (padding 0), optional SE, 1x1 project.

    The residual (stride 1, same width) is added by wrapping the block in CenterCropResidual.
    """

    def __init__(self, cin: int, cout: int, expand: float, kernel: int, stride: int, se_ratio: float | None):
        super().__init__()
        mid = int(cin * expand)
        self.expand = nn.Sequential(OrderedDict(_conv_bn(cin, mid, 1))) if expand != 1 else nn.Identity()
        self.depthwise = nn.Sequential(OrderedDict(_conv_bn(mid, mid, kernel, stride, groups=mid)))
        self.se = SqueezeExcite(mid, max(1, int(cin * se_ratio))) if se_ratio else nn.Identity()
        self.project = nn.Sequential(OrderedDict(_conv_bn(mid, cout, 1, act=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Expand, depthwise, (SE), project; the residual is added by the CenterCropResidual around it."""
        return self.project(self.se(self.depthwise(self.expand(x))))


# (kernel, out channels, expansion, stride) of the published bottlenecks after a 16-ch stride-2 stem.
_PAPER_BLOCKS = (
    (3, 16, 1, 2), (3, 24, 3, 2), (3, 24, 4, 1), (3, 48, 4, 1), (3, 96, 2, 1), (3, 96, 1.5, 1), (3, 96, 1.5, 1),
)


def paper_trunk(se_ratio: float | None) -> tuple[nn.Module, int]:
    """The published AnchorNet trunk (stem + MBConv blocks, padding 0), randomly initialised; SE when ``se_ratio``."""
    stem = nn.Sequential(OrderedDict(_conv_bn(3, 16, 3, stride=2)))
    blocks: list[nn.Module] = []
    cin = 16
    for kernel, cout, expand, stride in _PAPER_BLOCKS:
        block: nn.Module = MBConv(cin, cout, expand, kernel, stride, se_ratio)
        if stride == 1 and cin == cout:
            block = CenterCropResidual(block)
        blocks.append(block)
        cin = cout
    trunk = nn.Sequential(OrderedDict(stem=stem, blocks=nn.Sequential(*blocks)))
    for module in trunk.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return trunk, cin


# --- ImageNet-initialised local trunks cut from timm models -----------------------------------


def timm_trunk(
    arch: str, cut: tuple[int, int], pretrained: bool, drop_path_rate: float = 0.0
) -> tuple[nn.Module, int, str]:
    """Stem + blocks up to ``blocks[cut[0]][cut[1]]`` of a timm model, padding-free.

    The full timm model is built (weights loaded offline when ``pretrained``) before the cut, so
    the ImageNet weights are checked against the complete architecture.
    """
    import timm

    stage, last = cut
    model = timm.create_model(arch, pretrained=False, drop_path_rate=drop_path_rate)
    origin = "random init"
    if pretrained:
        weights = resolve_imagenet_weights(arch)
        model.load_state_dict(weights.state_dict, strict=True)
        origin = f"ImageNet trunk from {weights.origin}"
    if not 0 <= stage < len(model.blocks) or not 0 <= last < len(model.blocks[stage]):
        raise ValueError(f"cut {cut} is outside {arch}'s blocks ({[len(s) for s in model.blocks]} per stage)")
    stages = [model.blocks[i] for i in range(stage)]
    stages.append(nn.Sequential(*list(model.blocks[stage].children())[: last + 1]))
    trunk = nn.Sequential(OrderedDict(conv_stem=model.conv_stem, bn1=model.bn1, blocks=nn.Sequential(*stages)))
    last_block = stages[-1][-1]
    channels = last_block.bn3.num_features if hasattr(last_block, "bn3") else last_block.bn2.num_features
    return make_padding_free(trunk), channels, origin
