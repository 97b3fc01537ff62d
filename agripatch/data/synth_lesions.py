"""The lesions of the synthetic leaves: one painter per disease class, each drawing a cluster of symptoms
inside a region of the main leaf from its own random stream, and the tight box around what it drew."""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from agripatch.data.synth_scene import (
    _AA,
    _SHIFT,
    Box,
    Rgb,
    _blend,
    _blob_polygon,
    _fx,
    _jitter,
    _Leaf,
    _noise,
    _soft,
    _square,
    _to_u8,
)

_BOX_ALPHA = 0.15  # a lesion pixel belongs to its cluster's box from this opacity on


# ----------------------------------------------------------------------------------------------
# lesion painters: each draws one cluster in a local ROI and returns (alpha, colour) layers
# in drawing order; colour is an RGB triple or an HxWx3 array. Coordinates are ROI-local.

Layer = tuple[np.ndarray, "Rgb | np.ndarray"]
Painter = Callable[[np.random.Generator, np.ndarray, float, float, float, float], list[Layer]]


def _paint_leaf_spot(rng: np.random.Generator, roi: np.ndarray, cx: float, cy: float, r: float,
                     size: float) -> list[Layer]:
    """Clustered small dark-brown spots, each ringed by a yellow chlorotic halo."""
    h, w = roi.shape[:2]
    halo = np.zeros((h, w), np.uint8)
    core = np.zeros((h, w), np.uint8)
    centre = np.zeros((h, w), np.uint8)
    n = int(np.clip(rng.integers(5, 11) * (r / (0.08 * size)) ** 2, 4, 22))
    for j in range(n):
        sr = max(1.3, rng.uniform(0.010, 0.018) * size)
        hr = sr * rng.uniform(1.5, 1.9)
        reach = max(0.0, r - hr - 1)
        rad, ang = (0.0, 0.0) if j == 0 else (reach * math.sqrt(rng.random()), rng.uniform(0, 2 * np.pi))
        x, y = cx + rad * math.cos(ang), cy + rad * math.sin(ang)
        cv2.circle(halo, (_fx(x), _fx(y)), _fx(hr), 255, -1, _AA, _SHIFT)
        cv2.ellipse(core, (_fx(x), _fx(y)), (_fx(sr), _fx(sr * rng.uniform(0.7, 1.0))), rng.uniform(0, 180),
                    0, 360, 255, -1, _AA, _SHIFT)
        if rng.random() < 0.5:
            cv2.circle(centre, (_fx(x), _fx(y)), _fx(sr * 0.4), 255, -1, _AA, _SHIFT)
    return [
        (_soft(halo, 0.35 * sr) * rng.uniform(0.65, 0.85), _jitter(rng, (212, 196, 64), 15)),
        (_soft(core, 0.5) * 0.95, _jitter(rng, (72, 42, 22), 10)),
        (_soft(centre, 0.5) * 0.6, _jitter(rng, (140, 115, 85), 10)),
    ]


def _paint_rust(rng: np.random.Generator, roi: np.ndarray, cx: float, cy: float, r: float,
                size: float) -> list[Layer]:
    """A pale chlorotic patch densely dotted with small raised orange pustules (lit centre)."""
    h, w = roi.shape[:2]
    under = np.zeros((h, w), np.uint8)
    cv2.fillPoly(under, [_blob_polygon(rng, cx, cy, r * rng.uniform(0.7, 0.85), 0.4)], 255, _AA, _SHIFT)
    pust = np.zeros((h, w), np.uint8)
    lit = np.zeros((h, w), np.uint8)
    n = int(np.clip(rng.integers(18, 34) * (r / (0.08 * size)) ** 2, 12, 70))
    for _ in range(n):
        pr = max(1.1, rng.uniform(0.006, 0.010) * size)
        reach = max(0.0, r * 0.8 - pr - 1)
        rad = min(reach, abs(rng.normal(0, 0.45 * reach)))
        ang = rng.uniform(0, 2 * np.pi)
        x, y = cx + rad * math.cos(ang), cy + rad * math.sin(ang)
        cv2.circle(pust, (_fx(x), _fx(y)), _fx(pr), 255, -1, _AA, _SHIFT)
        cv2.circle(lit, (_fx(x - 0.3 * pr), _fx(y - 0.3 * pr)), _fx(0.45 * pr), 255, -1, _AA, _SHIFT)
    return [
        (_soft(under, 0.12 * r) * rng.uniform(0.35, 0.5), _jitter(rng, (196, 190, 82), 12)),
        (_soft(pust, 0.45) * 0.95, _jitter(rng, (214, 112, 28), 14)),
        (_soft(lit, 0.5) * 0.7, _jitter(rng, (250, 186, 92), 8)),
    ]


