"""The synthetic field scene, without the lesions: soil and pebbles, grass and other leaves, the main leaf,
class-neutral marks (shadow, dew, insect hole, dirt), optional clutter (colour card, hand) and the camera
finish. Every function draws from the random stream it is given and never reads the label
(see :mod:`agripatch.data.synth`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import cv2
import numpy as np

Box = tuple[int, int, int, int]
Rgb = tuple[float, float, float]


# ----------------------------------------------------------------------------------------------
# small drawing helpers. Full-frame work stays in uint8 with cv2 calls (speed); small regions
# (lesions, marks) are blended in float32 and written back.

_AA = cv2.LINE_AA
_SHIFT = 4  # sub-pixel bits for cv2 drawing
_ONE = 1 << _SHIFT


def _fx(v: float) -> int:
    return int(round(v * _ONE))


def _noise(rng: np.random.Generator, h: int, w: int, cells: float, octaves: int = 1) -> np.ndarray:
    """Smooth value noise, roughly unit variance, with ``cells`` features across the larger side.

    Octaves are summed on a grid of ~4 pixels per finest feature and upscaled once (speed).
    """
    finest = cells * 2 ** (octaves - 1)
    step = max(1.0, max(h, w) / (4.0 * finest))
    sh, sw = max(2, int(round(h / step))), max(2, int(round(w / step)))
    out = np.zeros((sh, sw), np.float32)
    amp, total = 1.0, 0.0
    for _ in range(octaves):
        gh = max(2, int(round(cells * sh / max(sh, sw))) + 2)
        gw = max(2, int(round(cells * sw / max(sh, sw))) + 2)
        grid = rng.standard_normal((gh, gw), dtype=np.float32)
        out += amp * cv2.resize(grid, (sw, sh), interpolation=cv2.INTER_CUBIC)
        total += amp * amp
        amp *= 0.5
        cells *= 2.0
    out *= 1.0 / math.sqrt(total)
    return out if (sh, sw) == (h, w) else cv2.resize(out, (w, h), interpolation=cv2.INTER_LINEAR)


def _blend(img: np.ndarray, alpha: np.ndarray, color: Rgb | np.ndarray) -> None:
    """In place on a float32 image: ``img = img * (1 - alpha) + color * alpha`` (alpha HxW, 0..1)."""
    a = alpha[..., None]
    img *= 1.0 - a
    img += a * np.asarray(color, np.float32)


def _to_u8(img: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Round and saturate a non-negative float image (times ``scale``) to uint8, in one cv2 call."""
    return cv2.convertScaleAbs(img, alpha=scale)


def _planes(shade: np.ndarray, color: Sequence[float]) -> np.ndarray:
    """uint8 HxWx3 image ``shade * color`` (shade HxW float, non-negative)."""
    return cv2.merge([_to_u8(shade, float(c)) for c in color])


def _hsv_rgb(h: float, s: float, v: float) -> Rgb:
    px = np.array([[[h, s, v]]], np.uint8)
    r, g, b = cv2.cvtColor(px, cv2.COLOR_HSV2RGB)[0, 0]
    return float(r), float(g), float(b)


def _jitter(rng: np.random.Generator, color: Sequence[float], amount: float) -> Rgb:
    c = np.clip(np.asarray(color, np.float32) + rng.uniform(-amount, amount, 3), 0, 255)
    return float(c[0]), float(c[1]), float(c[2])


def _blob_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float, roughness: float,
                  points: int = 28) -> np.ndarray:
    """An irregular closed outline (fixed-point): a circle whose radius wobbles by random harmonics."""
    theta = np.linspace(0, 2 * np.pi, points, endpoint=False)
    rad = np.ones_like(theta)
    for k in (2, 3, 5):
        rad += roughness / k * rng.uniform(0.5, 1.0) * np.cos(k * theta + rng.uniform(0, 2 * np.pi))
    rad = radius * rad / rad.max()
    pts = np.stack([cx + rad * np.cos(theta), cy + rad * np.sin(theta)], 1)
    return np.round(pts * _ONE).astype(np.int32)


