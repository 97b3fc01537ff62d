"""Unit tests of the parts of `predict folder`: names, confined paths, logs, walking, overlays, records."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from agripatch.errors import AgripatchError
from agripatch.pipeline.cascade import PatchPrediction
from agripatch.pipeline.records import csv_row, original_boxes, photo_record, topk_of
from agripatch.pipeline.select import decode_min_side
from agripatch.predict.outputs import (
    AppendLog,
    OutputDir,
    repair_log,
    safe_label,
    safe_stem,
)
from agripatch.predict.overlays import (
    cut_crop,
    grid_region,
    heat_overlay,
    render_overlay,
    resize_longest,
)
from agripatch.predict.scan import iter_photos

# ------------------------------------------------------------------------------------------ names


@pytest.mark.parametrize("name", ["../../etc/passwd", "a/b/c.jpg", "<script>x</script>.png", "caf\u00e9 \u53f6.jpg",
                                  "tab\there\n.jpg", ".hidden", "..", "x" * 400 + ".jpg", "\u53f6" * 300 + ".jpg"])
def test_safe_stem_is_one_safe_component(name):
    stem = safe_stem(name)
    assert "/" not in stem and "\\" not in stem and ".." not in stem and not stem.startswith(".")
    assert all(ch.isalnum() or ch in "_-." for ch in stem)
    assert len(stem.encode("utf-8")) <= 90  # + ".jpg": far below the 255-byte name limit
    assert safe_stem(name) == stem  # stable across runs


def test_safe_stem_unique_when_sanitised_alike():
    names = ["a b.jpg", "a_b.jpg", "a/b.jpg", "a__b.jpg", "A b.jpg", "a b.png"]
    assert len({safe_stem(n) for n in names}) == len(names)


def test_safe_stem_keeps_readable_part():
    assert safe_stem("field 3/leaf é.jpg").startswith("field_3__leaf_é.jpg-")


@pytest.mark.parametrize("name,expected", [("rust/../x", "rust___x"), ("../../evil", "evil"), ("a\x00b", "a_b"),
                                           ("..", "class4"), ("", "class4"), ("leaf spot", "leaf_spot")])
def test_safe_label(name, expected):
    assert safe_label(name, 4) == expected


def test_undecodable_file_names_survive(tmp_path):
    raw = os.fsdecode(b"leaf_\xff.jpg")  # a name that is not UTF-8: surrogate escapes
    stem = safe_stem(raw)
    stem.encode("utf-8")  # must not raise


# ---------------------------------------------------------------------------------- output folder


def test_output_dir_refuses_escapes(tmp_path):
    out = OutputDir(tmp_path / "out")
    assert out.path("crops/a/b.jpg") == (tmp_path / "out" / "crops" / "a" / "b.jpg").resolve()
    for bad in ["../x.jpg", "crops/../../x.jpg", "/etc/passwd"]:
        with pytest.raises(AgripatchError, match="outside the output folder"):
            out.path(bad)


def test_output_dir_refuses_symlink_escape(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "crops").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(AgripatchError, match="outside"):
        OutputDir(tmp_path / "out").path("crops/x/patch1.jpg")


def test_repair_log_drops_partial_last_line(tmp_path):
    log = tmp_path / "log.csv"
    log.write_bytes(b"h\nrow1\nrow2\nro")
    repair_log(log)
    assert log.read_bytes() == b"h\nrow1\nrow2\n"
    repair_log(log)
    assert log.read_bytes() == b"h\nrow1\nrow2\n"
    log.write_bytes(b"no newline at all" * 10000)
    repair_log(log)
    assert log.read_bytes() == b""


def test_append_log_header_once_and_whole_lines(tmp_path):
    path = tmp_path / "p.csv"
    with AppendLog(path, "a,b\n") as log:
        log.append(["1,2\n", "3,4\n"])
        with pytest.raises(ValueError):
            log.append(["5,"])
    with AppendLog(path, "a,b\n") as log:
        log.append(["5,6\n"])
    assert path.read_text() == "a,b\n1,2\n3,4\n5,6\n"


def test_clear_removes_only_own_files(tmp_path):
    root = tmp_path / "out"
    (root / "crops" / "s").mkdir(parents=True)
    (root / "overlays").mkdir()
    for name in ["predictions.csv", "index.html", "run.json", "crops/s/patch1_a_0.5.jpg", "overlays/s.jpg"]:
        (root / name).write_text("x")
    for name in ["keep.txt", "crops/s/holiday.jpg", "overlays/notes.md"]:
        (root / name).write_text("mine")
    OutputDir(root).clear()
    left = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert left == ["crops/s/holiday.jpg", "keep.txt", "overlays/notes.md"]


# ------------------------------------------------------------------------------------------ walking


def test_iter_photos_sorted_lazy_and_filtered(tmp_path):
    for rel in ["b.jpg", "a.PNG", "c.txt", ".hidden.jpg", "sub/z.jpeg", "sub/.x/y.jpg", ".cache/q.jpg", "out/o.jpg",
                "a_dir/m.webp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    walker = iter_photos(tmp_path, recursive=True, exclude=tmp_path / "out")
    assert next(walker) == "a.PNG"  # a generator: nothing listed until asked
    assert list(walker) == ["b.jpg", "a_dir/m.webp", "sub/z.jpeg"]
    assert list(iter_photos(tmp_path)) == ["a.PNG", "b.jpg"]  # not recursive
    with pytest.raises(AgripatchError):
        list(iter_photos(tmp_path / "b.jpg"))


def test_decode_min_side():
    assert decode_min_side(224, 224, 67) == 749  # ceil(224 * 224 / 67)
    assert decode_min_side(224, 96, 115) == 224  # the glance itself dominates
    with pytest.raises(ValueError):
        decode_min_side(224, 224, 0)


# ------------------------------------------------------------------------------------------ overlays


def test_cut_crop_exact_pixels_and_clamped():
    image = np.arange(20 * 30 * 3, dtype=np.uint8).reshape(20, 30, 3)
    assert np.array_equal(cut_crop(image, [2, 3, 7, 9]), image[3:9, 2:7])
    assert np.array_equal(cut_crop(image, [2.4, 3.6, 6.2, 8.1]), image[3:9, 2:7])
    assert cut_crop(image, [-5, -5, 100, 100]).shape == (20, 30, 3)
    assert cut_crop(image, [29.5, 19.5, 31, 21]).shape == (1, 1, 3)


def test_resize_longest():
    assert resize_longest(np.zeros((1000, 2000, 3), np.uint8), 800).shape == (400, 800, 3)
    assert resize_longest(np.zeros((100, 50, 3), np.uint8), 800).shape == (100, 50, 3)
    assert resize_longest(np.zeros((100, 50, 3), np.uint8), 800, at_least=480).shape == (480, 240, 3)
    assert resize_longest(np.zeros((600, 500, 3), np.uint8), 800, at_least=480).shape == (600, 500, 3)


def test_grid_region_from_cell_geometry():
    rf = 67, 8  # anchornet_lite0_s8 at a 128 glance: 8 x 8 cells, centres 33.5 + 8 j
    n = (128 - rf[0]) // rf[1] + 1
    ys, xs = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    x0, y0 = 8 * xs.reshape(-1), 8 * ys.reshape(-1)
    boxes = np.stack([x0, y0, x0 + 67, y0 + 67], 1).astype(np.float32)
    assert grid_region(boxes, n, n) == (29.5, 29.5, 33.5 + 8 * 7 + 4, 33.5 + 8 * 7 + 4)


def test_heat_overlay_puts_each_score_at_its_cell():
    # A 4 x 4 grid of cells centred at 20 + 20 j (step 20) on an 100-px glance; overlay 200 x 100 (w x h).
    cam = np.zeros((4, 4))
    cam[1, 2] = 1.0  # the hot cell, centre (x=60, y=40) in glance pixels
    region = (10.0, 10.0, 90.0, 90.0)
    base = np.zeros((100, 200, 3), np.uint8)
    out = heat_overlay(base, cam, region, glance_size=100, alpha=1.0)
    red = (out[..., 0] > 100) & (out[..., 2] < 30)  # JET: the top score is dark red, zero is dark blue
    ys, xs = np.nonzero(red)
    # Cell (1, 2) spans glance x 50..70, y 30..50 -> overlay x 100..140, y 30..50.
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (100, 140, 30, 50)
    assert np.all(out[:10] == 0) and np.all(out[:, :20] == 0)  # outside the grid's region: untouched
    assert out[10:30, 20:180, 2].min() > 100 and out[10:30, 20:180, 0].max() < 30  # a cold row of cells: blue


def test_heat_overlay_flat_or_bad_map():
    base = np.full((50, 50, 3), 7, np.uint8)
    assert np.array_equal(heat_overlay(base, np.full((2, 2), np.nan), (0, 0, 50, 50), 50), base)
    flat = heat_overlay(base, np.ones((2, 2)), (0, 0, 50, 50), 50)
    assert flat.shape == base.shape and not np.array_equal(flat, base)


def test_render_overlay_draws_numbered_boxes():
    image = np.full((1600, 1200, 3), 90, np.uint8)
    boxes = np.array([[100, 100, 700, 700], [500, 800, 1100, 1400]], np.float32)
    picture = render_overlay(image, boxes, [True, False], None, None, 128)
    assert picture.shape == (800, 600, 3)
    # Boxes scaled by 1/2: the read one's edge is white, the unread one's grey, both outlined in black.
    assert np.all(picture[100:300, 50] == 255) and np.all(picture[100:300, 47] == 0)
    assert np.all(picture[400, 300:500] == 170) and np.all(picture[200, 200] == 90)


# ------------------------------------------------------------------------------------------ records


def _prediction() -> PatchPrediction:
    return PatchPrediction(
        label=1, probs=np.array([0.2, 0.7, 0.1], np.float32), stage=1,
        boxes=np.array([[10, 20, 77, 87], [0, 0, 67, 67]], np.float32), box_scores=np.array([0.5, 0.25], np.float32),
        cells=np.array([3, 0]), patch_logits=np.array([[0.0, 2.0, 0.0]], np.float32), cam=np.zeros((2, 2)), macs=12345,
    )


def test_original_boxes_scale_back():
    boxes = np.array([[10, 20, 30, 40]], np.float32)
    assert original_boxes(boxes, (100, 200), (400, 800)).tolist() == [[40, 80, 120, 160]]
    assert original_boxes(np.zeros((0, 4)), (1, 1), (2, 2)).shape == (0, 4)


def test_photo_record_and_csv_row():
    record = photo_record("a/b.jpg", _prediction(), ["x", "y", "z"], 2, (100, 200), (200, 400),
                          crops=["c1.jpg", "c2.jpg"], overlay="o.jpg")
    assert record["label"] == "y" and record["confidence"] == pytest.approx(0.7)
    assert [t["class"] for t in record["topk"]] == ["y", "x"]
    assert record["boxes"][0]["box"] == [20, 40, 154, 174] and record["boxes"][0]["read"]
    softmax = np.exp(2) / (np.exp(2) + 2)
    assert record["boxes"][0]["label"] == "y" and record["boxes"][0]["prob"] == pytest.approx(softmax, abs=1e-6)
    assert record["boxes"][1]["read"] is False and record["boxes"][1]["label"] is None
    assert (record["width"], record["height"]) == (400, 200)
    assert record["decision"] == "y" and record["ood_distance"] is None  # no refusal rule: the class itself
    row = csv_row(record)
    assert row[:4] == ["a/b.jpg", "y", "y", "0.700000"] and json.loads(row[4]) == [["y", 0.7], ["x", 0.2]]
    assert json.loads(row[9])[0]["box"] == [20, 40, 154, 174]
    refused = photo_record("a/b.jpg", _prediction(), ["x", "y", "z"], 2, (100, 200), (200, 400),
                           decision="not_a_leaf", ood_distance=123.45678)
    assert refused["label"] == "y" and refused["decision"] == "not_a_leaf" and refused["ood_distance"] == 123.4568
    assert csv_row(refused)[2] == "not_a_leaf"


def test_topk_clipped_to_classes():
    assert len(topk_of(np.array([0.5, 0.5]), ["a", "b"], 5)) == 2
    assert [t["index"] for t in topk_of(np.array([0.3, 0.3, 0.4]), ["a", "b", "c"], 3)] == [2, 0, 1]
