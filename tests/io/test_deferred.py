"""Deferred decoding: a photo decoded for its glance only, its larger decode made when the cascade reads it, gives
exactly the item an eager decode gives, and is never a silent substitute when the file changes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from agripatch.errors import ImageReadError
from agripatch.io.deferred import DeferredPhoto, pixels
from agripatch.io.images import read_image, read_image_with_size, reduced_hw
from agripatch.io.sources import load_item


def _finish(array, glance):
    return {"image": array, "glance": glance}


def _jpeg(path, height, width, seed=0):
    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    image = np.stack([127 + 120 * np.sin(xx / 5.0), 127 + 120 * np.cos(yy / 7.0), (xx + yy) % 256], axis=-1)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    cv2.imwrite(str(path), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def test_a_jpeg_whose_glance_is_another_decode_waits_for_its_larger_one(tmp_path):
    path = _jpeg(tmp_path / "leaf.jpg", 500, 420)
    eager = load_item(path, _finish, min_side=348, glance_size=160)
    lazy = load_item(path, _finish, min_side=348, glance_size=160, defer_full=True)
    photo = lazy["image"]
    assert isinstance(photo, DeferredPhoto) and not photo.decoded
    assert eager["image"].shape == (500, 420, 3)  # 348 px needs the full decode, the 160 glance only 1/2
    assert lazy["decoded_hw"] == eager["decoded_hw"] == (500, 420) == photo.hw and photo.shape == (500, 420, 3)
    assert lazy["original_hw"] == eager["original_hw"] and lazy["file"] == eager["file"]
    np.testing.assert_array_equal(lazy["glance"], eager["glance"])  # the glance was made from the same decode
    np.testing.assert_array_equal(pixels(photo), eager["image"])
    assert photo.decoded and pixels(photo) is photo.array()  # decoded once, then kept
    assert pixels(eager["image"]) is eager["image"]


@pytest.mark.parametrize("min_side", [None, 200])
def test_decoded_sizes_follow_the_reader(tmp_path, min_side):
    path = _jpeg(tmp_path / "odd.jpg", 333, 517)
    assert DeferredPhoto(path, (333, 517), min_side).hw == read_image(path, min_side=min_side).shape[:2]
    assert reduced_hw(333, 517, min_side) == read_image(path, min_side=min_side).shape[:2]


def test_nothing_waits_when_the_glance_and_the_cascade_share_one_decode(tmp_path):
    same = _jpeg(tmp_path / "large.jpg", 1200, 1600)  # 1/8 serves both 150 and 140 px
    png = tmp_path / "leaf.png"
    Image.fromarray(read_image(_jpeg(tmp_path / "src.jpg", 300, 300))).save(png)  # never decoded reduced
    for source, min_side in ((same, 150), (png, 250)):
        lazy = load_item(source, _finish, min_side=min_side, glance_size=140, defer_full=True)
        eager = load_item(source, _finish, min_side=min_side, glance_size=140)
        assert isinstance(lazy["image"], np.ndarray)
        np.testing.assert_array_equal(lazy["image"], eager["image"])
        assert lazy["decoded_hw"] == eager["decoded_hw"]
    memory = np.zeros((300, 300, 3), np.uint8)
    assert isinstance(load_item(memory, _finish, min_side=250, glance_size=140, defer_full=True)["image"], np.ndarray)
    larger_glance = load_item(same, _finish, min_side=100, glance_size=140, defer_full=True)
    assert isinstance(larger_glance["image"], np.ndarray)  # only a smaller glance decode is worth deferring


def test_upright_sizes_of_a_rotated_photo(tmp_path):
    upright = read_image(_jpeg(tmp_path / "src.jpg", 360, 240))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "rotated.jpg"
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1))).save(path, quality=95, exif=exif)
    lazy = load_item(path, _finish, min_side=230, glance_size=100, defer_full=True)
    eager = load_item(path, _finish, min_side=230, glance_size=100)
    assert isinstance(lazy["image"], DeferredPhoto) and lazy["decoded_hw"] == eager["decoded_hw"] == (360, 240)
    np.testing.assert_array_equal(lazy["image"].array(), eager["image"])


def test_a_file_replaced_before_its_decode_is_an_error_naming_it(tmp_path):
    path = _jpeg(tmp_path / "leaf.jpg", 500, 420)
    lazy = load_item(path, _finish, min_side=348, glance_size=160, defer_full=True)
    _jpeg(path, 480, 420, seed=1)  # the user's sync tool replaced it meanwhile
    with pytest.raises(ImageReadError, match="changed while it was being read") as caught:
        lazy["image"].array()
    assert caught.value.path == path
    assert read_image_with_size(path)[1] == (480, 420)


def test_an_unreadable_file_is_still_the_items_error(tmp_path):
    whole = _jpeg(tmp_path / "whole.jpg", 500, 420).read_bytes()
    (tmp_path / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    item = load_item(tmp_path / "cut.jpg", _finish, min_side=348, glance_size=160, defer_full=True)
    assert item["image"] is None and item["error"]