def _soft(mask: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 0/255 drawing -> float alpha 0..1, softened by a Gaussian of ``sigma`` pixels."""
    if sigma > 0.3:
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)
    return mask.astype(np.float32) * np.float32(1.0 / 255.0)


def _square(cx: float, cy: float, r: float, size: int) -> Box:
    """The pixel square around a disc of radius ``r``, clipped to the image (end-exclusive)."""
    x0, y0 = max(0, int(math.floor(cx - r))), max(0, int(math.floor(cy - r)))
    x1, y1 = min(size, int(math.ceil(cx + r)) + 1), min(size, int(math.ceil(cy + r)) + 1)
    return x0, y0, x1, y1


# ----------------------------------------------------------------------------------------------
# scene: background, main leaf, finish


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Soil with texture and pebbles, grass blades, other leaves, sometimes fingers; defocused (uint8).

    Out of focus anyway, so it is drawn and blurred at half resolution and upscaled (speed).
    """
    half = (size + 1) // 2
    return cv2.resize(_background_at(rng, half), (size, size), interpolation=cv2.INTER_LINEAR)


def _background_at(rng: np.random.Generator, size: int) -> np.ndarray:
    palette = ((112, 84, 58), (86, 66, 48), (150, 124, 92), (104, 98, 86), (70, 56, 44))
    base = _jitter(rng, palette[rng.integers(len(palette))], 14)
    shade = 1.0 + 0.18 * _noise(rng, size, size, rng.uniform(4, 10), octaves=3)
    canvas = _planes(shade, base)
    s = size / 384.0
    n = int(rng.integers(15, 70))  # pebbles with a small shadow; parameters drawn in bulk (speed)
    centres = np.round(rng.uniform(0, size, (n, 2)) * _ONE).astype(int).tolist()
    axes = np.round(rng.uniform(1.5, 9, (n, 2)) * s * _ONE).astype(int).tolist()
    angles = rng.uniform(0, 180, n).tolist()
    greys = rng.uniform(80, 200, n)[:, None] * np.array([1.0, 0.95, 0.88]) + rng.uniform(-20, 20, (n, 3))
    drop = _fx(1.5 * s)
    for (x, y), ax, ang, col in zip(centres, axes, angles, np.clip(greys, 0, 255).tolist()):
        cv2.ellipse(canvas, (x + drop, y + drop), ax, ang, 0, 360, (40, 32, 26), -1, _AA, _SHIFT)
        cv2.ellipse(canvas, (x, y), ax, ang, 0, 360, col, -1, _AA, _SHIFT)
    n = int(rng.integers(0, 26))  # grass blades: slightly bent strokes
    starts = rng.uniform(-0.1, 1.1, (n, 2)) * size
    angs = rng.uniform(0, 2 * np.pi, n)
    lengths = rng.uniform(0.15, 0.6, n) * size
    bends = rng.uniform(-0.2, 0.2, n) * lengths
    hsv = np.stack([rng.uniform(28, 62, n), rng.uniform(90, 210, n), rng.uniform(70, 190, n)], 1)
    cols = cv2.cvtColor(hsv.astype(np.uint8)[None], cv2.COLOR_HSV2RGB)[0].astype(float).tolist() if n else []
    thick = np.maximum(1, np.round(rng.uniform(1, 4, n) * s)).astype(int).tolist()
    dirs = np.stack([np.cos(angs), np.sin(angs)], 1)
    normals = np.stack([-dirs[:, 1], dirs[:, 0]], 1)
    mids = starts + 0.5 * lengths[:, None] * dirs + bends[:, None] * normals
    ends = starts + lengths[:, None] * dirs
    blades = np.round(np.stack([starts, mids, ends], 1) * _ONE).astype(np.int32)
    for blade, col, t in zip(blades, cols, thick):
        cv2.polylines(canvas, [blade], False, col, t, _AA, _SHIFT)
    for _ in range(int(rng.integers(1, 7))):  # other leaves, partly off frame
        poly, _ = _leaf_outline(rng, rng.uniform(-0.15, 1.15, 2) * size, rng.uniform(0.25, 0.7) * size)
        col = _hsv_rgb(rng.uniform(30, 65), rng.uniform(80, 220), rng.uniform(50, 170))
        cv2.fillPoly(canvas, [poly], col, _AA, _SHIFT)
    if rng.random() < 0.3:  # fingers of a hand holding the leaf, from one edge
        skin = _jitter(rng, ((224, 172, 140), (190, 135, 100), (140, 95, 70))[rng.integers(3)], 15)
        side = rng.uniform(0, 2 * np.pi)
        px, py = size / 2 + 0.62 * size * math.cos(side), size / 2 + 0.62 * size * math.sin(side)
        fw = rng.uniform(0.035, 0.055) * size
        for f in range(int(rng.integers(2, 5))):
            off = (f - 1.5) * 2.1 * fw
            fx, fy = px - off * math.sin(side), py + off * math.cos(side)
            cv2.ellipse(canvas, (_fx(fx), _fx(fy)), (_fx(rng.uniform(0.18, 0.3) * size), _fx(fw)),
                        math.degrees(side), 0, 360, _jitter(rng, skin, 8), -1, _AA, _SHIFT)
    return cv2.GaussianBlur(canvas, (0, 0), rng.uniform(1.2, 3.5) * s)


def _leaf_outline(rng: np.random.Generator, center: Sequence[float], length: float,
                  ) -> tuple[np.ndarray, dict[str, float]]:
    """An ovate leaf outline (fixed-point polygon) and its pose: base at u=0, tip at u=1."""
    width = length * rng.uniform(0.2, 0.32)
    q = rng.uniform(0.65, 1.25)  # where along the midrib the leaf is widest
    p = rng.uniform(0.55, 0.95)  # roundness
    asym = rng.uniform(0.88, 1.0)
    angle = rng.uniform(0, 2 * np.pi)
    t = np.linspace(0, 1, 34)
    half = width * np.sin(np.pi * t**q) ** p
    wobble = 1.0 + 0.03 * np.sin(t * rng.uniform(8, 20) + rng.uniform(0, 6))
    upper = np.stack([(t - 0.5) * length, half * wobble], 1)
    lower = np.stack([(t - 0.5) * length, -half * asym * wobble], 1)[::-1]
    local = np.concatenate([upper, lower[1:-1]], 0)
    ca, sa = math.cos(angle), math.sin(angle)
    world = local @ np.array([[ca, sa], [-sa, ca]]) + np.asarray(center, np.float64)
    pose = {"cx": float(center[0]), "cy": float(center[1]), "length": length, "width": width,
            "angle": angle, "q": q, "p": p}
    return np.round(world * _ONE).astype(np.int32), pose


@dataclass
class _Leaf:
    rgb: np.ndarray  # HxWx3 uint8 leaf appearance (valid where alpha > 0)
    alpha: np.ndarray  # HxW float32 0..1 coverage
    dist: np.ndarray  # HxW float32 distance to the leaf edge (0 outside)
    shadow: np.ndarray  # HxW float32 0..1 drop-shadow strength on the background


class SceneLayout(NamedTuple):
    """Where the main leaf sits and how much of the photo its lesions cover, as shares of the photo's side / area."""

    spread: float  # largest offset of the leaf's centre from the photo's centre
    lengths: tuple[float, float]  # range of the leaf's length
    lesion_cover: tuple[float, float]  # range of the share of the photo all lesion regions' squares cover
    smallest_radius: float  # no lesion region's radius is smaller


#: "centred" is a leaf held up to the camera; "field" a leaf photographed where it grows: smaller and anywhere in the
#: frame, so the photo's centre is often background or another leaf, with smaller lesions against more background.
LEAF_LAYOUTS: dict[str, SceneLayout] = {"centred": SceneLayout(0.1, (0.7, 0.92), (0.07, 0.2), 0.06),
                                        "field": SceneLayout(0.22, (0.5, 0.75), (0.02, 0.06), 0.035)}


def _leaf(rng: np.random.Generator, size: int, layout: str = "centred") -> _Leaf:
    """The main leaf: ovate outline, varied green, midrib and lateral veins, a fold shading, petiole."""
    spread, lengths = LEAF_LAYOUTS[layout].spread, LEAF_LAYOUTS[layout].lengths
    center = size / 2 + rng.uniform(-spread, spread, 2) * size
    poly, pose = _leaf_outline(rng, center, rng.uniform(*lengths) * size)
    s = size / 384.0
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [poly], 255, _AA, _SHIFT)
    length, width, angle = pose["length"], pose["width"], pose["angle"]
    ca, sa = math.cos(angle), math.sin(angle)

    def at(u: float, v: float) -> tuple[int, int]:  # leaf coords (u along the midrib 0..1, v across) -> fixed point
        x, y = (u - 0.5) * length, v
        return _fx(pose["cx"] + x * ca - y * sa), _fx(pose["cy"] + x * sa + y * ca)

    hue, sat, val = rng.uniform(36, 58), rng.uniform(110, 205), rng.uniform(105, 180)
    green = _hsv_rgb(hue, sat, val)
    vein_col = _hsv_rgb(hue - 4, sat * 0.6, min(255.0, val * 1.3))
    veins = np.zeros((size, size), np.uint8)  # vein opacity; the petiole is opaque
    vein_v = int(round(255 * rng.uniform(0.35, 0.6)))
    cv2.line(veins, at(0.0, 0.0), at(1.0, 0.0), vein_v, max(1, int(round(3 * s))), _AA, _SHIFT)
    n_lat = int(rng.integers(5, 10))
    slope = rng.uniform(0.5, 1.0)  # lateral veins lean towards the tip
    for u in np.linspace(0.1, 0.85, n_lat) + rng.uniform(-0.02, 0.02, n_lat):
        reach = width * math.sin(math.pi * u ** pose["q"]) ** pose["p"] * 0.95
        for side in (-1.0, 1.0):
            pts = [at(u, 0.0), at(u + 0.5 * slope * reach / length, side * 0.55 * reach),
                   at(u + 1.15 * slope * reach / length, side * reach)]
            cv2.polylines(veins, [np.array(pts, np.int32)], False, vein_v, max(1, int(round(1.4 * s))),
                          _AA, _SHIFT)
    dist = cv2.distanceTransform(cv2.threshold(mask, 127, 1, cv2.THRESH_BINARY)[1], cv2.DIST_L2, 3)
    stem_from, stem_to = at(0.0, 0.0), at(-rng.uniform(0.08, 0.16), rng.uniform(-0.03, 0.03) * length)
    stem_w = max(2, int(round(5 * s)))
    cv2.line(veins, stem_from, stem_to, 255, stem_w, _AA, _SHIFT)
    cv2.line(mask, stem_from, stem_to, 255, stem_w, _AA, _SHIFT)
    k = 3.0 / max(width, 1.0)  # fold: one half of the blade a little brighter than the other
    ramp = np.arange(size, dtype=np.float32)
    across = np.add.outer((ramp - pose["cy"]) * (ca * k), (ramp - pose["cx"]) * (-sa * k))
    np.clip(across, -1.0, 1.0, out=across)
    fold = rng.uniform(0.04, 0.12) * rng.choice([-1.0, 1.0])
    shade = cv2.addWeighted(across, fold, _noise(rng, size, size, rng.uniform(6, 14), octaves=2), 0.07, 1.0)
    vein_a = _soft(veins, 0.5 * s)
    shade *= 1.0 - vein_a
    rgb = cv2.merge([cv2.addWeighted(shade, g, vein_a, v, 0.0, dtype=cv2.CV_8U) for g, v in zip(green, vein_col)])
    alpha = _soft(mask, 0.6 * s)
    off = np.round(rng.uniform(3, 9, 2) * s).astype(int)
    shifted = np.zeros_like(mask)
    shifted[off[1]:, off[0]:] = mask[: size - off[1], : size - off[0]]
    box = max(3, int(round(7 * s)) | 1)
    shadow = _soft(cv2.blur(cv2.blur(shifted, (box, box)), (box, box)), 0) * rng.uniform(0.3, 0.5)
    return _Leaf(rgb, alpha, dist, shadow)


