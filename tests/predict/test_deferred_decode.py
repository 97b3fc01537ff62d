"""`predict folder` without review images decodes a photo at the cascade's size only when the cascade reads it:
the same records as decoding every photo up front, and the rule for when it does so."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest
from predict_helpers import make_model_file, predict_folder

from agripatch.data.photos import PhotoDataset
from agripatch.io.deferred import DeferredPhoto
from agripatch.io.images import reduced_hw
from agripatch.predict.folder import _defers_full_decode
from agripatch.predict.options import PredictOptions
from agripatch.predict.predictor import Predictor


@pytest.fixture(scope="module")
def wide_model(tmp_path_factory):
    """A tiny model whose full-image exit reads 256 px: photos are decoded at >= 256, its 128-px glance reduced."""
    model = make_model_file(tmp_path_factory.mktemp("deferred") / "model.pt", full_image=True, baseline_size=256,
                            bias=0.0)
    return model


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("deferred_photos") / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        image = cv2.GaussianBlur(rng.integers(0, 256, (600 + 8 * i, 540, 3), dtype=np.uint8), (0, 0), 3)
        cv2.imwrite(str(root / f"leaf{i}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(root / "small.jpg"), rng.integers(0, 256, (200, 180, 3), dtype=np.uint8))  # one decode serves all
    return root


def _records(out):
    """The records without the review images' names (the eager run writes crops)."""
    records = [json.loads(line) for line in sorted((out / "predictions.jsonl").read_text().splitlines())]
    for record in records:
        record.pop("crops", None), record.pop("overlay", None)
        for box in record["boxes"]:
            box.pop("crop", None)
    return records


def test_records_are_those_of_decoding_every_photo_up_front(wide_model, folder, tmp_path):
    predictor = Predictor.from_file(wide_model, device="cpu")
    lean = PredictOptions(input=folder, model=wide_model, out=tmp_path / "lean", workers=0, crops=False,
                          overlays=False, quiet=True)
    assert _defers_full_decode(lean)
    items = PhotoDataset(folder, sorted(p.name for p in folder.iterdir()), min_side=predictor.decode_min_side(),
                         glance_size=predictor.glance_size, defer_full=True)
    assert sum(isinstance(items[i]["image"], DeferredPhoto) for i in range(len(items))) == 6
    for thresholds, stage in ((None, 4), ([0.0], 0)):  # every photo read whole, or none past the glance
        options = {"workers": 0, "overlays": False, "quiet": True, "overwrite": True, "thresholds": thresholds}
        predict_folder(folder, wide_model, tmp_path / "lean", crops=False, **options)
        predict_folder(folder, wide_model, tmp_path / "eager", crops=True, **options)
        lean_records, eager_records = _records(tmp_path / "lean"), _records(tmp_path / "eager")
        assert len(lean_records) == 7 and lean_records == eager_records
        assert {r["stage"] for r in lean_records} == {stage}


def test_the_rule_defers_only_decodes_made_here_that_nothing_else_reads(wide_model, tmp_path):
    lean = PredictOptions(input=tmp_path, model=wide_model, out=tmp_path / "o", workers=0, crops=False,
                          overlays=False)
    assert _defers_full_decode(lean)
    assert not _defers_full_decode(replace(lean, workers=2))  # decoded beside the model instead
    assert not _defers_full_decode(replace(lean, crops=True))  # crops need every photo's pixels
    assert not _defers_full_decode(replace(lean, overlays=True))


@pytest.fixture(scope="module")
def severity_model(tmp_path_factory):
    """``wide_model`` that also measures severity, its map reading 128 px: the 600 x 540 photos' quarter decode,
    made for the 128-px glance, is large enough for it (128 x 112); their cascade decode (a half) is another."""
    return make_model_file(tmp_path_factory.mktemp("deferred_severity") / "model.pt", full_image=True,
                           baseline_size=256, bias=0.0, severity_side=128)


def test_the_symptom_map_reads_the_glance_decode_and_needs_no_deferred_one(severity_model, folder, tmp_path):
    """With severity on, photos are still decoded for the glance only: the map shrinks that decode (where it is
    large enough), so a photo that stops at the glance is never decoded whole, and the records are those of the
    eager run (which keeps the same glance decode for the map)."""
    predictor = Predictor.from_file(severity_model, device="cpu")
    predictor.thresholds = [0.0]  # every photo stops at the glance
    paths = sorted(folder.iterdir())
    lazy = [predictor.item(p, i, defer_full=True) for i, p in enumerate(paths)]
    assert [isinstance(item["image"], DeferredPhoto) for item in lazy] == [True] * 6 + [False]
    records = [predictor.record(item, r) for item, r in zip(lazy, predictor.run(lazy))]
    assert not any(item["image"].decoded for item in lazy[:6])  # the map read their glance decodes
    eager = [predictor.item(p, i) for i, p in enumerate(paths)]
    for item, whole in zip(lazy[:6], eager[:6]):  # both keep the glance's quarter decode beside the half one
        height, width = item["original_hw"]
        assert np.array_equal(item["reduced"], whole["reduced"])
        assert item["reduced"].shape[:2] == reduced_hw(height, width, 128) == (height // 4, width // 4)
        assert tuple(whole["image"].shape[1:]) == (height // 2, width // 2)
    assert "reduced" not in eager[6]  # the small photo: one decode serves the glance and the cascade
    assert [predictor.record(item, r) for item, r in zip(eager, predictor.run(eager))] == records
    assert all(r["severity"] is not None for r in records)
    for options in ({"crops": False, "overlays": False}, {"crops": True, "overlays": True}):  # deferred, then eager
        out = tmp_path / str(options["crops"])
        predict_folder(folder, severity_model, out, workers=0, quiet=True, thresholds=[0.0], **options)
    assert _records(tmp_path / "False") == _records(tmp_path / "True")


def test_the_python_api_defers_too_and_gives_the_same_records(wide_model, folder):
    predictor = Predictor.from_file(wide_model, device="cpu")
    paths = sorted(folder.iterdir())
    for thresholds in (None, [0.0]):
        predictor.thresholds = thresholds or predictor.thresholds
        eager = [predictor.item(p, i) for i, p in enumerate(paths)]
        expected = [predictor.record(item, r) for item, r in zip(eager, predictor.run(eager))]
        assert predictor.predict(paths) == expected
    lazy = predictor.item(paths[0], defer_full=True)
    assert isinstance(lazy["image"], DeferredPhoto) and not lazy["image"].decoded
