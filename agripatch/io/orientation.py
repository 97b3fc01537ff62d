"""Photos read in the orientation the model was trained on.

BRACOL's coffee leaves are all photographed landscape (1024 x 512 and 2048 x 1024); phones shoot portrait. The
`coffee_highres` recipe refused every quarter-turned test leaf as ``not_a_leaf`` (49 of 49, benchmarks/README.md
"Photos in the other orientation"): a turned leaf's glance, squeezed to a square, lies far from every training
photo's. Training records which way its photos lie (:func:`dominant_orientation`), and every reader of a photo for
that model (``predict``, ``evaluate``, the Python API, the ONNX runtime) turns a photo lying the other way a quarter
turn clockwise before anything else (:func:`quarter_turns`); the record's boxes are mapped back to the file's own
pixels (:func:`boxes_before_turn`). Square photos, and models trained on both orientations, are read as they are.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import numpy as np

__all__ = ["ORIENTATION_SHARE", "Orientation", "boxes_before_turn", "dominant_orientation", "orientation_of",
           "quarter_turns", "turn", "turn_with_size"]

Orientation = Literal["any", "landscape", "portrait"]

#: The share of training photos that must lie one way for the model to read every photo that way.
ORIENTATION_SHARE = 0.95


def orientation_of(height: int, width: int) -> str:
    """``landscape`` (wider than high), ``portrait`` (higher than wide) or ``square``."""
    return "landscape" if width > height else "portrait" if height > width else "square"


def dominant_orientation(sizes: Iterable[tuple[int, int]], share: float = ORIENTATION_SHARE) -> Orientation:
    """Which way the training photos (upright (H, W) each) lie: ``landscape`` or ``portrait`` when at least
    ``share`` of them lie that way, else ``any`` (mixed or square photos: nothing is turned)."""
    counts = {"landscape": 0, "portrait": 0, "square": 0}
    for height, width in sizes:
        counts[orientation_of(int(height), int(width))] += 1
    total = sum(counts.values())
    for way in ("landscape", "portrait"):
        if total and counts[way] >= share * total:
            return way  # type: ignore[return-value]
    return "any"


def quarter_turns(hw: tuple[int, int], orientation: str | None) -> int:
    """Clockwise quarter turns (0 or 1) that bring a photo of upright size ``hw`` to the model's ``orientation``
    (``None`` or ``any``: none)."""
    if orientation in (None, "any"):
        return 0
    if orientation not in ("landscape", "portrait"):
        raise ValueError(f"orientation must be 'any', 'landscape' or 'portrait', got {orientation!r}")
    way = orientation_of(int(hw[0]), int(hw[1]))
    return int(way != "square" and way != orientation)


def turn(array: np.ndarray, turns: int) -> np.ndarray:
    """An HWC photo turned ``turns`` quarter turns clockwise (C-contiguous; the array itself when 0)."""
    turns %= 4
    return array if turns == 0 else np.ascontiguousarray(np.rot90(array, k=-turns))


def turn_with_size(array: np.ndarray, hw: tuple[int, int], turns: int) -> tuple[np.ndarray, tuple[int, int]]:
    """An HWC photo and a size of it (H, W) turned together ``turns`` quarter turns clockwise (:func:`turn`)."""
    return turn(array, turns), ((hw[1], hw[0]) if turns % 2 else (hw[0], hw[1]))


def boxes_before_turn(boxes: np.ndarray, turned_hw: tuple[int, int], turns: int) -> np.ndarray:
    """[K, 4] (x0, y0, x1, y1) boxes on a photo turned ``turns`` (0 or 1) quarter turns clockwise, whose turned
    size is ``turned_hw``, mapped back to the photo's own pixels."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if turns % 4 == 0 or len(boxes) == 0:
        return boxes
    if turns % 4 != 1:
        raise ValueError(f"only a single quarter turn is mapped back, got {turns}")
    # A clockwise turn of an H x W photo sends its point (x, y) to (H - y, x) on the W x H photo.
    original_height = turned_hw[1]
    x0, y0, x1, y1 = boxes.T
    return np.stack([y0, original_height - x1, y1, original_height - x0], axis=1)
