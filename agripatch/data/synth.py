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
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from agripatch.data.synth_lesions import _PAINTERS, _paint_cluster
from agripatch.data.synth_scene import (
    LEAF_LAYOUTS,
    Box,
    _background,
    _clutter,
    _composite_leaf,
    _distractors,
    _finish,
    _finish_params,
    _leaf,
    _sample_regions,
    _square,
)
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
    lesion_mask: np.ndarray | None = None  # HxW bool, the lesion pixels the boxes enclose (opacity >= the box rule's)

    def symptom_mask(self) -> np.ndarray:
        """HxW uint8 in the coffee lesion masks' coding: 0 background, 1 leaf, 2 symptom (a symptom map's target)."""
        mask = self.leaf_mask.astype(np.uint8)
        if self.lesion_mask is not None:
            mask[self.lesion_mask & self.leaf_mask] = 2
        return mask


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
                  lesions: bool = True, distractors: bool = False, layout: str = "centred") -> SynthSample:
    """Render image ``image_index`` of class ``CLASS_NAMES[class_index]`` in memory.

    Deterministic in ``(seed, class_index, image_index, size)``; this is exactly what
    :func:`generate_synthetic` encodes, exposed so tests and demos can skip the disk.
    ``lesions=False`` renders the very same scene with nothing painted in its regions (and no
    boxes): a paired control showing what the lesions, and only they, change. ``distractors=True``
    adds a colour card and a hand beside the leaf (their own random stream, never reading the label;
    the leaf and lesions are the same as without them): the things field photos show that a patch
    selector must not pick. ``layout="field"`` draws the leaf smaller and anywhere in the frame, with smaller
    lesions (:data:`~agripatch.data.synth_scene.LEAF_LAYOUTS`): the photo's centre is no longer a safe guess.
    """
    _check_int("class_index", class_index, 0, MAX_CLASSES - 1)
    _check_int("image_index", image_index, 0)
    _check_int("size", size, MIN_SIZE)
    _check_int("seed", seed, 0)
    _check_layout(layout)
    key = (int(seed), int(class_index), int(image_index))
    return _render(key, int(class_index) if lesions else 0, int(size), label=CLASS_NAMES[class_index],
                   distractors=distractors, layout=layout)


def _check_layout(layout: str) -> None:
    if layout not in LEAF_LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LEAF_LAYOUTS)}, got {layout!r}")


def _render(key: tuple[int, int, int], paint: int, size: int, label: str, distractors: bool = False,
            layout: str = "centred") -> SynthSample:
    """Render the scene of random ``key`` with the lesions of class ``paint`` (0: none).

    The label enters only through ``paint``, and only inside the lesion regions: rendering one key
    with ``paint=0`` gives the same bytes as the lesion-free rendering of any class.
    """
    # Spawned children depend on their index only: the fifth (clutter) stream leaves the first four as they were.
    streams = np.random.SeedSequence([*key, _FORMAT_VERSION]).spawn(5)
    scene_rng, marks_rng, regions_rng, lesion_rng, clutter_rng = (np.random.default_rng(s) for s in streams)

    background = _background(scene_rng, size)
    leaf = _leaf(scene_rng, size, layout)
    finish = _finish_params(scene_rng, size)  # drawn now: the scene stream never depends on the label
    if distractors:
        _clutter(clutter_rng, background, leaf, size)

    img = _composite_leaf(background, leaf)
    _distractors(marks_rng, img, background, leaf, size)
    regions = _sample_regions(regions_rng, leaf, size, layout)
    boxes: list[Box] = []
    lesions = np.zeros((size, size), bool)
    if paint > 0:
        painter = _PAINTERS[CLASS_NAMES[paint]]
        for cx, cy, r in regions:
            box = _paint_cluster(painter, lesion_rng, img, leaf, cx, cy, r, size, lesions)
            if box is not None:
                boxes.append(box)
    image = _finish(img, finish)
    region_boxes = [_square(cx, cy, r, size) for cx, cy, r in regions]
    return SynthSample(image, leaf.alpha > 0.5, boxes, region_boxes, label, CLASS_NAMES.index(label), lesions)


def generate_synthetic(
    out: str | Path,
    *,
    classes: int = 3,
    per_class: int = 40,
    size: int = 384,
    seed: int = 0,
    distractors: bool = False,
    layout: str = "centred",
    progress: Callable[[int, int], None] | None = None,
) -> SynthResult:
    """Write a synthetic leaf-disease dataset to ``out`` and return what was written.

    Layout: ``out/<class>/<class>_<i:04d>.jpg`` (JPEG quality 92) and ``out/boxes.csv`` with
    columns ``path,label,x0,y0,x1,y1`` (one row per lesion cluster, end-exclusive, posix paths
    relative to ``out``). ``out`` must be missing, empty, or an earlier synth output (recognised by
    its hidden marker file); a rerun overwrites it and removes images it no longer produces.
    ``distractors`` adds a colour card and a hand to every scene, ``layout="field"`` puts a smaller leaf anywhere
    in the frame (see :func:`render_sample`).
    ``progress(done, total)`` is called after each image.
    """
    names = class_names(classes)
    _check_int("per_class", per_class, 1)
    _check_int("size", size, MIN_SIZE)
    _check_int("seed", seed, 0)
    _check_layout(layout)
    root = Path(out)
    _claim_output(root)
    atomic_write_text(
        root / MARKER_NAME,
        json.dumps(
            {"generator": "agripatch.data.synth", "version": _FORMAT_VERSION, "classes": list(names),
             "per_class": int(per_class), "size": int(size), "seed": int(seed), "distractors": bool(distractors),
             "layout": layout},
            indent=2,
        ) + "\n",
    )
    total = len(names) * int(per_class)
    rows: list[BoxRow] = []
    written: set[Path] = set()
    done = 0
    for k, name in enumerate(names):
        for i in range(int(per_class)):
            sample = render_sample(k, i, size=int(size), seed=int(seed), distractors=distractors, layout=layout)
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
