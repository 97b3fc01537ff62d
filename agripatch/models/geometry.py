"""Receptive-field geometry of padding-free CNN trunks: which input box each output cell sees.

AnchorNet's promise is that the score of a feature-map cell depends only on the pixels inside one
known box of the input, so the best-scoring cells can be cut out of the full-resolution photo and
handed to a downstream classifier. That promise holds only for a trunk that is a chain of local
operations without padding (zero padding makes a border cell "see" the border; 'same' padding
moves the boxes with the input size) and without global operations (squeeze-excitation, attention,
adaptive pooling). :func:`receptive_field` walks a trunk, refuses what breaks the promise (naming
the layer) and derives the box size, the stride between boxes and the offset of the first box.
:func:`measure_locality` checks the promise empirically with a gradient.

Conventions: boxes are ``(x0, y0, x1, y1)`` in input pixels, end-exclusive; cells are row-major.
Locality is a property of the network in eval mode (BatchNorm in train mode mixes the batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from agripatch.errors import AgripatchError

__all__ = [
    "GeometryError",
    "ReceptiveField",
    "CenterCropResidual",
    "center_crop",
    "receptive_field",
    "measure_locality",
]


class GeometryError(AgripatchError, ValueError):
    """A network (or an input size) does not have the exact cell-to-box geometry AnchorNet needs."""


@dataclass(frozen=True)
class _Layer:
    """One geometric step of a chain: effective kernel, stride and symmetric padding."""

    name: str
    kernel: int
    stride: int
    padding: int = 0


@dataclass(frozen=True)
class ReceptiveField:
    """Box geometry of a chain of local layers.

    ``size`` is the side of the square box one output cell sees, ``stride`` the distance between
    the boxes of neighbouring cells and ``offset`` the input coordinate where the box of cell
    (0, 0) starts (0 for a padding-free chain, negative where padding was walked with
    ``strict=False``). ``layers`` keeps the per-layer arithmetic so that :meth:`grid` reproduces
    the real output size of the network (floor division at every strided layer); without it the
    closed form ``floor((n - 2*offset - size) / stride) + 1`` is used, which is the same number
    whenever every intermediate size is positive.
    """

    size: int
    stride: int
    offset: int = 0
    layers: tuple[_Layer, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.size < 1 or self.stride < 1:
            raise GeometryError(f"receptive field needs size >= 1 and stride >= 1, got {self.size}, {self.stride}")

    def _axis(self, n: int, axis: str) -> int:
        if not isinstance(n, int) or isinstance(n, bool):
            raise TypeError(f"{axis} must be an int, got {type(n).__name__}")
        if not self.layers:
            cells = (n - 2 * self.offset - self.size) // self.stride + 1
            if cells < 1:
                raise GeometryError(
                    f"input {axis} {n} px is smaller than the receptive field ({self.size} px): no cell fits"
                )
            return cells
        cells = n
        for layer in self.layers:
            out = (cells + 2 * layer.padding - layer.kernel) // layer.stride + 1
            if out < 1:
                raise GeometryError(
                    f"input {axis} {n} px is too small: layer {layer.name!r} (kernel {layer.kernel}, "
                    f"stride {layer.stride}) gets {cells} px; the receptive field needs at least {self.size} px"
                )
            cells = out
        return cells

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Number of cells ``(gh, gw)`` the network outputs for an input of ``height`` x ``width``."""
        return self._axis(height, "height"), self._axis(width, "width")

    def cell_boxes(self, height: int, width: int) -> torch.Tensor:
        """Input box of every cell, shape ``(gh*gw, 4)`` float32, rows ``(x0, y0, x1, y1)``, row-major.

        Boxes are not clipped: with padding-free trunks they always lie inside the image.
        """
        gh, gw = self.grid(height, width)
        ys = self.offset + self.stride * torch.arange(gh, dtype=torch.float32)
        xs = self.offset + self.stride * torch.arange(gw, dtype=torch.float32)
        y0, x0 = torch.meshgrid(ys, xs, indexing="ij")
        x0, y0 = x0.reshape(-1), y0.reshape(-1)
        return torch.stack([x0, y0, x0 + self.size, y0 + self.size], dim=1)

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Integer box ``(x0, y0, x1, y1)`` of cell ``(row, col)`` (no bounds check against a grid)."""
        x0 = self.offset + col * self.stride
        y0 = self.offset + row * self.stride
        return x0, y0, x0 + self.size, y0 + self.size

    def min_input_size(self) -> int:
        """Smallest square input side that yields at least one cell."""
        n = max(1, self.size + 2 * self.offset)
        while True:
            try:
                self._axis(n, "side")
                return n
            except GeometryError:
                n += 1


def center_crop(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Crop the last two dims of ``x`` to ``height`` x ``width`` around the centre (equal margins)."""
    dh, dw = x.shape[-2] - height, x.shape[-1] - width
    if dh < 0 or dw < 0 or dh % 2 or dw % 2:
        raise GeometryError(
            f"cannot center-crop {tuple(x.shape[-2:])} to {(height, width)}: the margins must be even and >= 0"
        )
    if dh == 0 and dw == 0:
        return x
    return x[..., dh // 2 : dh // 2 + height, dw // 2 : dw // 2 + width]


class CenterCropResidual(nn.Module):
    """``body(x) + center_crop(x)``: a residual block whose body shrinks the map (padding-free).

    Without padding a stride-1 body with an odd kernel loses ``k - 1`` pixels; cropping the skip by
    half that on each side keeps the skip's pixel aligned with the centre of the body's box, so the
    skip never widens a cell's receptive field. ``drop_path`` (stochastic depth) applies to the body.
    """

    def __init__(self, body: nn.Module, drop_path: nn.Module | None = None):
        super().__init__()
        self.body = body
        self.drop_path = drop_path if drop_path is not None else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output plus its input cropped to the same (smaller, unpadded) size."""
        out = self.drop_path(self.body(x))
        return out + center_crop(x, out.shape[-2], out.shape[-1])


# --- classification of modules --------------------------------------------------------------

_POINTWISE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Identity,
    nn.Dropout,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.modules.batchnorm._BatchNorm,
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.GELU,
    nn.Sigmoid,
    nn.Tanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Hardtanh,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.Mish,
    nn.Softplus,
    nn.Threshold,
)
# Modules from these packages act on each position separately (activations, drop-path, frozen BN).
_POINTWISE_MODULES = ("timm.layers.activations", "timm.layers.activations_me", "timm.layers.drop")
_NONLOCAL_TYPES: tuple[type[nn.Module], ...] = (
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveMaxPool2d,
    nn.Linear,
    nn.Flatten,
    nn.MultiheadAttention,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.InstanceNorm2d,
    nn.Softmax,
    nn.Softmax2d,
    nn.GLU,
    nn.Upsample,
)
_NONLOCAL_NAME_PARTS = ("SqueezeExcite", "SEModule", "SELayer", "Attention", "Attn", "AdaptivePool", "GlobalPool",
                        "GlobalContext", "GatherExcite", "NonLocal")


def _class_name(module: nn.Module) -> str:
    return type(module).__name__


def _kind(module: nn.Module) -> str:
    """Classify a module: conv, pool, residual, pointwise, nonlocal, same, pad, chain or unknown."""
    declared = getattr(module, "geometry", None)
    if declared in ("pointwise", "nonlocal"):
        return declared
    name = _class_name(module)
    if isinstance(module, CenterCropResidual):
        return "residual"
    if name.endswith("Same") or "PadSame" in name:
        return "same"  # timm's TF 'same' padding (Conv2dSame, MaxPool2dSame, ...): input-size-dependent pad
    if type(module).__module__ == "torch.nn.modules.padding" or name.endswith(("Pad", "Pad2d")):
        return "pad"
    if isinstance(module, nn.Conv2d):
        return "conv"
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        return "pool"
    if isinstance(module, _NONLOCAL_TYPES) or any(part in name for part in _NONLOCAL_NAME_PARTS):
        if "LayerNorm2d" in name:  # timm's LayerNorm2d normalises channels at each position
            return "pointwise"
        return "nonlocal"
    if isinstance(module, _POINTWISE_TYPES) or type(module).__module__ in _POINTWISE_MODULES:
        return "pointwise"
    if isinstance(module, (nn.ConvTranspose2d, nn.Conv1d, nn.Conv3d, nn.LPPool2d, nn.FractionalMaxPool2d)):
        return "unknown"
    if "Mixed" in name or "Split" in name:  # parallel branches (e.g. timm MixedConv2d) are not a chain
        return "unknown"
    if isinstance(module, (nn.Sequential, nn.ModuleList, nn.ModuleDict)) or any(True for _ in module.children()):
        return "chain"
    return "unknown"


def _square(value: int | Sequence[int], what: str, name: str) -> int:
    if isinstance(value, int):
        return value
    values = tuple(value)
    if len(set(values)) != 1:
        raise GeometryError(f"layer {name!r}: non-square {what} {values} is not supported (square boxes only)")
    return int(values[0])


class _Walker:
    def __init__(self, strict: bool):
        self.strict = strict
        self.size = 1
        self.jump = 1
        self.offset = 0
        self.layers: list[_Layer] = []

    def refuse(self, name: str, module: nn.Module, why: str) -> None:
        raise GeometryError(f"layer {name!r} ({_class_name(module)}) {why}")

    def step(self, name: str, kernel: int, stride: int, padding: int) -> None:
        self.offset -= padding * self.jump
        self.size += (kernel - 1) * self.jump
        self.jump *= stride
        self.layers.append(_Layer(name, kernel, stride, padding))

    def conv_like(self, name: str, module: nn.Module) -> None:
        kernel = _square(module.kernel_size, "kernel", name)
        stride = _square(module.stride, "stride", name)
        dilation = _square(getattr(module, "dilation", 1), "dilation", name)
        padding = module.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = 0
            elif padding == "same" and stride == 1 and dilation * (kernel - 1) % 2 == 0:
                padding = dilation * (kernel - 1) // 2
            else:
                self.refuse(name, module, f"uses padding={padding!r}, which has no fixed box offset")
        padding = _square(padding, "padding", name)
        if getattr(module, "ceil_mode", False):
            self.refuse(name, module, "uses ceil_mode=True (implicit right padding); use ceil_mode=False")
        if padding and self.strict:
            mode = getattr(module, "padding_mode", "zeros")
            self.refuse(
                name, module,
                f"has padding={padding} (padding_mode={mode!r}): border cells would see padding; set padding=0",
            )
        if isinstance(module, nn.AvgPool2d) and padding and not module.count_include_pad:
            self.refuse(name, module, "averages padding with count_include_pad=False (position-dependent)")
        self.step(name, dilation * (kernel - 1) + 1, stride, padding)

    def walk(self, name: str, module: nn.Module) -> None:
        kind = _kind(module)
        if kind in ("conv", "pool"):
            self.conv_like(name, module)
        elif kind == "residual":
            self.walk(_join(name, "body"), module.body)
            self.walk(_join(name, "drop_path"), module.drop_path)
        elif kind == "pointwise":
            for child_name, child in module.named_children():  # e.g. timm BatchNormAct2d's act / drop
                self.walk(_join(name, child_name), child)
        elif kind == "nonlocal":
            if self.strict:
                self.refuse(name, module, "pools or attends over the whole map (not local); "
                                          "remove it or pass strict=False")
        elif kind == "same":
            self.refuse(name, module, "uses TF-style 'same' padding that depends on the input size; "
                                      "replace it by nn.Conv2d/pooling with padding=0")
        elif kind == "pad":
            self.pad(name, module)
        elif kind == "chain":
            if self.strict and getattr(module, "has_skip", False):
                self.refuse(name, module, "adds an un-cropped residual skip; wrap its body in CenterCropResidual")
            for child_name, child in module.named_children():
                self.walk(_join(name, child_name), child)
        elif self.strict:
            self.refuse(name, module, "is not a known local layer (conv, pool, norm, activation); "
                                      "its geometry cannot be proven (pass strict=False to ignore it)")

    def pad(self, name: str, module: nn.Module) -> None:
        padding = getattr(module, "padding", None)
        if self.strict:
            self.refuse(name, module, f"pads the input (padding={padding}); AnchorNet trunks must be padding-free")
        values = tuple(padding) if isinstance(padding, (tuple, list)) else (padding,)
        if not values or len(set(values)) != 1 or not type(module).__name__.startswith(("ZeroPad", "ConstantPad")):
            self.refuse(name, module, f"pads asymmetrically or by reflection (padding={padding})")
        self.step(name, 1, 1, int(values[0]))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def receptive_field(
    layers: nn.Module | Iterable[nn.Module] | Mapping[str, nn.Module], *, strict: bool = True
) -> ReceptiveField:
    """Derive the receptive field (size, stride, offset) of a chain of layers.

    ``layers`` is a module (its children, recursively, are taken as a chain in registration order,
    as in ``nn.Sequential`` and timm's blocks), a list of modules, or a ``{name: module}`` mapping.
    Residual skips must be :class:`CenterCropResidual`, whose skip never widens the box.

    With ``strict=True`` (the AnchorNet contract) it raises :class:`GeometryError`, naming the
    layer, at any padding, TF 'same' padding, explicit pad layer, non-local module (SE, attention,
    adaptive pooling, linear), un-cropped residual, or unknown leaf module. With ``strict=False``
    non-local and unknown modules are skipped and symmetric static padding is walked (negative
    offset): the result then describes only the local part of the network.
    """
    walker = _Walker(strict)
    if isinstance(layers, nn.Module):
        walker.walk("", layers)
    else:
        items = layers.items() if isinstance(layers, Mapping) else ((str(i), m) for i, m in enumerate(layers))
        for name, module in items:
            walker.walk(name, module)
    return ReceptiveField(walker.size, walker.jump, walker.offset, tuple(walker.layers))


def measure_locality(
    model_fn: Callable[[torch.Tensor], torch.Tensor],
    input_shape: Sequence[int],
    cell: Sequence[int] | Sequence[Sequence[int]],
    *,
    dtype: torch.dtype = torch.float64,
    seed: int = 0,
) -> tuple[int, int, int, int] | None | list[tuple[int, int, int, int] | None]:
    """Bounding box ``(x0, y0, x1, y1)`` (end-exclusive) of the input pixels one output cell depends on.

    ``model_fn`` maps an input of ``input_shape`` (``(C, H, W)`` or ``(1, C, H, W)``) to a map
    ``(1, K, gh, gw)``; ``cell`` is ``(k, row, col)`` or ``(row, col)`` (then the channels are
    summed), or a list of such cells (one forward pass, a list of boxes back). The gradient of the
    cell's score with respect to a random input is taken and the box of its non-zero entries is
    returned (``None`` if the gradient is zero everywhere). The tests use it to check that the
    derived receptive field is the true one.
    """
    shape = tuple(input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    many = len(cell) > 0 and not isinstance(cell[0], int)
    cells = [tuple(c) for c in cell] if many else [tuple(cell)]  # type: ignore[arg-type]
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=dtype, generator=generator).requires_grad_(True)
    out = model_fn(x)
    boxes: list[tuple[int, int, int, int] | None] = []
    for i, c in enumerate(cells):
        if len(c) == 3:
            score = out[0, c[0], c[1], c[2]]
        elif len(c) == 2:
            score = out[0, :, c[0], c[1]].sum()
        else:
            raise ValueError(f"cell must be (k, row, col) or (row, col), got {c}")
        (grad,) = torch.autograd.grad(score, x, retain_graph=i < len(cells) - 1)
        support = grad[0].abs().sum(0) != 0
        if not bool(support.any()):
            boxes.append(None)
            continue
        rows = torch.nonzero(support.any(1)).flatten()
        cols = torch.nonzero(support.any(0)).flatten()
        boxes.append((int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1))
    return boxes if many else boxes[0]
