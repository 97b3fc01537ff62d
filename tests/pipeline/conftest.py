"""Small real networks for the pipeline tests (no mocks: they compute, their geometry is exact)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 4
ANCHOR_MEAN = (0.5, 0.4, 0.3)
ANCHOR_STD = (0.25, 0.2, 0.3)
CLS_MEAN = (0.485, 0.456, 0.406)
CLS_STD = (0.229, 0.224, 0.225)


class TinyAnchorNet(nn.Module):
    """Padding-free AnchorNet: conv3/s2 -> ReLU -> conv3/s2 -> ReLU -> per-cell linear head.

    Receptive field 1 + 2 + 2 * 2 = 7 px, stride 4, first box at 0: cell (i, j) sees
    x in [4j, 4j + 7), y in [4i, 4i + 7). The CAM is the head applied to every cell divided
    by the cell count, so it sums (plus the bias) to the logits of global average pooling.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, width, 3, stride=2), nn.ReLU(), nn.Conv2d(width, width, 3, stride=2), nn.ReLU()
        )
        self.head = nn.Linear(width, num_classes)
        self.cfg = {"mean": ANCHOR_MEAN, "std": ANCHOR_STD}

    def forward_cam(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        cells = f.shape[2] * f.shape[3]
        cam = F.conv2d(f, self.head.weight[:, :, None, None]) / cells
        return cam.sum((2, 3)) + self.head.bias, cam

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_cam(x)[0]

    @staticmethod
    def grid(height: int, width: int) -> tuple[int, int]:
        def axis(n: int) -> int:
            return ((n - 3) // 2 + 1 - 3) // 2 + 1

        return axis(height), axis(width)

    def cell_boxes(self, height: int, width: int) -> torch.Tensor:
        gh, gw = self.grid(height, width)
        ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
        x0, y0 = 4 * xs.reshape(-1), 4 * ys.reshape(-1)
        return torch.stack([x0, y0, x0 + 7, y0 + 7], dim=1).float()


class TinyClassifier(nn.Module):
    """Any-size classifier: conv3/s2 (padded) -> ReLU -> global average -> linear."""

    def __init__(self, num_classes: int = NUM_CLASSES, width: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, stride=2, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture
def anchornet_cls() -> type[TinyAnchorNet]:
    return TinyAnchorNet


@pytest.fixture
def anchornet() -> TinyAnchorNet:
    torch.manual_seed(1)
    return TinyAnchorNet().eval()


@pytest.fixture
def classifier() -> TinyClassifier:
    torch.manual_seed(2)
    return TinyClassifier().eval()


@pytest.fixture
def photos() -> list:
    """Photos of different sizes and kinds: 1x and 4x the glance (32), non-square, a tensor."""
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (32, 32, 3), dtype=np.uint8),
        rng.integers(0, 256, (128, 128, 3), dtype=np.uint8),
        rng.integers(0, 256, (48, 80, 3), dtype=np.uint8),
        torch.from_numpy(rng.integers(0, 256, (3, 40, 64), dtype=np.uint8)),
        rng.integers(0, 256, (96, 36, 3), dtype=np.uint8),
        torch.from_numpy(rng.random((3, 33, 45), dtype=np.float32)),
    ]
