"""Tests for the procedural leaf-disease generator (agripatch.data.synth)."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from agripatch.data.synth import (
    CLASS_NAMES,
    MARKER_NAME,
    BoxRow,
    class_names,
    generate_synthetic,
    render_sample,
)
from agripatch.errors import DatasetError

SMALL = 128  # statistical tests render in memory at this size: fast, and the class must survive it
PER_CLASS = 24


def _jpgs(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


def _read_csv(path: Path) -> list[BoxRow]:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "label", "x0", "y0", "x1", "y1"]
    return [BoxRow(r[0], r[1], *map(int, r[2:])) for r in rows[1:]]


@pytest.fixture(scope="module")
def samples() -> dict[int, list]:
    """PER_CLASS in-memory renders per class at SMALL px (shared by the statistical tests)."""
    return {k: [render_sample(k, i, size=SMALL, seed=0) for i in range(PER_CLASS)] for k in range(len(CLASS_NAMES))}


def _union(boxes, size: int, grow: int = 0) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    for x0, y0, x1, y1 in boxes:
        mask[max(0, y0 - grow):y1 + grow, max(0, x0 - grow):x1 + grow] = True
    return mask


def _cv_accuracy(features: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    folds = StratifiedKFold(n_splits=4, shuffle=True, random_state=0)
    return float(cross_val_score(model, features, labels, cv=folds).mean())


# ------------------------------------------------------------------------------------------ API


def test_class_names_order_and_range():
    assert CLASS_NAMES[:4] == ("healthy", "leaf_spot", "rust", "blight")
    assert class_names(2) == ("healthy", "leaf_spot")
    assert class_names(6) == CLASS_NAMES
    for bad in (1, 7, 0, True, 3.0):
        with pytest.raises(ValueError, match="classes"):
            class_names(bad)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"classes": 1}, "classes"),
        ({"classes": 7}, "classes"),
        ({"per_class": 0}, "per_class"),
        ({"size": 95}, "size"),
        ({"size": 128.0}, "size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_generate_rejects_bad_arguments(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        generate_synthetic(tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()  # validated before anything is written


def test_generate_layout_and_cardinality(tmp_path):
    calls: list[tuple[int, int]] = []
    out = tmp_path / "synth"
    result = generate_synthetic(
        out, classes=3, per_class=3, size=96, seed=1, progress=lambda done, total: calls.append((done, total))
    )
    expected = [f"{c}/{c}_{i:04d}.jpg" for c in ("healthy", "leaf_spot", "rust") for i in range(3)]
    assert _jpgs(out) == sorted(expected)
    assert result.out == out and result.classes == ("healthy", "leaf_spot", "rust") and result.num_images == 9
    assert calls == [(i, 9) for i in range(1, 10)]
    img = cv2.imread(str(out / "rust" / "rust_0002.jpg"))
    assert img.shape == (96, 96, 3)
    rows = _read_csv(out / "boxes.csv")
    assert rows == result.boxes
    assert {r.label for r in rows} == {"leaf_spot", "rust"}  # healthy images carry no boxes
    assert all(r.path.startswith(f"{r.label}/{r.label}_") and (out / r.path).is_file() for r in rows)
    per_image: dict[str, int] = {}
    for r in rows:
        per_image[r.path] = per_image.get(r.path, 0) + 1
    assert len(per_image) == 6 and all(1 <= n <= 3 for n in per_image.values())


def test_files_are_the_rendered_samples(tmp_path):
    result = generate_synthetic(tmp_path, classes=2, per_class=2, size=96, seed=3)
    for k, name in enumerate(result.classes):
        for i in range(2):
            sample = render_sample(k, i, size=96, seed=3)
            bgr = cv2.cvtColor(sample.image, cv2.COLOR_RGB2BGR)
            ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 92])
            assert ok and (tmp_path / name / f"{name}_{i:04d}.jpg").read_bytes() == jpeg.tobytes()
            assert [tuple(r[2:]) for r in result.boxes if r.path == f"{name}/{name}_{i:04d}.jpg"] == sample.boxes


# ----------------------------------------------------------------------------------- determinism


def test_same_seed_same_bytes_and_prefix_property(tmp_path):
    a = generate_synthetic(tmp_path / "a", classes=3, per_class=3, size=96, seed=7)
    b = generate_synthetic(tmp_path / "b", classes=3, per_class=3, size=96, seed=7)
    short = generate_synthetic(tmp_path / "short", classes=2, per_class=2, size=96, seed=7)
    other = generate_synthetic(tmp_path / "other", classes=2, per_class=2, size=96, seed=8)
    for rel in _jpgs(tmp_path / "a"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()
    assert (tmp_path / "a" / "boxes.csv").read_bytes() == (tmp_path / "b" / "boxes.csv").read_bytes()
    assert a.boxes == b.boxes
    for rel in _jpgs(tmp_path / "short"):  # image i does not depend on per_class or classes
        assert (tmp_path / "short" / rel).read_bytes() == (tmp_path / "a" / rel).read_bytes()
        assert (tmp_path / "other" / rel).read_bytes() != (tmp_path / "a" / rel).read_bytes()
    assert short.boxes == [r for r in a.boxes if int(r.path[-8:-4]) < 2 and r.label in short.classes]
    assert other.boxes != short.boxes


def test_rerun_overwrites_own_output_and_drops_stale_images(tmp_path):
    generate_synthetic(tmp_path, classes=3, per_class=3, size=96)
    (tmp_path / "notes.txt").write_text("mine")
    result = generate_synthetic(tmp_path, classes=2, per_class=2, size=96)
    assert _jpgs(tmp_path) == sorted(f"{c}/{c}_{i:04d}.jpg" for c in ("healthy", "leaf_spot") for i in range(2))
    assert not (tmp_path / "rust").exists()
    assert (tmp_path / "notes.txt").read_text() == "mine"  # files it did not write are left alone
    assert _read_csv(tmp_path / "boxes.csv") == result.boxes


def test_refuses_foreign_or_non_folder_output(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "IMG_0001.jpg").write_bytes(b"not mine")
    with pytest.raises(DatasetError, match="non-empty"):
        generate_synthetic(tmp_path / "photos", per_class=1, size=96)
    assert sorted(p.name for p in (tmp_path / "photos").iterdir()) == ["IMG_0001.jpg"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="not a folder"):
        generate_synthetic(tmp_path / "file", per_class=1, size=96)
    (tmp_path / "empty").mkdir()
    generate_synthetic(tmp_path / "empty", classes=2, per_class=1, size=96)
    assert (tmp_path / "empty" / MARKER_NAME).is_file()


# --------------------------------------------------------------------------------- image content


def test_boxes_lie_in_the_image_on_the_leaf_inside_their_regions(samples):
    for k, group in samples.items():
        for s in group:
            assert s.image.shape == (SMALL, SMALL, 3) and s.image.dtype == np.uint8
            assert s.leaf_mask.shape == (SMALL, SMALL) and s.label == CLASS_NAMES[k]
            assert 1 <= len(s.regions) <= 3
            if k == 0:
                assert s.boxes == []
                continue
            assert 1 <= len(s.boxes) <= 3
            for x0, y0, x1, y1 in s.boxes:
                assert 0 <= x0 < x1 <= SMALL and 0 <= y0 < y1 <= SMALL
                assert any(rx0 <= x0 and ry0 <= y0 and x1 <= rx1 and y1 <= ry1 for rx0, ry0, rx1, ry1 in s.regions)
                assert s.leaf_mask[(y0 + y1) // 2, (x0 + x1) // 2]
                assert s.leaf_mask[y0:y1, x0:x1].mean() > 0.5


def test_lesion_mask_is_what_the_boxes_enclose(samples):
    """The pixel mask (a symptom map's training target) holds the pixels each tight box was drawn around: inside
    the boxes, every box touched on all four sides, nothing for healthy leaves; its coding is 0 / 1 / 2."""
    for k, group in samples.items():
        for s in group:
            mask = s.symptom_mask()
            assert set(np.unique(mask)) <= {0, 1, 2} and np.array_equal(mask >= 1, s.leaf_mask | (mask == 2))
            if k == 0:
                assert not s.lesion_mask.any() and not (mask == 2).any()
                continue
            inside = np.zeros_like(s.lesion_mask)
            for x0, y0, x1, y1 in s.boxes:
                inside[y0:y1, x0:x1] = True
                box = s.lesion_mask[y0:y1, x0:x1]
                assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            assert not (s.lesion_mask & ~inside).any()


def test_lesion_area_fraction(samples):
    fractions = np.array([
        sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in s.boxes) / SMALL**2
        for k, group in samples.items() if k > 0 for s in group
    ])
    assert fractions.min() > 0.015 and fractions.max() < 0.25
    assert np.mean((fractions >= 0.03) & (fractions <= 0.15)) > 0.9
    assert 0.04 < np.median(fractions) < 0.12


def test_lesions_change_only_their_boxes_and_are_visible_at_one_third(samples):
    size = 384
    for k in range(1, len(CLASS_NAMES)):
        for i in range(2):
            s = render_sample(k, i, size=size)
            bare = render_sample(k, i, size=size, lesions=False)
            assert bare.boxes == [] and bare.regions == s.regions
            diff = np.abs(s.image.astype(np.int16) - bare.image).max(axis=2)
            assert diff[~_union(s.regions, size, grow=3)].max() == 0  # same scene, untouched outside regions
            assert diff[~_union(s.boxes, size, grow=3)].max() <= 40  # only faint halo tails outside the boxes
            small = np.abs(cv2.resize(s.image, (128, 128), interpolation=cv2.INTER_AREA).astype(np.int16)
                           - cv2.resize(bare.image, (128, 128), interpolation=cv2.INTER_AREA)).mean(axis=2)
            for x0, y0, x1, y1 in s.boxes:
                assert small[y0 // 3:-(-y1 // 3), x0 // 3:-(-x1 // 3)].mean() > 6.0, (CLASS_NAMES[k], i)


def test_scene_does_not_read_the_label():
    """Same random streams, any class: with lesions left out the pixels are identical, so background,
    leaf, marks and regions have one distribution for every label (streams are iid across keys)."""
    from agripatch.data.synth import _render

    for key in [(0, 3, 5), (2, 1, 0)]:
        healthy = _render(key, 0, SMALL, label="healthy")
        for paint in range(1, len(CLASS_NAMES)):
            bare = _render(key, 0, SMALL, label=CLASS_NAMES[paint])
            assert np.array_equal(bare.image, healthy.image) and bare.regions == healthy.regions
            sick = _render(key, paint, SMALL, label=CLASS_NAMES[paint])
            assert not np.array_equal(sick.image, healthy.image) and sick.regions == healthy.regions
            assert np.array_equal(sick.image[~_union(sick.regions, SMALL, grow=2)],
                                  healthy.image[~_union(sick.regions, SMALL, grow=2)])


def test_global_colour_statistics_do_not_reveal_the_class(samples):
    outside, inside, labels, lesion_labels = [], [], [], []
    for k, group in samples.items():
        for s in group:
            keep = ~_union(s.regions, SMALL, grow=2)  # regions are drawn alike for every class, healthy too
            px = s.image[keep].astype(np.float64)
            outside.append(np.concatenate([px.mean(0), px.std(0)]))
            labels.append(k)
            if k:
                q = s.image[_union(s.boxes, SMALL)].astype(np.float64)
                inside.append(np.concatenate([q.mean(0), q.std(0)]))
                lesion_labels.append(k)
    chance = 1 / len(CLASS_NAMES)
    assert _cv_accuracy(np.array(outside), np.array(labels)) < chance + 0.12
    assert _cv_accuracy(np.array(inside), np.array(lesion_labels)) > 0.7  # the lesions themselves separate


# --------------------------------------------------------------------------------- field layout


def _leaf_centre_offset(s) -> float:
    """Distance of the leaf's centre of mass from the photo's centre, as a share of the side."""
    ys, xs = np.nonzero(s.leaf_mask)
    size = s.leaf_mask.shape[0]
    return float(np.hypot(xs.mean() - size / 2, ys.mean() - size / 2) / size)


def test_field_layout_moves_the_leaf_off_centre_and_shrinks_leaf_and_lesions():
    """Field scenes: a smaller leaf, further from the centre, smaller lesions; same kind of scene otherwise."""
    centred = [render_sample(k, i, size=SMALL, seed=0, distractors=True) for k in (1, 2) for i in range(16)]
    field = [render_sample(k, i, size=SMALL, seed=0, distractors=True, layout="field") for k in (1, 2) for i in range(16)]
    def mean_of(group, measure) -> float:
        return float(np.mean([measure(s) for s in group]))

    assert mean_of(field, _leaf_centre_offset) > 1.5 * mean_of(centred, _leaf_centre_offset)
    assert mean_of(field, lambda s: s.leaf_mask.mean()) < 0.75 * mean_of(centred, lambda s: s.leaf_mask.mean())
    assert mean_of(field, lambda s: s.lesion_mask.mean()) < 0.6 * mean_of(centred, lambda s: s.lesion_mask.mean())
    for s in field:  # lesions still sit on the main leaf, boxes inside the photo
        assert s.boxes and (s.lesion_mask & s.leaf_mask).sum() >= 0.9 * s.lesion_mask.sum() > 0
        assert all(0 <= x0 < x1 <= SMALL and 0 <= y0 < y1 <= SMALL for x0, y0, x1, y1 in s.boxes)


def test_field_layout_is_deterministic_and_recorded(tmp_path):
    a = render_sample(1, 3, size=SMALL, seed=0, layout="field")
    b = render_sample(1, 3, size=SMALL, seed=0, layout="field")
    assert np.array_equal(a.image, b.image) and a.boxes == b.boxes
    assert not np.array_equal(a.image, render_sample(1, 3, size=SMALL, seed=0).image)
    generate_synthetic(tmp_path / "out", classes=2, per_class=1, size=SMALL, layout="field")
    assert '"layout": "field"' in (tmp_path / "out" / MARKER_NAME).read_text()


def test_unknown_layout_is_refused(tmp_path):
    with pytest.raises(ValueError, match="layout must be one of centred, field"):
        render_sample(1, 0, size=SMALL, layout="studio")
    with pytest.raises(ValueError, match="layout"):
        generate_synthetic(tmp_path / "out", classes=2, per_class=1, size=SMALL, layout="studio")
    assert not (tmp_path / "out").exists()
