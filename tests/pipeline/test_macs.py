from __future__ import annotations

import pytest
import torch
from torch import nn

from agripatch.pipeline.macs import clear_macs_cache, count_macs, format_gmacs


class CountingConv(nn.Module):
    """A conv that records how often, and in which mode, it ran."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.calls: list[bool] = []

    def forward(self, x):
        self.calls.append(self.training)
        return self.conv(x)


def test_linear_exact():
    assert count_macs(nn.Linear(10, 7), (5, 10)) == 5 * 10 * 7


@pytest.mark.parametrize(
    ("conv", "shape", "expected"),
    [
        (nn.Conv2d(3, 8, 3), (2, 3, 10, 12), 2 * 8 * 8 * 10 * 3 * 9),
        (nn.Conv2d(3, 8, 3, stride=2, padding=1), (1, 3, 10, 12), 8 * 5 * 6 * 3 * 9),
        (nn.Conv2d(4, 8, 3, groups=2), (1, 4, 5, 5), 8 * 3 * 3 * 2 * 9),
    ],
)
def test_conv_exact(conv, shape, expected):
    assert count_macs(conv, shape) == expected


def test_elementwise_layers_are_free():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2)
    )
    assert count_macs(net, (1, 3, 6, 6)) == 8 * 4 * 4 * 3 * 9 + 8 * 2


def test_batch_scales_linearly():
    net = nn.Conv2d(3, 5, 3)
    assert count_macs(net, (4, 3, 9, 9)) == 4 * count_macs(net, (1, 3, 9, 9))


def test_eval_no_grad_and_mode_restored():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    net.train()
    before = net[1].running_mean.clone()
    count_macs(net, (2, 3, 8, 8))
    assert net.training and net[1].training
    torch.testing.assert_close(net[1].running_mean, before, rtol=0, atol=0)  # BN ran in eval mode


def test_cached_per_shape_and_mode():
    clear_macs_cache()
    net = CountingConv().train()
    first = count_macs(net, (1, 3, 4, 4))
    assert count_macs(net, (1, 3, 4, 4)) == first == 4 * 4 * 4 * 3
    assert net.calls == [False]  # counted once, in eval mode
    count_macs(net, (1, 3, 8, 8))
    net.eval()
    count_macs(net, (1, 3, 4, 4))
    assert len(net.calls) == 3
    clear_macs_cache()
    count_macs(net, (1, 3, 4, 4))
    assert len(net.calls) == 4


def test_method(anchornet):
    # forward_cam: two convs plus the per-cell head (7 x 7 cells at 32 x 32).
    trunk = 8 * 15 * 15 * 3 * 9 + 8 * 7 * 7 * 8 * 9
    assert count_macs(anchornet, (1, 3, 32, 32), method="forward_cam") == trunk + 4 * 7 * 7 * 8


def test_format_gmacs():
    assert format_gmacs(4_123_000_000) == "4.12 GMACs"
    assert format_gmacs(512_000_000) == "0.512 GMACs"
    assert format_gmacs(0) == "0 GMACs"


@pytest.mark.parametrize("shape", [(), (1, 0, 4), (-1, 3)])
def test_bad_shape(shape):
    with pytest.raises(ValueError):
        count_macs(nn.Linear(3, 3), shape)
