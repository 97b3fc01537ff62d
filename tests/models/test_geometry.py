"""Receptive-field geometry: exact numbers on toy chains, real output shapes, strict refusals."""

from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from agripatch.errors import AgripatchError
from agripatch.models.geometry import (
    CenterCropResidual,
    GeometryError,
    ReceptiveField,
    center_crop,
    measure_locality,
    receptive_field,
)


def toy_chain() -> nn.Sequential:
    """conv3/s1 -> conv3/s2 -> maxpool2/s2 -> conv1: RF 7, stride 4 (1+2, +2*1, +1*2)."""
    return nn.Sequential(
        OrderedDict(
            a=nn.Conv2d(2, 4, 3),
            act=nn.ReLU(),
            b=nn.Conv2d(4, 4, 3, stride=2),
            bn=nn.BatchNorm2d(4),
            pool=nn.MaxPool2d(2, 2),
            c=nn.Conv2d(4, 3, 1),
        )
    )


# --- smoke and exact numbers --------------------------------------------------------------------


def test_toy_chain_exact_field():
    rf = receptive_field(toy_chain())
    assert rf == ReceptiveField(size=7, stride=4, offset=0)
    assert (rf.size, rf.stride, rf.offset) == (7, 4, 0)


def test_dilated_and_avgpool_chain():
    chain = nn.Sequential(nn.Conv2d(1, 1, 3, dilation=2), nn.AvgPool2d(3, stride=3), nn.Conv2d(1, 1, 2, stride=2))
    # sizes: 1 + 4 = 5; + 2*1 = 7 (jump 3); + 1*3 = 10 (jump 6)
    assert receptive_field(chain) == ReceptiveField(10, 6, 0)


def test_cell_boxes_exact_values_row_major():
    rf = receptive_field(toy_chain())
    # 16 px: conv3 -> 14, conv3/s2 -> 6, pool2/s2 -> 3 cells per side
    assert rf.grid(16, 16) == (3, 3)
    boxes = rf.cell_boxes(16, 20)  # width 20: 18 -> 8 -> 4 cells
    assert boxes.shape == (3 * 4, 4)
    assert boxes.dtype == torch.float32
    expected = torch.tensor(
        [[4 * c, 4 * r, 4 * c + 7, 4 * r + 7] for r in range(3) for c in range(4)], dtype=torch.float32
    )
    torch.testing.assert_close(boxes, expected, rtol=0, atol=0)
    assert rf.cell_box(2, 3) == (12, 8, 19, 15)


def test_manual_field_closed_form_grid():
    rf = ReceptiveField(95, 8)
    assert rf.grid(224, 224) == (17, 17)
    assert rf.grid(95, 102) == (1, 1)
    assert rf.grid(103, 95) == (2, 1)
    assert rf.cell_boxes(224, 224)[-1].tolist() == [128.0, 128.0, 223.0, 223.0]


@pytest.mark.parametrize("size", [(16, 16), (17, 23), (31, 18), (64, 45), (7, 7)])
def test_grid_matches_real_output_shape(size):
    chain = toy_chain().eval()
    rf = receptive_field(chain)
    with torch.no_grad():
        out = chain(torch.randn(1, 2, *size))
    assert rf.grid(*size) == tuple(out.shape[-2:])
    assert rf.cell_boxes(*size).shape[0] == out.shape[-2] * out.shape[-1]


def test_grid_follows_floor_arithmetic_of_each_layer():
    # Two stride-3 layers with kernels smaller than the stride: the floors bite at every layer.
    chain = nn.Sequential(nn.Conv2d(1, 1, 2, stride=3), nn.Conv2d(1, 1, 2, stride=3), nn.MaxPool2d(3, 2))
    rf = receptive_field(chain)
    for n in range(rf.size, 60):
        with torch.no_grad():
            out = chain(torch.randn(1, 1, n, n + 1))
        assert rf.grid(n, n + 1) == tuple(out.shape[-2:]), n


def test_min_input_size():
    rf = receptive_field(toy_chain())
    assert rf.min_input_size() == 7
    assert rf.grid(7, 7) == (1, 1)


