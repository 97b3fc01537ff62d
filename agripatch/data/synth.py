"""Procedural leaf-disease images: a test set and demo dataset that needs no download.

Every image is a cluttered field scene (soil, pebbles, blurred grass and leaves, sometimes a hand)
with one main leaf. Diseased images carry 1-3 lesion clusters on that leaf, and ``boxes.csv``
lists a tight box per cluster, so both the glance classifier and the box scorer can be trained.

The class is decidable only from the lesions. Four independent random streams per image keep it so:

* ``scene``: background, leaf shape/hue/pose, lighting, noise and blur;
* ``marks``: class-neutral distractors (shadow, dew, insect hole, dirt speck) at one rate for all;
* ``regions``: where the lesion clusters are, or for a healthy leaf would be, and how large;
* ``lesions``: the class-specific drawing inside those regions.

None of the first three reads the label, so everything outside the lesion regions has one
distribution for every class. Each image is seeded from ``(seed, class index, image index)``
alone: image ``i`` is the same whatever ``per_class`` or ``classes`` is asked for.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from agripatch.errors import DatasetError
from agripatch.io.atomic import atomic_write_bytes, atomic_write_text

__all__ = [
    "CLASS_NAMES",
    "MARKER_NAME",
    "BoxRow",
    "SynthResult",
    "SynthSample",
    "class_names",
    "generate_synthetic",
    "render_sample",
]

CLASS_NAMES: tuple[str, ...] = ("healthy", "leaf_spot", "rust", "blight", "powdery_mildew", "mosaic")
MIN_CLASSES, MAX_CLASSES = 2, len(CLASS_NAMES)
MIN_SIZE = 96
JPEG_QUALITY = 92
MARKER_NAME = ".agripatch_synth.json"
_FORMAT_VERSION = 1
_BOX_ALPHA = 0.15  # a lesion pixel belongs to its cluster's box from this opacity on

Box = tuple[int, int, int, int]
Rgb = tuple[float, float, float]


class BoxRow(NamedTuple):
    """One row of ``boxes.csv``: a lesion cluster, end-exclusive pixel box, path relative to OUT."""

    path: str
    label: str
    x0: int
    y0: int
    x1: int
    y1: int


@dataclass(frozen=True)
class SynthResult:
    """What :func:`generate_synthetic` wrote: the folder, class names, image count and all box rows."""

    out: Path
    classes: tuple[str, ...]
    num_images: int
    boxes: list[BoxRow]


@dataclass(frozen=True)
class SynthSample:
    """One rendered image before encoding.

    ``boxes`` are the drawn lesion clusters (empty for healthy). ``regions`` are the squares the
    clusters were drawn in, sampled the same way for every class (healthy too), so masking them is
    label-neutral; each box lies inside its region.
    """

    image: np.ndarray  # HxWx3 uint8 RGB
    leaf_mask: np.ndarray  # HxW bool, the main leaf
    boxes: list[Box]
    regions: list[Box]
    label: str
    class_index: int


# ----------------------------------------------------------------------------------------------
# public API


def class_names(classes: int) -> tuple[str, ...]:
    """The first ``classes`` names of :data:`CLASS_NAMES`; ValueError outside 2..6."""
    if isinstance(classes, bool) or not isinstance(classes, (int, np.integer)):
        raise ValueError(f"classes must be an integer in {MIN_CLASSES}..{MAX_CLASSES}, got {classes!r}")
    if not MIN_CLASSES <= classes <= MAX_CLASSES:
        raise ValueError(
            f"classes must be in {MIN_CLASSES}..{MAX_CLASSES} ({', '.join(CLASS_NAMES)}), got {classes}"
        )
    return CLASS_NAMES[: int(classes)]


def render_sample(class_index: int, image_index: int, *, size: int = 384, seed: int = 0,
                  lesions: bool = True, distractors: bool = False) -> SynthSample:
    """Render image ``image_index`` of class ``CLASS_NAMES[class_index]`` in memory.

    Deterministic in ``(seed, class_index, image_index, size)``; this is exactly what
    :func:`generate_synthetic` encodes, exposed so tests and demos can skip the disk.
    ``lesions=False`` renders the very same scene with nothing painted in its regions (and no
    boxes): a paired control showing what the lesions, and only they, change. ``distractors=True``
    adds a colour card and a hand beside the leaf (their own random stream, never reading the label;
    the leaf and lesions are the same as without them): the things field photos show that a patch
    selector must not pick.
    """
    _check_int("class_index", class_index, 0, MAX_CLASSES - 1)
    _check_int("image_index", image_index, 0)
    _check_int("size", size, MIN_SIZE)
    _check_int("seed", seed, 0)
    key = (int(seed), int(class_index), int(image_index))
    return _render(key, int(class_index) if lesions else 0, int(size), label=CLASS_NAMES[class_index],
                   distractors=distractors)


def _render(key: tuple[int, int, int], paint: int, size: int, label: str, distractors: bool = False) -> SynthSample:
    """Render the scene of random ``key`` with the lesions of class ``paint`` (0: none).

    The label enters only through ``paint``, and only inside the lesion regions: rendering one key
    with ``paint=0`` gives the same bytes as the lesion-free rendering of any class.
    """
    # Spawned children depend on their index only: the fifth (clutter) stream leaves the first four as they were.
    streams = np.random.SeedSequence([*key, _FORMAT_VERSION]).spawn(5)
    scene_rng, marks_rng, regions_rng, lesion_rng, clutter_rng = (np.random.default_rng(s) for s in streams)

    background = _background(scene_rng, size)
    leaf = _leaf(scene_rng, size)
    finish = _finish_params(scene_rng, size)  # drawn now: the scene stream never depends on the label
    if distractors:
        _clutter(clutter_rng, background, leaf, size)

    img = _composite_leaf(background, leaf)
    _distractors(marks_rng, img, background, leaf, size)
    regions = _sample_regions(regions_rng, leaf, size)
    boxes: list[Box] = []
    if paint > 0:
        painter = _PAINTERS[CLASS_NAMES[paint]]
        for cx, cy, r in regions:
            box = _paint_cluster(painter, lesion_rng, img, leaf, cx, cy, r, size)
            if box is not None:
                boxes.append(box)
    image = _finish(img, finish)
    region_boxes = [_square(cx, cy, r, size) for cx, cy, r in regions]
    return SynthSample(image, leaf.alpha > 0.5, boxes, region_boxes, label, CLASS_NAMES.index(label))


def generate_synthetic(
    out: str | Path,
    *,
    classes: int = 3,
    per_class: int = 40,
    size: int = 384,
    seed: int = 0,
    distractors: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Write a synthetic leaf-disease dataset to ``out`` and return what was written.

    Layout: ``out/<class>/<class>_<i:04d>.jpg`` (JPEG quality 92) and ``out/boxes.csv`` with
    columns ``path,label,x0,y0,x1,y1`` (one row per lesion cluster, end-exclusive, posix paths
    relative to ``out``). ``out`` must be missing, empty, or an earlier synth output (recognised by
    its hidden marker file); a rerun overwrites it and removes images it no longer produces.
    ``distractors`` adds a colour card and a hand to every scene (see :func:`render_sample`).
    ``progress(done, total)`` is called after each image.
    """
    names = class_names(classes)
    _check_int("per_class", per_class, 1)
    _check_int("size", size, MIN_SIZE)
    _check_int("seed", seed, 0)
    root = Path(out)
    _claim_output(root)
    atomic_write_text(
        root / MARKER_NAME,
        json.dumps(
            {"generator": "agripatch.data.synth", "version": _FORMAT_VERSION, "classes": list(names),
             "per_class": int(per_class), "size": int(size), "seed": int(seed), "distractors": bool(distractors)},
            indent=2,
        ) + "\n",
    )
    total = len(names) * int(per_class)
    rows: list[BoxRow] = []
    written: set[Path] = set()
    done = 0
    for k, name in enumerate(names):
        for i in range(int(per_class)):
            sample = render_sample(k, i, size=int(size), seed=int(seed), distractors=distractors)
            rel = f"{name}/{name}_{i:04d}.jpg"
            ok, buf = cv2.imencode(
                ".jpg", cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
            )
            if not ok:  # pragma: no cover - cv2 encodes any uint8 image
                raise DatasetError(f"could not encode {rel} as JPEG")
            atomic_write_bytes(root / rel, buf.tobytes())
            written.add(root / rel)
            rows.extend(BoxRow(rel, name, *box) for box in sample.boxes)
            done += 1
            if progress is not None:
                progress(done, total)
    _remove_stale(root, written)
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(BoxRow._fields)
    writer.writerows(rows)
    atomic_write_text(root / "boxes.csv", text.getvalue())
    return SynthResult(root, names, total, rows)


