"""How a patch is cut from a photo, written once for both backends (numpy, torch-free): torchvision's
``roi_align(aligned=True, sampling_ratio=g)`` as two small weight matrices.

Each output pixel of a box averages a ``g x g`` grid of bilinear samples, ``g = ceil(largest box side of the photo
/ S)`` (so shrinking a large box behaves like an area filter, not aliasing). The sample coordinates and bilinear
weights are computed in float32 exactly like torchvision's CPU kernel (``roi_align_kernel.cpp``,
``pre_calc_for_bilinear_interpolate``), border rules included (a sample more than one pixel outside is zero, one
within is clamped to the edge). A sample's weight is the product of a y weight and an x weight, so the crop of one
channel is ``Wy @ window @ Wx.T`` with ``Wy`` [S, h] and ``Wx`` [S, w] over the box's window of the photo: a few
matrix products instead of ``S * S * g * g`` gathers, which made the crop most of the cascade's time on large
photos. The PyTorch backend applies the matrices with torch (any device), the ONNX runtime with numpy/scipy; both
agree with ``roi_align`` to float32 rounding (tests pin it).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

__all__ = ["CACHE_BYTES", "BoxWeights", "axis_weights", "box_weights", "sampling_ratio"]

_F32 = np.float32


def sampling_ratio(boxes: np.ndarray, out_size: int) -> int:
    """Samples per output pixel and axis for one photo's boxes [K, 4]: ``ceil(largest side / S)``, at least 1.

    Sides are taken in float32 then widened (the boxes are float32 everywhere)."""
    boxes = np.asarray(boxes, dtype=np.float32)
    sides = (boxes[..., 2:] - boxes[..., :2]).astype(np.float64)
    if (sides <= 0).any():
        raise ValueError("every box needs x1 > x0 and y1 > y0")
    return max(1, math.ceil(float(sides.max()) / out_size)) if sides.size else 1


def axis_weights(start: float, end: float, out_size: int, grid: int, limit: int) -> np.ndarray:
    """[out_size, limit] float64: how much each input row (or column) adds to each output row, summed over the
    ``grid`` samples of every output bin (not yet divided by ``grid * grid``)."""
    begin = _F32(_F32(start) - _F32(0.5))  # aligned=True: pixel i covers [i, i + 1)
    length = _F32(_F32(_F32(end) - _F32(0.5)) - begin)
    bin_size = _F32(length / _F32(out_size))
    p = np.arange(out_size, dtype=np.float32)[:, None]
    i = np.arange(grid, dtype=np.float32)[None, :]
    coord = (begin + p * bin_size) + ((i + _F32(0.5)) * bin_size) / _F32(grid)  # float32 throughout
    valid = ~((coord < -1.0) | (coord > limit))
    coord = np.where(coord <= 0, _F32(0.0), coord).astype(np.float32)
    low = coord.astype(np.int64)
    at_end = low >= limit - 1
    low = np.where(at_end, limit - 1, low)
    high = np.where(at_end, limit - 1, low + 1)
    coord = np.where(at_end, low.astype(np.float32), coord).astype(np.float32)
    frac = (coord - low.astype(np.float32)).astype(np.float32)
    keep = (_F32(1.0) - frac).astype(np.float32)
    weights = np.zeros((out_size, limit), np.float64)
    rows = np.broadcast_to(np.arange(out_size)[:, None], low.shape)
    np.add.at(weights, (rows[valid], low[valid]), keep[valid].astype(np.float64))
    np.add.at(weights, (rows[valid], high[valid]), frac[valid].astype(np.float64))
    return weights


@dataclass(frozen=True)
class BoxWeights:
    """One box's crop: the window ``[y0:y1, x0:x1]`` of the photo it reads and the matrices ``wy`` [S, y1 - y0]
    (with the 1 / (g * g) average folded in) and ``wx`` [S, x1 - x0], float32 (summed in float64, rounded once).
    :attr:`sparse` gives the same matrices in compressed rows (scipy): each output row touches only the few input
    rows its ``g`` samples fall between. Both backends apply those on the CPU (the runtime with scipy, PyTorch with
    its sparse products over the same arrays); PyTorch on a GPU reads the dense ones."""

    y0: int
    y1: int
    x0: int
    x1: int
    wy: np.ndarray
    wx: np.ndarray

    @cached_property
    def sparse(self) -> tuple[Any, Any]:
        """``(wy, wx)`` as float32 compressed-row matrices, built on first use."""
        return csr_matrix(self.wy), csr_matrix(self.wx)


def box_weights(box: np.ndarray, out_size: int, grid: int, height: int, width: int) -> BoxWeights | None:
    """The crop of ``box`` (x0, y0, x1, y1 in photo pixels) from a ``height`` x ``width`` photo, or None when it
    touches no pixel (its patch is all zeros before normalisation). Remembered: photos of one size share their
    cells' boxes, so a folder from one camera builds each cell's matrices once (read them, never write)."""
    key = (*(float(v) for v in np.asarray(box, dtype=np.float32)), int(out_size), int(grid), int(height), int(width))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    weights = _box_weights(*key)
    _CACHE[key] = weights
    global _cached_bytes
    _cached_bytes += _nbytes(weights)
    while _cached_bytes > CACHE_BYTES and len(_CACHE) > 1:
        _cached_bytes -= _nbytes(_CACHE.popitem(last=False)[1])
    return weights


#: Memory the remembered box matrices may hold (least recently used go first).
CACHE_BYTES = 64 * 2**20
_CACHE: OrderedDict[tuple, BoxWeights | None] = OrderedDict()
_cached_bytes = 0


def _nbytes(weights: BoxWeights | None) -> int:
    """The dense matrices and, at most, their sparse copies (a value and an index per entry, plus row pointers)."""
    if weights is None:
        return 0
    dense = weights.wy.nbytes + weights.wx.nbytes
    return 3 * dense + 8 * (len(weights.wy) + len(weights.wx) + 2)


def _box_weights(x0: float, y0: float, x1: float, y1: float, out_size: int, grid: int, height: int,
                 width: int) -> BoxWeights | None:
    wy = axis_weights(y0, y1, out_size, grid, height)
    wx = axis_weights(x0, x1, out_size, grid, width)
    ys, xs = np.flatnonzero(wy.any(axis=0)), np.flatnonzero(wx.any(axis=0))
    if not len(ys) or not len(xs):
        return None
    ya, yb, xa, xb = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    wy = (wy[:, ya:yb] / float(grid * grid)).astype(np.float32)
    wx = np.ascontiguousarray(wx[:, xa:xb], dtype=np.float32)
    wy.setflags(write=False)
    wx.setflags(write=False)
    return BoxWeights(ya, yb, xa, xb, wy, wx)