# --- exceptions ---------------------------------------------------------------------------------


def test_geometry_error_family():
    assert issubclass(GeometryError, AgripatchError)
    assert issubclass(GeometryError, ValueError)


def test_too_small_input_raises():
    rf = receptive_field(toy_chain())
    with pytest.raises(GeometryError, match="too small"):
        rf.grid(6, 40)
    with pytest.raises(GeometryError, match="smaller than the receptive field"):
        ReceptiveField(95, 8).grid(224, 90)


def test_invalid_field_raises():
    with pytest.raises(GeometryError):
        ReceptiveField(0, 1)
    with pytest.raises(GeometryError):
        ReceptiveField(3, 0)


def test_strict_refuses_padding_naming_layer():
    chain = nn.Sequential(OrderedDict(stem=nn.Conv2d(3, 4, 3), trunk=nn.Sequential(nn.Conv2d(4, 4, 3, padding=1))))
    with pytest.raises(GeometryError, match=r"'trunk\.0'.*padding=1"):
        receptive_field(chain)


def test_strict_refuses_padding_mode():
    chain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=2, padding_mode="reflect"))
    with pytest.raises(GeometryError, match="reflect"):
        receptive_field(chain)


def test_strict_refuses_pad_layer():
    chain = nn.Sequential(OrderedDict(pad=nn.ZeroPad2d(1), conv=nn.Conv2d(3, 4, 3)))
    with pytest.raises(GeometryError, match="'pad'"):
        receptive_field(chain)


def test_strict_refuses_conv2d_same():
    from timm.layers import Conv2dSame

    chain = nn.Sequential(OrderedDict(conv_stem=Conv2dSame(3, 8, 3, stride=2)))
    with pytest.raises(GeometryError, match=r"'conv_stem' \(Conv2dSame\).*same"):
        receptive_field(chain)
    with pytest.raises(GeometryError):
        receptive_field(chain, strict=False)  # input-size-dependent: no fixed offset even when lenient


def test_strict_refuses_squeeze_excitation_naming_layer():
    from timm.models._efficientnet_blocks import SqueezeExcite

    chain = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 8, 3), se=SqueezeExcite(8), out=nn.Conv2d(8, 8, 3)))
    with pytest.raises(GeometryError, match=r"'se' \(SqueezeExcite\).*not local"):
        receptive_field(chain)
    # lenient: the SE is skipped and the local part is described
    assert receptive_field(chain, strict=False) == ReceptiveField(5, 1, 0)


@pytest.mark.parametrize(
    "module",
    [
        nn.AdaptiveAvgPool2d(1), nn.MultiheadAttention(8, 2), nn.Linear(8, 8), nn.GroupNorm(2, 8),
        nn.Upsample(scale_factor=2),
    ],
)
def test_strict_refuses_nonlocal(module):
    chain = nn.Sequential(OrderedDict(conv=nn.Conv2d(3, 8, 3), odd=module))
    with pytest.raises(GeometryError, match="'odd'"):
        receptive_field(chain)


def test_strict_refuses_uncropped_residual():
    from timm.models._efficientnet_blocks import InvertedResidual

    block = InvertedResidual(8, 8, dw_kernel_size=3)
    assert block.has_skip
    with pytest.raises(GeometryError, match="un-cropped residual"):
        receptive_field(nn.Sequential(OrderedDict(block=block)))


def test_strict_refuses_unknown_leaf():
    class Mystery(nn.Module):
        def forward(self, x):
            return x.flip(-1)

    with pytest.raises(GeometryError, match="'1' .*Mystery"):
        receptive_field([nn.Conv2d(1, 1, 3), Mystery()])
    assert receptive_field([nn.Conv2d(1, 1, 3), Mystery()], strict=False) == ReceptiveField(3, 1)


def test_strict_refuses_parallel_branches():
    from timm.layers import MixedConv2d

    with pytest.raises(GeometryError, match="MixedConv2d"):
        receptive_field(nn.Sequential(OrderedDict(mixed=MixedConv2d(8, 8, [3, 5]))))