def _composite_leaf(background: np.ndarray, leaf: _Leaf) -> np.ndarray:
    """Background darkened by the leaf's drop shadow, the leaf over it (uint8)."""
    dark = np.zeros_like(background)
    img = cv2.blendLinear(background, dark, 1.0 - leaf.shadow, leaf.shadow)
    return cv2.blendLinear(img, leaf.rgb, 1.0 - leaf.alpha, leaf.alpha)


def _finish_params(rng: np.random.Generator, size: int) -> dict[str, float]:
    """Lighting, white balance, sensor noise and blur, drawn up front so the scene stream is fixed."""
    ang = rng.uniform(0, 2 * np.pi)
    gain = rng.uniform(0.9, 1.1, 3) * rng.uniform(0.85, 1.12)
    return {
        "grad": rng.uniform(-0.35, 0.35), "dx": math.cos(ang), "dy": math.sin(ang),
        "r": gain[0], "g": gain[1], "b": gain[2],
        "noise": rng.uniform(2.0, 6.0), "blur": rng.uniform(0.3, 0.8) * size / 384.0,
        "noise_seed": float(rng.integers(2**52)),
    }


def _finish(img: np.ndarray, prm: dict[str, float]) -> np.ndarray:
    """Lighting gradient and white balance, uniform sensor noise, slight lens blur (uint8 in/out)."""
    size = img.shape[0]
    ramp = np.linspace(-0.5, 0.5, size, dtype=np.float32) * prm["grad"]
    light = np.add.outer(ramp * prm["dy"], ramp * prm["dx"]) + 1.0
    light3 = cv2.merge([_to_u8(light, 128.0 * prm[c]) for c in ("r", "g", "b")])
    img = cv2.multiply(img, light3, scale=1.0 / 128.0)
    grain = np.random.default_rng(int(prm["noise_seed"])).integers(0, 256, img.shape, dtype=np.uint8)
    k = prm["noise"] / 73.9  # std of uniform 0..255 noise
    img = cv2.addWeighted(img, 1.0, grain, k, -127.5 * k)
    return cv2.GaussianBlur(img, (0, 0), prm["blur"])


