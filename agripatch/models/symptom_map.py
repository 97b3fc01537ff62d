"""A symptom map: per-cell background / leaf / symptom logits from a padding-free trunk, and the leaf's symptom share.

Severity (issue 25) is the share of a leaf's area that shows symptoms. A class-agnostic network can measure it
directly: it says, for every cell of a coarse grid, how much of the cell is background, healthy leaf or symptom;
the share is symptom over leaf + symptom summed over the leaf. It reuses AnchorNet's padding-free trunks (ImageNet
weights offline), so a cell's logits depend on one exact input box, and adds a 1x1 head (conv + BN + ReLU6, then a
1x1 conv to 3 logits) that widens nothing.

Geometry. A trunk of receptive field ``R`` and stride ``s`` on an unpadded input gives cells whose boxes start at
``s * i``. To give every ``s x s`` block of the photo one cell, :meth:`SymptomMap.forward` first pads the photo by
``before = (R - s + 1) // 2`` pixels on the top and left and ``after = R - s - before`` on the bottom and right
(edge pixels replicated: the leaf/ crops touch the border); the network itself stays padding-free. Then, for an
input of ``H x W`` (multiples of ``s``), the map is ``H/s x W/s`` cells and cell ``(i, j)``

* stands for the block ``[s*j, s*j + s) x [s*i, s*i + s)`` of the photo (its training target is that block's
  class proportions, :func:`cell_targets`), and
* depends exactly on the photo box ``(s*j - before, s*i - before, s*j - before + R, s*i - before + R)``
  (end-exclusive; the part outside the photo is replicated border pixels).

For the lite0 trunk (``symptom_map_lite0_s8``): ``R = 67``, ``s = 8``, ``before = 30``, ``after = 29``; a
512 x 256 leaf gives a 64 x 32 map, block centre and box centre differ by half a pixel.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agripatch.errors import AgripatchError
from agripatch.models.geometry import GeometryError, ReceptiveField, receptive_field
from agripatch.models.trunks import timm_trunk
from agripatch.models.weights import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "BACKGROUND",
    "LEAF",
    "SYMPTOM",
    "SymptomMap",
    "cell_targets",
    "create_symptom_map",
    "list_symptom_maps",
    "register_symptom_map",
    "shipped_symptom_map",
]

#: Channel (and mask value) of each class: the coffee_bracol lesion masks' coding.
BACKGROUND, LEAF, SYMPTOM = 0, 1, 2
NUM_CLASSES = 3

_BUILDERS: dict[str, Callable[..., SymptomMap]] = {}
_DEFAULT_CFGS: dict[str, dict[str, Any]] = {}


class UnknownSymptomMapError(AgripatchError, ValueError):
    """The requested symptom-map name is not registered."""


def register_symptom_map(**default_cfg: Any):
    """Register a builder under its function name with a default config (as :func:`register_anchornet`)."""

    def decorate(builder: Callable[..., SymptomMap]) -> Callable[..., SymptomMap]:
        if builder.__name__ in _BUILDERS:
            raise ValueError(f"symptom map {builder.__name__!r} is registered twice")
        _BUILDERS[builder.__name__] = builder
        _DEFAULT_CFGS[builder.__name__] = {"architecture": builder.__name__, **default_cfg}
        return builder

    return decorate


def list_symptom_maps() -> list[str]:
    """Names of the registered symptom maps."""
    return sorted(_BUILDERS)


class SymptomMap(nn.Module):
    """Padding-free trunk -> 1x1 conv + BN + ReLU6 -> 1x1 conv: logits ``(B, 3, H/s, W/s)`` for background,
    leaf, symptom. ``forward`` pads the photo so every ``s x s`` block gets one cell (module docstring)."""

    def __init__(self, trunk: nn.Module, trunk_channels: int, *, head_channels: int = 64,
                 pad_mode: str = "replicate", cfg: dict[str, Any] | None = None):
        super().__init__()
        self.trunk = trunk
        self.head = nn.Sequential(OrderedDict(
            conv=nn.Conv2d(trunk_channels, head_channels, kernel_size=1, bias=False),
            bn=nn.BatchNorm2d(head_channels),
            act=nn.ReLU6(inplace=True),
            out=nn.Conv2d(head_channels, NUM_CLASSES, kernel_size=1),
        ))
        for module in self.head.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.head.out.weight, std=0.01)
        nn.init.zeros_(self.head.out.bias)
        self._rf = receptive_field({"trunk": self.trunk, "head": self.head}, strict=True)
        rf = self._rf
        self.pad_before = (rf.size - rf.stride + 1) // 2
        self.pad_after = rf.size - rf.stride - self.pad_before
        self.pad_mode = pad_mode
        self.cfg = dict(cfg or {})
        self.cfg.update(receptive_field=rf.size, stride=rf.stride, pad_before=self.pad_before,
                        pad_after=self.pad_after, pad_mode=pad_mode, trunk_channels=trunk_channels,
                        head_channels=head_channels, classes=("background", "leaf", "symptom"))

    # geometry -------------------------------------------------------------------------------
    @property
    def receptive_field(self) -> ReceptiveField:
        """Box size and stride of the unpadded network (derived from the layers)."""
        return self._rf

    @property
    def stride(self) -> int:
        """Pixels of the photo per cell side."""
        return self._rf.stride

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Cells ``(H/s, W/s)`` for a photo of ``height`` x ``width`` (both must be multiples of the stride)."""
        s = self.stride
        if height % s or width % s or height < s or width < s:
            raise GeometryError(f"a symptom map needs a photo whose sides are positive multiples of {s} px, "
                                f"got {height} x {width}: resize it first")
        grid = self._rf.grid(height + self.pad_before + self.pad_after, width + self.pad_before + self.pad_after)
        if grid != (height // s, width // s):  # the padding is chosen so this holds; a check, not an assumption
            raise GeometryError(f"padded grid {grid} is not one cell per {s}-px block of {height} x {width}")
        return grid

    def cell_boxes(self, height: int, width: int) -> torch.Tensor:
        """Photo box each cell depends on, ``(gh*gw, 4)`` float32 ``(x0, y0, x1, y1)``, row-major, unclipped."""
        self.grid(height, width)
        padded = self._rf.cell_boxes(height + self.pad_before + self.pad_after,
                                     width + self.pad_before + self.pad_after)
        return padded - float(self.pad_before)

    def cell_blocks(self, height: int, width: int) -> torch.Tensor:
        """Photo block each cell stands for (what its target is measured on), ``(gh*gw, 4)`` like ``cell_boxes``."""
        gh, gw = self.grid(height, width)
        s = self.stride
        ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float32) * s,
                                torch.arange(gw, dtype=torch.float32) * s, indexing="ij")
        x0, y0 = xs.reshape(-1), ys.reshape(-1)
        return torch.stack([x0, y0, x0 + s, y0 + s], dim=1)

    # forward --------------------------------------------------------------------------------
    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """The photo padded so that each ``s x s`` block gets one cell (replicated border by default)."""
        b, a = self.pad_before, self.pad_after
        return F.pad(x, (b, a, b, a), mode=self.pad_mode)

    def forward_unpadded(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of an already padded input (the padding-free network alone; cell boxes as AnchorNet's)."""
        return self.head(self.trunk(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, 3, H/s, W/s)`` for normalised photos ``(B, 3, H, W)``, sides multiples of the stride."""
        if x.dim() != 4:
            raise ValueError(f"expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        if isinstance(x.shape[-1], int):
            self.grid(int(x.shape[-2]), int(x.shape[-1]))
        return self.forward_unpadded(self.pad(x))


def cell_targets(mask: np.ndarray, stride: int) -> np.ndarray:
    """Training target of every cell: class proportions of its ``stride x stride`` block, ``(3, H/s, W/s)`` float32.

    ``mask`` is ``(H, W)`` with values 0 background, 1 leaf, 2 symptom; ``H`` and ``W`` must be multiples of
    ``stride``. The proportions are exact block means, so the map's share of targets equals the mask's share.
    """
    mask = np.asarray(mask)
    h, w = mask.shape
    if h % stride or w % stride:
        raise ValueError(f"mask {h} x {w} is not a multiple of the stride {stride}")
    onehot = np.stack([mask == k for k in range(NUM_CLASSES)]).astype(np.float32)
    return onehot.reshape(NUM_CLASSES, h // stride, stride, w // stride, stride).mean(axis=(2, 4))


def _timm_map(arch: str, cut: tuple[int, int], *, pretrained: bool, head_channels: int = 64,
              drop_path_rate: float = 0.0, pad_mode: str = "replicate") -> SymptomMap:
    trunk, channels, origin = timm_trunk(arch, cut, pretrained, drop_path_rate)
    model = SymptomMap(trunk, channels, head_channels=head_channels, pad_mode=pad_mode)
    model.cfg.update(weights=origin, cut=f"blocks.{cut[0]}.{cut[1]}")
    return model


@register_symptom_map(description="EfficientNet-Lite0 stem..blocks.2.1 (anchornet_lite0_s8's trunk) + 1x1 head",
                      mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
def symptom_map_lite0_s8(*, pretrained: bool = False, **kwargs: Any) -> SymptomMap:
    """Lite0 trunk to blocks.2.1 (40 ch): RF 67 px, stride 8, one cell per 8 x 8 block."""
    return _timm_map("tf_efficientnet_lite0", (2, 1), pretrained=pretrained, **kwargs)


@register_symptom_map(description="MobileNetV2 stem..blocks.2.2 (anchornet_mbv2_s8's trunk) + 1x1 head",
                      mean=IMAGENET_MEAN, std=IMAGENET_STD)
def symptom_map_mbv2_s8(*, pretrained: bool = False, **kwargs: Any) -> SymptomMap:
    """MobileNetV2 trunk to blocks.2.2 (32 ch): RF 59 px, stride 8, one cell per 8 x 8 block."""
    return _timm_map("mobilenetv2_100", (2, 2), pretrained=pretrained, **kwargs)


def shipped_symptom_map(name: str = "symptom_map_lite0_s8") -> SymptomMap:
    """The symptom map shipped with the package (``resources/symptom_maps/``), in eval mode: a new crop's cascade
    measures severity with it without any masks of its own. Its JSON beside the weights says what it was trained on.
    """
    from agripatch.models.weight_files import load_weights
    from agripatch.resources import resource_dir

    path = resource_dir("symptom_maps") / f"{name}.safetensors"
    if not path.is_file():
        shipped = sorted(p.stem for p in resource_dir("symptom_maps").glob("*.safetensors"))
        raise UnknownSymptomMapError(f"no shipped weights for symptom map {name!r}; shipped: {', '.join(shipped)}")
    model = create_symptom_map(name)
    model.load_state_dict(load_weights(path))
    return model.eval()


def create_symptom_map(name: str, *, pretrained: bool = False, **kwargs: Any) -> SymptomMap:
    """Build a registered symptom map; ``pretrained=True`` loads offline ImageNet weights into the trunk."""
    if name not in _BUILDERS:
        raise UnknownSymptomMapError(f"unknown symptom map {name!r}; choose one of {', '.join(list_symptom_maps())}")
    model = _BUILDERS[name](pretrained=pretrained, **kwargs)
    cfg = copy.deepcopy(_DEFAULT_CFGS[name])
    cfg.update(model.cfg)
    if kwargs:
        cfg["builder_kwargs"] = dict(kwargs)
    model.cfg = cfg
    return model