def _paint_blight(rng: np.random.Generator, roi: np.ndarray, cx: float, cy: float, r: float,
                  size: float) -> list[Layer]:
    """One large irregular necrotic patch: tan centre with faint rings, dark margin, yellow fringe."""
    h, w = roi.shape[:2]
    rad = r * rng.uniform(0.7, 0.88)
    rough = rng.uniform(0.25, 0.45)
    outer = _blob_polygon(rng, cx, cy, rad, rough)
    centre = np.array([_fx(cx), _fx(cy)], np.float64)
    inner = np.round((outer - centre) * (1 - rng.uniform(0.12, 0.2)) + centre).astype(np.int32)
    fringe = np.zeros((h, w), np.uint8)
    cv2.fillPoly(fringe, [outer], 255, _AA, _SHIFT)
    dark = fringe.copy()
    tan = np.zeros((h, w), np.uint8)
    cv2.fillPoly(tan, [inner], 255, _AA, _SHIFT)
    rings = np.zeros((h, w), np.uint8)
    for frac in rng.uniform(0.25, 0.7, int(rng.integers(1, 4))):
        cv2.circle(rings, (_fx(cx), _fx(cy)), _fx(rad * frac), 255, max(1, int(round(size / 384))), _AA, _SHIFT)
    tan_col = np.asarray(_jitter(rng, (178, 146, 96), 14), np.float32)
    tex = 1.0 + 0.12 * _noise(rng, h, w, 5, octaves=2)
    fringe_a = cv2.GaussianBlur(_soft(fringe, 0), (0, 0), 0.1 * r)
    return [
        (np.clip(fringe_a * 1.6, 0, 1) * rng.uniform(0.45, 0.6), _jitter(rng, (200, 186, 70), 12)),
        (_soft(dark, 0.8) * 0.95, _jitter(rng, (82, 50, 26), 10)),
        (_soft(tan, 0.8) * 0.95, tan_col[None, None, :] * tex[..., None]),
        (_soft(rings, 0.6) * (tan.astype(np.float32) / 255.0) * 0.5, _jitter(rng, (120, 88, 52), 10)),
    ]


def _paint_powdery_mildew(rng: np.random.Generator, roi: np.ndarray, cx: float, cy: float, r: float,
                          size: float) -> list[Layer]:
    """White, dusty, fuzzy-edged patches with a granular texture and a few loose specks."""
    h, w = roi.shape[:2]
    body = np.zeros((h, w), np.uint8)
    for j in range(int(rng.integers(3, 7))):
        br = r * rng.uniform(0.25, 0.45)
        reach = max(0.0, r * 0.85 - br)
        rad = 0.0 if j == 0 else reach * math.sqrt(rng.random())
        ang = rng.uniform(0, 2 * np.pi)
        cv2.fillPoly(body, [_blob_polygon(rng, cx + rad * math.cos(ang), cy + rad * math.sin(ang), br, 0.5)],
                     255, _AA, _SHIFT)
    alpha = np.clip(_soft(body, 0.12 * r) * 1.5, 0, 1)
    grain = np.clip(0.75 + 0.25 * rng.standard_normal((h, w), dtype=np.float32)
                    + 0.15 * _noise(rng, h, w, 6), 0, 1)
    specks = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.integers(4, 14))):
        ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 0.9) * r
        cv2.circle(specks, (_fx(cx + rad * math.cos(ang)), _fx(cy + rad * math.sin(ang))),
                   _fx(max(0.8, rng.uniform(0.002, 0.005) * size)), 255, -1, _AA, _SHIFT)
    return [
        (alpha * grain * rng.uniform(0.85, 0.95), _jitter(rng, (238, 238, 230), 8)),
        (_soft(specks, 0.5) * 0.8, (240, 240, 232)),
    ]


def _paint_mosaic(rng: np.random.Generator, roi: np.ndarray, cx: float, cy: float, r: float,
                  size: float) -> list[Layer]:
    """Mottled light yellow-green and dark green patches confined to an irregular area."""
    h, w = roi.shape[:2]
    area = np.zeros((h, w), np.uint8)
    cv2.fillPoly(area, [_blob_polygon(rng, cx, cy, r * rng.uniform(0.8, 0.92), 0.35)], 255, _AA, _SHIFT)
    area_a = _soft(area, 0.06 * r)
    field = _noise(rng, h, w, max(3.0, 2 * r / (0.035 * size)), octaves=1)
    light = np.clip((field + 0.05) * 3.0, 0, 1) * area_a
    dark = np.clip((-field - 0.35) * 3.0, 0, 1) * area_a
    return [
        (light * rng.uniform(0.75, 0.9), _jitter(rng, (198, 210, 86), 12)),
        (dark * rng.uniform(0.5, 0.7), roi * 0.5),
    ]


_PAINTERS: dict[str, Painter] = {
    "leaf_spot": _paint_leaf_spot,
    "rust": _paint_rust,
    "blight": _paint_blight,
    "powdery_mildew": _paint_powdery_mildew,
    "mosaic": _paint_mosaic,
}


def _paint_cluster(painter: Painter, rng: np.random.Generator, img: np.ndarray, leaf: _Leaf,
                   cx: float, cy: float, r: float, size: int, lesions: np.ndarray | None = None) -> Box | None:
    """Draw one cluster clipped to its region square and the leaf; return its tight box. ``lesions`` (HxW bool),
    when given, gets every pixel the box counts (opacity >= ``_BOX_ALPHA``): the cluster's pixel mask."""
    x0, y0, x1, y1 = _square(cx, cy, r, size)
    roi = img[y0:y1, x0:x1].astype(np.float32)
    leaf_a = leaf.alpha[y0:y1, x0:x1]
    covered = np.zeros(roi.shape[:2], np.float32)
    for alpha, color in painter(rng, roi, cx - x0, cy - y0, r, float(size)):
        alpha = alpha * leaf_a
        _blend(roi, alpha, color)
        np.maximum(covered, alpha, out=covered)
    img[y0:y1, x0:x1] = _to_u8(roi)
    if lesions is not None:
        lesions[y0:y1, x0:x1] |= covered >= _BOX_ALPHA
    ys, xs = np.nonzero(covered >= _BOX_ALPHA)
    if len(xs) == 0:
        return None
    return x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1