# ----------------------------------------------------------------------------------------------
# class-neutral marks and lesion regions


def _leaf_point(rng: np.random.Generator, dist: np.ndarray, min_dist: float) -> tuple[float, float]:
    """A random pixel at least ``min_dist`` inside the leaf (the deepest candidate if none is that deep)."""
    size = dist.shape[0]
    pts = rng.uniform(0, size, (64, 2))
    depth = dist[pts[:, 1].astype(np.intp), pts[:, 0].astype(np.intp)]
    ok = np.flatnonzero(depth >= min_dist)
    j = int(ok[0]) if len(ok) else int(np.argmax(depth))
    if depth[j] <= 0:  # no candidate on the leaf at all: fall back to its deepest point
        y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
        return float(x) + 0.5, float(y) + 0.5
    return float(pts[j, 0]), float(pts[j, 1])


def _distractors(rng: np.random.Generator, img: np.ndarray, background: np.ndarray, leaf: _Leaf,
                 size: int) -> None:
    """Marks every class carries at one rate: shadow, dew, insect hole, dirt speck (in place, uint8)."""
    s = size / 384.0
    for _ in range(min(4, int(rng.poisson(1.3)))):
        kind = int(rng.integers(4))
        x, y = _leaf_point(rng, leaf.dist, 6 * s)
        x0, y0, x1, y1 = _square(x, y, 0.16 * size, size)
        roi = img[y0:y1, x0:x1].astype(np.float32)
        canvas = np.zeros(roi.shape[:2], np.uint8)
        cx, cy = _fx(x - x0), _fx(y - y0)
        if kind == 0:  # soft shadow of something above the leaf
            axes = rng.uniform(0.04, 0.12, 2) * size
            cv2.ellipse(canvas, (cx, cy), (_fx(axes[0]), _fx(axes[1])), rng.uniform(0, 180), 0, 360,
                        255, -1, _AA, _SHIFT)
            roi *= 1.0 - (_soft(canvas, 0.25 * float(axes.min())) * rng.uniform(0.25, 0.45))[..., None]
        elif kind == 1:  # dew drops: small crisp highlights
            for _ in range(int(rng.integers(1, 5))):
                dx, dy = rng.normal(0, 10 * s, 2)
                cv2.circle(canvas, (cx + _fx(dx), cy + _fx(dy)), _fx(rng.uniform(1.0, 3.0) * s), 255, -1, _AA, _SHIFT)
            leaf_a = leaf.alpha[y0:y1, x0:x1]
            _blend(roi, _soft(canvas, 0.6 * s) * rng.uniform(0.6, 0.85) * leaf_a, (245, 248, 240))
        elif kind == 2:  # insect hole: the background shows through, thin brown rim
            poly = _blob_polygon(rng, x - x0, y - y0, rng.uniform(0.012, 0.03) * size, 0.5, 12)
            cv2.polylines(canvas, [poly], True, 255, max(1, int(round(2 * s))), _AA, _SHIFT)
            _blend(roi, _soft(canvas, 0.4 * s) * 0.8, (92, 70, 40))
            hole = np.zeros_like(canvas)
            cv2.fillPoly(hole, [poly], 255, _AA, _SHIFT)
            _blend(roi, _soft(hole, 0.4 * s), background[y0:y1, x0:x1].astype(np.float32))
        else:  # a single dirt speck, no halo
            r = rng.uniform(0.006, 0.014) * size
            cv2.ellipse(canvas, (cx, cy), (_fx(r), _fx(r * rng.uniform(0.6, 1.0))), rng.uniform(0, 180),
                        0, 360, 255, -1, _AA, _SHIFT)
            _blend(roi, _soft(canvas, 0.5 * s) * 0.9, _jitter(rng, (70, 52, 36), 12))
        img[y0:y1, x0:x1] = _to_u8(roi)


