"""PhotoDataset: the one inference-time photo dataset (evaluate and predict folder)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from agripatch.data.photos import PhotoDataset, make_glance
from agripatch.io.glance import read_glance


def upright_pattern(height: int, width: int) -> np.ndarray:
    """Smooth RGB ramps (JPEG keeps them well)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([20 + 215 * x / (width - 1), 20 + 215 * y / (height - 1), 128 + 0 * x], -1).astype(np.uint8)


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    return buf.tobytes()


def test_dataset_reduces_and_reports_sizes(tmp_path):
    photo = upright_pattern(1200, 1600)
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes(photo))
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    data = PhotoDataset(tmp_path, ["p.jpg", "bad.jpg"], min_side=290, glance_size=64)
    item = data[0]
    assert item["original_hw"] == (1200, 1600) and item["decoded_hw"] == (300, 400)  # 1/4: 300 >= 290
    assert item["image"].shape == (3, 300, 400) and item["image"].dtype == torch.uint8
    assert item["glance"].shape == (3, 64, 64) and 0.0 <= float(item["glance"].min()) <= float(item["glance"].max()) <= 1.0
    # The glance is made as training evaluates the file at 64 px (a 1/8 decode, not the 1/4 one the patches get).
    torch.testing.assert_close(item["glance"], torch.from_numpy(read_glance(tmp_path / "p.jpg", 64)))
    assert not torch.equal(item["glance"], make_glance([item["image"]], 64)[0])
    bad = data[1]
    assert bad["image"] is None and "not a recognised image" in bad["error"] and bad["path"] == "bad.jpg"


def test_labels_travel_with_items_and_no_glance_unless_asked(tmp_path):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(upright_pattern(40, 60)))
    (tmp_path / "b.jpg").write_bytes(b"")
    data = PhotoDataset(tmp_path, ["a.jpg", "b.jpg"], labels=[2, 0])
    assert len(data) == 2
    good, bad = data[0], data[1]
    assert good["label"] == 2 and good["glance"] is None and good["image"].shape == (3, 40, 60)
    assert bad["label"] == 0 and bad["image"] is None and bad["error"]
    assert PhotoDataset(tmp_path, ["a.jpg"])[0]["label"] is None


def test_line_break_in_a_name_is_an_error_entry(tmp_path):
    item = PhotoDataset(tmp_path, ["x\ny.jpg"])[0]
    assert item["image"] is None and "line break" in item["error"]


def test_labels_must_match_paths():
    with pytest.raises(ValueError, match="2 labels for 1 paths"):
        PhotoDataset(".", ["a.jpg"], labels=[0, 1])


def test_baseline_input_is_made_as_its_training_evaluated_it(tmp_path):
    photo = upright_pattern(1200, 1600)
    (tmp_path / "p.jpg").write_bytes(jpeg_bytes(photo))
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    # the cascade decodes at 1/2 (600 px); the 224 baseline needs the 1/4 decode (300 >= 224), the 512 one the 1/2
    for size in (224, 512):
        data = PhotoDataset(tmp_path, ["p.jpg", "bad.jpg"], min_side=600, glance_size=64, baseline_size=size)
        item = data[0]
        assert item["baseline"].shape == (3, size, size)
        np.testing.assert_array_equal(item["baseline"].numpy(), read_glance(tmp_path / "p.jpg", size))
        assert "baseline" not in data[1] and data[1]["error"]
    assert "baseline" not in PhotoDataset(tmp_path, ["p.jpg"], min_side=600)[0]


def test_read_only_in_memory_photos_are_taken_without_warning():
    import warnings

    from agripatch.data.photos import photo_item

    photo = upright_pattern(64, 96)
    photo.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        item = photo_item(photo, glance_size=32)
    assert item["error"] is None and torch.equal(item["image"].permute(1, 2, 0), torch.from_numpy(photo.copy()))