def test_non_square_and_ceil_mode_refused():
    with pytest.raises(GeometryError, match="non-square kernel"):
        receptive_field(nn.Conv2d(1, 1, (3, 5)))
    with pytest.raises(GeometryError, match="non-square dilation"):
        receptive_field(nn.Conv2d(1, 1, 3, dilation=(1, 2)))
    with pytest.raises(GeometryError, match="ceil_mode"):
        receptive_field(nn.MaxPool2d(2, ceil_mode=True))


def test_declared_geometry_attribute():
    class Gate(nn.Module):
        geometry = "nonlocal"

        def forward(self, x):
            return x * x.mean()

    with pytest.raises(GeometryError, match="Gate"):
        receptive_field([nn.Conv2d(1, 1, 3), Gate()])


# --- lenient mode: padding gives a negative offset -----------------------------------------------


def test_lenient_padding_offset_and_grid():
    chain = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, stride=2, padding=1))
    rf = receptive_field(chain, strict=False)
    assert rf == ReceptiveField(size=5, stride=2, offset=-2)
    for n in (9, 10, 17):
        with torch.no_grad():
            out = chain(torch.randn(1, 1, n, n))
        assert rf.grid(n, n) == tuple(out.shape[-2:])
    assert rf.cell_boxes(10, 10)[0].tolist() == [-2.0, -2.0, 3.0, 3.0]


# --- residual cropping --------------------------------------------------------------------------


def test_center_crop_residual_values():
    body = nn.Conv2d(2, 2, 3)
    block = CenterCropResidual(body)
    x = torch.randn(1, 2, 9, 11)
    expected = body(x) + x[..., 1:8, 1:10]
    torch.testing.assert_close(block(x), expected, rtol=0, atol=0)
    assert receptive_field(block) == ReceptiveField(3, 1)


def test_center_crop_odd_margin_raises():
    with pytest.raises(GeometryError, match="even"):
        center_crop(torch.zeros(1, 1, 8, 8), 5, 5)
    with pytest.raises(GeometryError):
        CenterCropResidual(nn.Conv2d(1, 1, 2))(torch.zeros(1, 1, 8, 8))


def test_center_crop_residual_gradcheck():
    torch.manual_seed(0)
    block = CenterCropResidual(nn.Sequential(nn.Conv2d(2, 2, 3), nn.Tanh(), nn.Conv2d(2, 2, 3, groups=2))).double()
    x = torch.randn(1, 2, 7, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(block, (x,))


# --- measured locality --------------------------------------------------------------------------


def test_measure_locality_equals_cell_box():
    torch.manual_seed(0)
    chain = nn.Sequential(
        nn.Conv2d(2, 3, 3), nn.Tanh(), CenterCropResidual(nn.Conv2d(3, 3, 3)), nn.Conv2d(3, 3, 3, stride=2)
    ).double()
    rf = receptive_field(chain)
    assert rf == ReceptiveField(7, 2)
    cells = [(0, 0), (2, 5), (4, 1)]
    boxes = measure_locality(chain, (2, 15, 17), cells)
    assert boxes == [rf.cell_box(r, c) for r, c in cells]
    assert measure_locality(chain, (1, 2, 15, 17), (1, 2, 5)) == rf.cell_box(2, 5)


def test_measure_locality_sees_padding_clip():
    chain = nn.Conv2d(1, 1, 3, padding=1).double()
    with torch.no_grad():
        chain.weight.fill_(1.0)
    rf = receptive_field(chain, strict=False)
    assert rf.cell_box(0, 0) == (-1, -1, 2, 2)
    # the real dependence is clipped by the image border: padding changes what a border cell sees
    assert measure_locality(chain, (1, 6, 6), (0, 0)) == (0, 0, 2, 2)


def test_measure_locality_zero_gradient_and_bad_cell():
    zero = nn.Conv2d(1, 1, 3, bias=True).double()
    with torch.no_grad():
        zero.weight.zero_()
    assert measure_locality(zero, (1, 5, 5), (0, 0)) is None
    with pytest.raises(ValueError):
        measure_locality(zero, (1, 5, 5), (0,))