# Colour-card patches (sRGB of the classic 24-patch chart): skin, foliage, orange, brown and yellow tones
# that look like leaves and lesions to a class map.
_CARD_COLOURS = (
    (115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177), (103, 189, 170),
    (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108), (157, 188, 64), (224, 163, 46),
    (56, 61, 150), (70, 148, 73), (175, 54, 60), (231, 199, 31), (187, 86, 149), (8, 133, 161),
    (243, 243, 242), (200, 200, 200), (160, 160, 160), (122, 122, 121), (85, 85, 85), (52, 52, 52),
)


def _clutter(rng: np.random.Generator, background: np.ndarray, leaf: _Leaf, size: int) -> None:
    """A colour card and a hand on the background, in place (uint8), where the leaf leaves room."""
    free = leaf.alpha < 0.05
    _colour_card(rng, background, free, size)
    _hand(rng, background, size)


def _free_point(rng: np.random.Generator, free: np.ndarray, size: int) -> tuple[float, float]:
    """A point off the leaf (the leaf covers it later anyway), far from the centre when possible."""
    for _ in range(32):
        x, y = rng.uniform(0.1, 0.9, 2) * size
        if free[int(y), int(x)]:
            return x, y
    return x, y


def _colour_card(rng: np.random.Generator, img: np.ndarray, free: np.ndarray, size: int) -> None:
    cols, rows = 6, 4
    cell = rng.uniform(0.04, 0.065) * size
    cx, cy = _free_point(rng, free, size)
    angle = rng.uniform(-25, 25)
    rot = cv2.getRotationMatrix2D((0.0, 0.0), angle, 1.0)[:, :2]
    border = 0.35 * cell

    def corners(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        pts = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]]) - [cols * cell / 2, rows * cell / 2]
        return np.round((pts @ rot.T + [cx, cy]) * _ONE).astype(np.int32)

    frame = _jitter(rng, (28, 28, 30), 6)
    cv2.fillPoly(img, [corners(-border, -border, cols * cell + border, rows * cell + border)], frame, _AA, _SHIFT)
    gap = 0.08 * cell
    for i, colour in enumerate(_CARD_COLOURS):
        r, c = divmod(i, cols)
        cv2.fillPoly(img, [corners(c * cell + gap, r * cell + gap, (c + 1) * cell - gap, (r + 1) * cell - gap)],
                     _jitter(rng, colour, 6), _AA, _SHIFT)


