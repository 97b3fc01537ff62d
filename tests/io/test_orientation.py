"""Photos read in the model's orientation: the rule that picks it, the turn, the boxes mapped back, and every
reader of a file (eager, deferred, the glance's second decode) giving the pixels of the turned photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from PIL import Image

from agripatch.data.photos import photos_orientation
from agripatch.io.deferred import DeferredPhoto, pixels
from agripatch.io.glance import glance_source
from agripatch.io.images import read_image, read_image_with_size
from agripatch.io.orientation import boxes_before_turn, dominant_orientation, quarter_turns, turn
from agripatch.io.sources import load_item, photo_files


def _finish(array, glance):
    return {"image": array, "glance": glance}


def _photo(height, width, seed=0):
    yy, xx = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(seed)
    image = np.stack([127 + 120 * np.sin(xx / 5.0), 127 + 120 * np.cos(yy / 7.0), (xx + 2 * yy) % 256], axis=-1)
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("sizes", "expected"), [
    ([(512, 1024)] * 19 + [(1024, 512)], "landscape"),        # 95% landscape
    ([(512, 1024)] * 18 + [(1024, 512)] * 2, "any"),          # 90%: mixed
    ([(1024, 512)] * 20, "portrait"),
    ([(500, 500)] * 20, "any"),                               # squares are neither
    ([(512, 1024)] * 19 + [(500, 500)], "landscape"),
    ([], "any"),
])
def test_the_dominant_orientation_needs_95_percent_of_photos(sizes, expected):
    assert dominant_orientation(sizes) == expected


def test_only_a_photo_lying_the_other_way_is_turned():
    assert [quarter_turns(hw, "landscape") for hw in [(100, 200), (200, 100), (150, 150)]] == [0, 1, 0]
    assert [quarter_turns(hw, "portrait") for hw in [(100, 200), (200, 100), (150, 150)]] == [1, 0, 0]
    assert quarter_turns((200, 100), "any") == quarter_turns((200, 100), None) == 0
    with pytest.raises(ValueError, match="orientation must be"):
        quarter_turns((200, 100), "upright")


def test_boxes_on_the_turned_photo_cover_the_same_pixels_of_the_file():
    photo = _photo(60, 40)  # portrait
    turned = turn(photo, 1)
    assert turned.shape == (40, 60, 3) and turned.flags.c_contiguous
    np.testing.assert_array_equal(turned, np.rot90(photo, -1))  # clockwise
    boxes = np.array([[5, 3, 25, 17], [0, 0, 60, 40], [31, 22, 59, 39]], np.float64)
    back = boxes_before_turn(boxes, turned.shape[:2], 1)
    for box, mapped in zip(boxes.astype(int), back.astype(int)):
        on_turned = turned[box[1]:box[3], box[0]:box[2]]
        on_file = photo[mapped[1]:mapped[3], mapped[0]:mapped[2]]
        np.testing.assert_array_equal(turn(on_file, 1), on_turned)
    np.testing.assert_array_equal(boxes_before_turn(boxes, (40, 60), 0), boxes)
    assert boxes_before_turn(np.zeros((0, 4)), (40, 60), 1).shape == (0, 4)


def test_a_read_with_turns_is_the_upright_read_turned(tmp_path):
    path = tmp_path / "portrait.png"
    Image.fromarray(_photo(90, 50)).save(path)
    array, hw = read_image_with_size(path, turns=1)
    assert hw == (50, 90) and array.shape == (50, 90, 3)
    np.testing.assert_array_equal(array, np.rot90(read_image(path), -1))


def test_an_item_is_read_in_the_models_orientation_by_every_decode(tmp_path):
    """A portrait JPEG for a landscape model: the glance's reduced decode, the deferred larger decode and a second
    decode for another input size all give the turned photo's pixels, and the file's item knows its turn."""
    path = tmp_path / "portrait.jpg"
    cv2.imwrite(str(path), _photo(500, 420)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
    upright = load_item(path, _finish, min_side=348, glance_size=160)
    eager = load_item(path, _finish, min_side=348, glance_size=160, orientation="landscape")
    lazy = load_item(path, _finish, min_side=348, glance_size=160, orientation="landscape", defer_full=True)
    assert upright["turns"] == 0 and eager["turns"] == lazy["turns"] == 1
    assert eager["original_hw"] == lazy["original_hw"] == eager["decoded_hw"] == (420, 500)
    np.testing.assert_array_equal(eager["image"], turn(upright["image"], 1))
    assert isinstance(lazy["image"], DeferredPhoto) and lazy["image"].hw == (420, 500)
    np.testing.assert_array_equal(pixels(lazy["image"]), eager["image"])
    np.testing.assert_array_equal(lazy["glance"], eager["glance"])
    file = photo_files([eager])[0]
    assert file.turns == 1
    other = glance_source(file.path, eager["image"], file.original_hw, 200, file.reduced, file.turns)
    np.testing.assert_array_equal(other, turn(read_image(path, min_side=200), 1))


def test_an_in_memory_photo_is_turned_the_same_way(tmp_path):
    photo = _photo(90, 50)
    item = load_item(photo, _finish, glance_size=32, orientation="landscape")
    assert item["turns"] == 1 and item["original_hw"] == (50, 90)
    np.testing.assert_array_equal(item["image"], turn(photo, 1))
    assert load_item(photo, _finish, glance_size=32, orientation="portrait")["turns"] == 0


def test_training_photos_decide_the_orientation_from_their_headers(tmp_path):
    names = []
    for i in range(20):
        name = f"p{i}.png"
        Image.fromarray(_photo(30, 50, i) if i else _photo(50, 30, i)).save(tmp_path / name)
        names.append(name)
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert photos_orientation(tmp_path, names + ["broken.png"]) == ("landscape", 19, 20)
    assert photos_orientation(tmp_path, names[:10]) == ("any", 0, 10)  # 9 of 10 lie landscape: too few
    assert photos_orientation(tmp_path, names, most=5)[2] == 5  # evenly spaced headers only
