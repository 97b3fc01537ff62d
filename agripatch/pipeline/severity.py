"""Severity: the share of a leaf's area that shows symptoms, and the class it falls in (issue 25), torch-free.

A symptom map (:mod:`agripatch.models.symptom_map`) gives, for every 8-px cell of a photo, the probabilities of
background, healthy leaf and symptom. A photo's severity is the symptom's share of the leaf: symptom over leaf +
symptom, summed over the cells (expected areas, :func:`severity_share`). Its class comes from cut-points on that
share (:class:`SeverityBins`; BRACOL's five classes for coffee). The map reads the whole photo shrunk with its
aspect kept to ``side`` pixels on its long side (:func:`map_hw`, sides multiples of the map's stride).

Both backends run the map and call :func:`read_severity` through the cascade core, so a PyTorch and an ONNX
Runtime prediction give the same severity; `evaluate` scores it with :mod:`agripatch.engine.severity`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from agripatch.schema import StrictModel

__all__ = [
    "CHANNELS",
    "SEVERITY_NAMES",
    "Severity",
    "SeverityBins",
    "SeverityConfig",
    "map_hw",
    "read_severity",
    "severity_share",
]

#: The symptom map's output channels, in order (a test pins the network's own list to it).
CHANNELS = ("background", "leaf", "symptom")
_LEAF, _SYMPTOM = CHANNELS.index("leaf"), CHANNELS.index("symptom")

#: BRACOL's severity classes, in order (``leaf/severity.csv``'s ``severity`` 0-4).
SEVERITY_NAMES = ("healthy", "very_low", "low", "high", "very_high")

#: The long side the shipped map reads a photo at by default: the side it was trained at (224 x 112). Trained at 224 it
#: classifies BRACOL severity as well as the previous map (trained at 512, read at 320) for 56% of its MACs
#: (benchmarks/results/symptom_map/side_trained_vs_shipped.json).
SHIPPED_SIDE = 224

#: Cut-points (share percent) of the shipped map at :data:`SHIPPED_SIDE`: fitted on its predicted shares of the BRACOL
#: leaf/ TRAIN leaves against their severity class (benchmarks/results/symptom_map/coffee_field/side224/weak1/summary.json,
#: seed 0).
SHIPPED_CUTS = (0.0937044769525528, 3.8880951404571533, 8.137968063354492, 10.400466442108154)


@dataclass(frozen=True)
class SeverityBins:
    """Cut-points between consecutive classes, in share percent: a share ``>= cuts[k]`` is class ``k + 1`` or higher.

    ``source`` says where the cuts came from (fitted on which leaves, or typed in), for reports.
    """

    cuts: tuple[float, ...]
    source: str = "given"

    def __post_init__(self) -> None:
        if any(b < a for a, b in zip(self.cuts, self.cuts[1:])):
            raise ValueError(f"cut-points must not decrease, got {self.cuts}")

    @property
    def n_classes(self) -> int:
        """Classes the cuts separate (one more than the cuts)."""
        return len(self.cuts) + 1

    def classify(self, shares: Sequence[float] | np.ndarray) -> np.ndarray:
        """Class index (int64) of every share: how many cut-points are at or below it."""
        return np.searchsorted(np.asarray(self.cuts, dtype=np.float64), np.asarray(shares, dtype=np.float64),
                               side="right").astype(np.int64)


def severity_share(probs):
    """Percent of leaf that is symptom: ``100 * sum(symptom) / sum(leaf + symptom)`` over the cells of each map.

    ``probs`` is ``(..., 3, H, W)`` class probabilities (a softmax, or a one-hot hard map) in :data:`CHANNELS`
    order, a numpy array or a torch tensor; the result has shape ``(...)``. With calibrated probabilities each cell
    contributes its expected symptom and leaf area, so the share is that of the expected areas. A map without leaf
    gives 0.
    """
    sym = probs[..., _SYMPTOM, :, :].sum(-1).sum(-1)  # the same calls for numpy arrays and tensors
    total = sym + probs[..., _LEAF, :, :].sum(-1).sum(-1)
    return 100.0 * sym / (total + (total == 0))  # exact division; a map without leaf (sym = 0) gives 0


class SeverityConfig(StrictModel):
    """How a cascade measures severity: which map, at what size, and the classes its share falls in.

    Attributes:
        map: the registered symptom map (:func:`agripatch.models.symptom_map.create_symptom_map`).
        side: long side, in pixels, of the photo as the map reads it (aspect kept).
        stride: the map's pixels per cell (its sides are rounded to multiples of it).
        cuts: cut-points between the classes, share percent (one fewer than ``names``).
        names: the classes, mildest first.
        source: where the cuts came from (reports).
        macs_terms: ``(a, b, c)`` of the map's multiply-accumulates on an ``H x W`` input, ``a*H*W + b*(H + W) +
            c`` (exact for a padding-free network on a padded input; fitted on three sizes when a network is
            attached), so a photo's cost follows its size without a profiler.
    """

    map: str = "symptom_map_lite0_s8"
    side: int = Field(SHIPPED_SIDE, ge=8)
    stride: int = Field(8, ge=1)
    cuts: list[float] = Field(default_factory=lambda: list(SHIPPED_CUTS))
    names: list[str] = Field(default_factory=lambda: list(SEVERITY_NAMES))
    source: str = f"the shipped map's cuts at {SHIPPED_SIDE} px, fitted on BRACOL leaf/ train leaves"
    macs_terms: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0], min_length=3, max_length=3)

    @model_validator(mode="after")
    def _one_name_per_class(self) -> SeverityConfig:
        if len(self.names) != len(self.cuts) + 1:
            raise ValueError(f"need one more class name than cut-points, got {len(self.names)} names and "
                             f"{len(self.cuts)} cuts")
        SeverityBins(tuple(self.cuts))  # non-decreasing
        return self

    def bins(self) -> SeverityBins:
        """The cut-points as :class:`SeverityBins`."""
        return SeverityBins(tuple(self.cuts), self.source)

    def macs(self, height: int, width: int) -> int:
        """Multiply-accumulates of the map on an input of ``height`` x ``width`` (:func:`map_hw`)."""
        a, b, c = self.macs_terms
        return int(round(a * height * width + b * (height + width) + c))


def map_hw(height: int, width: int, side: int, stride: int) -> tuple[int, int]:
    """The size the map reads a ``height`` x ``width`` photo at: long side ``side``, aspect kept, both sides
    rounded to multiples of ``stride`` (at least one cell)."""
    scale = side / max(int(height), int(width))
    return (max(stride, int(round(height * scale / stride)) * stride),
            max(stride, int(round(width * scale / stride)) * stride))


@dataclass(frozen=True)
class Severity:
    """One photo's severity: ``share`` (percent of the leaf with symptoms), its class ``index`` and ``name``, the
    map's ``symptom`` probability per cell [gh, gw] (for the overlay's outline) and ``macs`` (the map's cost)."""

    share: float
    index: int
    name: str
    symptom: np.ndarray
    macs: int


def read_severity(logits: np.ndarray, config: SeverityConfig) -> Severity:
    """One photo's :class:`Severity` from its map's logits [3, gh, gw] (softmax over the channels here, float32)."""
    logits = np.asarray(logits, np.float32)
    if logits.ndim != 3 or logits.shape[0] != len(CHANNELS):
        raise ValueError(f"a symptom map gives [{len(CHANNELS)}, gh, gw] logits, got {logits.shape}")
    e = np.exp(logits - logits.max(axis=0, keepdims=True))
    probs = (e / e.sum(axis=0, keepdims=True)).astype(np.float32)
    share = float(severity_share(probs.astype(np.float64)))
    index = int(config.bins().classify([share])[0])
    h, w = logits.shape[1] * config.stride, logits.shape[2] * config.stride
    return Severity(share, index, config.names[index], probs[_SYMPTOM], config.macs(h, w))