def _hand(rng: np.random.Generator, img: np.ndarray, size: int) -> None:
    """A palm and four fingers reaching in from one edge, as when a hand holds the leaf."""
    skin = _jitter(rng, ((224, 172, 140), (190, 135, 100), (140, 95, 70), (96, 62, 45))[rng.integers(4)], 12)
    side = rng.uniform(0, 2 * np.pi)
    dx, dy = math.cos(side), math.sin(side)
    px, py = size / 2 + 0.55 * size * dx, size / 2 + 0.55 * size * dy
    palm = rng.uniform(0.13, 0.2) * size
    cv2.ellipse(img, (_fx(px), _fx(py)), (_fx(palm), _fx(0.8 * palm)), math.degrees(side), 0, 360, skin, -1, _AA, _SHIFT)
    fw = rng.uniform(0.03, 0.045) * size
    for f in range(4):
        off = (f - 1.5) * 2.2 * fw
        fx, fy = px - palm * dx - off * dy, py - palm * dy + off * dx
        length = rng.uniform(0.09, 0.14) * size
        cv2.ellipse(img, (_fx(fx), _fx(fy)), (_fx(length), _fx(fw)), math.degrees(side), 0, 360,
                    _jitter(rng, skin, 6), -1, _AA, _SHIFT)


