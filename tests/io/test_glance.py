"""The glance resize: training's evaluation resize, the same for both backends, antialiased, strict input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from agripatch.data.transforms import eval_transform
from agripatch.io.glance import (
    PhotoFile,
    glance_array,
    glance_batch,
    glance_source,
    read_glance,
    reduced_at_least,
    whole_photo,
)
from agripatch.io.images import read_image, read_image_with_size


@pytest.mark.parametrize("hw,size", [((500, 500), 160), ((333, 517), 160), ((1000, 750), 160), ((96, 80), 128),
                                     ((128, 128), 128), ((7, 5), 16)])
def test_glance_is_trainings_evaluation_resize(hw, size):
    image = np.random.default_rng(hw[0] + hw[1]).integers(0, 256, (*hw, 3), dtype=np.uint8)
    trained_on = eval_transform(size)(image=image)["image"]
    glance = glance_array(image, size)
    assert glance.shape == (3, size, size) and glance.dtype == np.float32 and glance.flags.c_contiguous
    np.testing.assert_array_equal(glance, trained_on.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0))


def test_shrinking_by_two_is_the_two_by_two_average():
    photo = np.random.default_rng(0).random((8, 8, 3), dtype=np.float32)
    big = photo.repeat(2, axis=0).repeat(2, axis=1)
    big[::2, ::2] += 0.25
    big[1::2, 1::2] -= 0.25  # the 2 x 2 average is still the photo
    np.testing.assert_allclose(glance_array(big, 8), photo.transpose(2, 0, 1), atol=1e-6)
    np.testing.assert_array_equal(glance_array(photo, 8), photo.transpose(2, 0, 1))  # same size: the photo


def test_fine_detail_does_not_alias():
    checker = (np.indices((500, 500)).sum(axis=0) % 2 * 255).astype(np.uint8)
    glance = glance_array(np.repeat(checker[..., None], 3, axis=2), 160)  # a 3.125x shrink
    assert abs(float(glance.mean()) - 0.5) < 0.01 and float(glance.std()) < 0.1  # grey, not stripes


def test_uint8_and_float_photos_agree_and_batches_stack():
    image = np.random.default_rng(1).integers(0, 256, (300, 410, 3), dtype=np.uint8)
    as_float = glance_array(image.astype(np.float32) / 255, 64)
    assert np.abs(glance_array(image, 64) - as_float).max() <= 0.5 / 255 + 1e-6  # uint8 rounds once
    batch = glance_batch([image, image[:100]], 64)
    assert batch.shape == (2, 3, 64, 64) and np.array_equal(batch[0], glance_array(image, 64))
    assert glance_batch([], 64).shape == (0, 3, 64, 64)


@pytest.mark.parametrize("image,size,match", [(np.zeros((4, 4), np.uint8), 8, "HWC RGB"),
                                              (np.zeros((4, 4, 4), np.uint8), 8, "HWC RGB"),
                                              (np.zeros((4, 4, 3), np.int32), 8, "uint8 or float"),
                                              (np.zeros((4, 4, 3), np.uint8), 0, "positive int")])
def test_bad_input_is_refused(image, size, match):
    with pytest.raises(ValueError, match=match):
        glance_array(image, size)


def _jpeg(path, h, w):
    rng = np.random.default_rng(h * w)
    image = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)
    cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return path


def test_glance_source_is_the_decode_training_makes_for_that_size(tmp_path):
    path = _jpeg(tmp_path / "leaf.jpg", 1000, 800)
    full, hw = read_image_with_size(path)
    assert hw == (1000, 800)
    pixels = glance_source(path, full, hw, 160)  # training decodes 1/4 (200 >= 160; 1/8 would be 100)
    assert pixels.shape == (250, 200, 3) and np.array_equal(pixels, read_image(path, min_side=160))
    quarter, _ = read_image_with_size(path, min_side=160)
    assert glance_source(path, quarter, hw, 160) is quarter  # already that decode: no second one
    np.testing.assert_array_equal(read_glance(path, 160), glance_array(quarter, 160))
    assert np.abs(read_glance(path, 160) - glance_array(full, 160)).max() > 0  # not the full decode shrunk


def test_other_formats_reuse_the_full_decode(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (600, 400, 3), dtype=np.uint8)
    png = tmp_path / "leaf.png"
    cv2.imwrite(str(png), image)
    full, hw = read_image_with_size(png, min_side=160)  # a PNG is never reduced
    assert hw == (600, 400) and full.shape == (600, 400, 3)
    assert glance_source(png, full, hw, 160) is full  # no second decode: it would be these very pixels
    np.testing.assert_array_equal(read_glance(png, 160), glance_array(full, 160))
    disguised = tmp_path / "photo.png"  # a JPEG by content, whatever its name: reduced, so decoded again
    disguised.write_bytes(_jpeg(tmp_path / "real.jpg", 600, 400).read_bytes())
    full, hw = read_image_with_size(disguised)
    assert glance_source(disguised, full, hw, 160).shape == (300, 200, 3)


def test_items_of_both_backends_get_the_same_glance(tmp_path):
    from agripatch.data.photos import photo_item
    from agripatch.runtime.photos import runtime_item

    path = _jpeg(tmp_path / "big.jpg", 1200, 1600)
    torch_item = photo_item(path, min_side=400, glance_size=96)
    runtime = runtime_item(path, min_side=400, glance_size=96)
    assert torch_item["decoded_hw"] == runtime["decoded_hw"] == (600, 800)
    np.testing.assert_array_equal(torch_item["glance"].numpy(), runtime["glance"])
    np.testing.assert_array_equal(runtime["glance"], read_glance(path, 96))


def test_items_keep_the_glance_decode_and_whole_photos_reuse_it(tmp_path, monkeypatch):
    """An item whose glance came from a second, reduced decode keeps it (``reduced``, in its PhotoFile), in both
    backends; a whole-photo input of the size that decode serves (the full-image exit's, evaluate's baseline's)
    is then made from it, the same pixels as decoding the file again, without decoding it again."""
    from agripatch.data.photos import photo_item
    from agripatch.io import glance as glance_module
    from agripatch.io.sources import photo_files
    from agripatch.runtime.photos import runtime_item

    path = _jpeg(tmp_path / "big.jpg", 1200, 1600)
    torch_item = photo_item(path, min_side=400, glance_size=96)
    runtime = runtime_item(path, min_side=400, glance_size=96)
    quarter = read_image(path, min_side=96)  # 1/8: 150 x 200
    for item in (torch_item, runtime):
        np.testing.assert_array_equal(item["reduced"], quarter)
    file = photo_files([torch_item])[0]
    assert file.path == str(path) and file.original_hw == (1200, 1600) and file.reduced is torch_item["reduced"]
    expected = whole_photo(torch_item["image"].permute(1, 2, 0).numpy(), 120, PhotoFile(str(path), (1200, 1600)))
    monkeypatch.setattr(glance_module, "read_image", lambda *a, **k: pytest.fail("decoded the file again"))
    np.testing.assert_array_equal(whole_photo(torch_item["image"].permute(1, 2, 0).numpy(), 120, file), expected)
    one_decode = photo_item(_jpeg(tmp_path / "small.jpg", 300, 400), min_side=96, glance_size=96)
    assert "reduced" not in one_decode  # the glance's decode is the photo's own: nothing kept twice
    assert photo_files([one_decode])[0].reduced is None


@pytest.mark.parametrize("height,width,kept", [(150, 200, True), (144, 200, True), (151, 200, False),
                                               (150, 201, False), (8, 8, True)])
def test_reduced_at_least_gives_the_glance_decode_only_when_it_is_large_enough(height, width, kept):
    reduced = np.zeros((150, 200, 3), np.uint8)
    got = reduced_at_least(PhotoFile("leaf.jpg", (1200, 1600), reduced), height, width)
    assert (got is reduced) if kept else got is None
    assert reduced_at_least(PhotoFile("leaf.jpg", (1200, 1600)), 8, 8) is None
    assert reduced_at_least(None, 8, 8) is None