# ----------------------------------------------------------------------------------------------
# output folder handling

_OWN_FILE = re.compile(r"^(?P<cls>[a-z_]+)_\d{4}\.jpg$")


def _claim_output(root: Path) -> None:
    """Refuse a non-empty folder that is not an earlier synth output (it may hold someone's data)."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"synthetic output {str(root)!r} exists and is not a folder; pick another path")
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER_NAME).is_file():
        raise DatasetError(
            f"refusing to write synthetic images into non-empty folder {str(root)!r}: it is not an earlier "
            f"synth output (no {MARKER_NAME}); pick an empty or new folder"
        )
    root.mkdir(parents=True, exist_ok=True)


def _remove_stale(root: Path, keep: set[Path]) -> None:
    """Delete images an earlier run wrote that this run did not (smaller per_class or fewer classes)."""
    for name in CLASS_NAMES:
        folder = root / name
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            match = _OWN_FILE.match(path.name)
            if match and match["cls"] == name and path not in keep:
                path.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def _check_int(name: str, value: object, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in {low}..{high}"
        raise ValueError(f"{name} must be {bound}, got {value}")


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


def _leaf(rng: np.random.Generator, size: int) -> _Leaf:
    """The main leaf: ovate outline, varied green, midrib and lateral veins, a fold shading, petiole."""
    center = size / 2 + rng.uniform(-0.1, 0.1, 2) * size
    poly, pose = _leaf_outline(rng, center, rng.uniform(0.7, 0.92) * size)
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


def _sample_regions(rng: np.random.Generator, leaf: _Leaf, size: int) -> list[tuple[float, float, float]]:
    """1-3 lesion regions (centre, radius) on the leaf, their squares covering ~7-20% of the image.

    Sampled for every class with no knowledge of the label, so masking them is label-neutral.
    """
    n = int(rng.choice([1, 2, 3], p=[0.4, 0.35, 0.25]))
    total = rng.uniform(0.07, 0.2)
    share = rng.dirichlet(np.full(n, 3.0))
    regions: list[tuple[float, float, float]] = []
    for f in share:
        r = float(np.clip(math.sqrt(total * f) * size / 2, 0.06 * size, 0.17 * size))
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
                   cx: float, cy: float, r: float, size: int) -> Box | None:
    """Draw one cluster clipped to its region square and the leaf; return its tight box."""
    x0, y0, x1, y1 = _square(cx, cy, r, size)
    roi = img[y0:y1, x0:x1].astype(np.float32)
    leaf_a = leaf.alpha[y0:y1, x0:x1]
    covered = np.zeros(roi.shape[:2], np.float32)
    for alpha, color in painter(rng, roi, cx - x0, cy - y0, r, float(size)):
        alpha = alpha * leaf_a
        _blend(roi, alpha, color)
        np.maximum(covered, alpha, out=covered)
    img[y0:y1, x0:x1] = _to_u8(roi)
    ys, xs = np.nonzero(covered >= _BOX_ALPHA)
    if len(xs) == 0:
        return None
    return x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1, y0 + int(ys.max()) + 1