def _sample_regions(rng: np.random.Generator, leaf: _Leaf, size: int,
                    layout: str = "centred") -> list[tuple[float, float, float]]:
    """1-3 lesion regions (centre, radius) on the leaf, their squares covering the layout's share of the image
    (:data:`LEAF_LAYOUTS`: ~7-20% centred, ~2-6% in the field).

    Sampled for every class with no knowledge of the label, so masking them is label-neutral.
    """
    n = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    total = rng.uniform(*LEAF_LAYOUTS[layout].lesion_cover)
    share = rng.dirichlet(np.full(n, 3.0))
    smallest = LEAF_LAYOUTS[layout].smallest_radius
    regions: list[tuple[float, float, float]] = []
    for f in share:
        r = float(np.clip(math.sqrt(total * f) * size / 2, smallest * size, 0.17 * size))
        best, best_gap = (0.0, 0.0), -np.inf
        for _ in range(12):  # keep clusters apart when the leaf has room
            x, y = _leaf_point(rng, leaf.dist, 0.45 * r)
            gap = min((math.hypot(x - px, y - py) - 0.8 * (r + pr) for px, py, pr in regions), default=0.0)
            if gap > best_gap:
                best, best_gap = (x, y), gap
            if gap >= 0:
                break
        regions.append((best[0], best[1], r))
    return regions
