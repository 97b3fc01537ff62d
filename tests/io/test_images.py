"""Tests for agripatch.io.images: every format to upright 8-bit RGB, reduced decodes, guards, errors."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from agripatch.errors import AgripatchError, ImageReadError
from agripatch.io.images import (
    DEFAULT_MAX_PIXELS,
    IMAGE_EXTENSIONS,
    is_image_path,
    jpeg_reduction,
    probe_image,
    read_image,
    read_image_with_size,
)


def _pattern(height: int = 30, width: int = 50) -> np.ndarray:
    """An asymmetric RGB image: red top-left block, green right band, blue bottom band."""
    img = np.full((height, width, 3), 128, np.uint8)
    img[:10, :10] = (255, 0, 0)
    img[:, width - 10 :] = (0, 255, 0)
    img[height - 8 :, : width - 10] = (0, 0, 255)
    return img


def _save(path: Path, array: np.ndarray | Image.Image, fmt: str, orientation: int | None = None, **kw) -> Path:
    """Write an image with Pillow, optionally with an EXIF orientation tag."""
    im = array if isinstance(array, Image.Image) else Image.fromarray(array)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kw["exif"] = exif
    im.save(path, fmt, **kw)
    return path


def _jpeg_bytes(array: np.ndarray, quality: int = 95) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


# --- is_image_path -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("a.jpg", True),
        ("a.JPEG", True),
        ("dir/b.Png", True),
        ("c.tif", True),
        ("c.TIFF", True),
        ("d.bmp", True),
        ("e.webp", True),
        ("f.txt", False),
        ("g.gif", False),
        ("jpg", False),
        (".hidden.jpg", False),
        ("noext", False),
    ],
)
def test_is_image_path(name: str, expected: bool) -> None:
    assert is_image_path(name) is expected
    assert is_image_path(Path(name)) is expected


def test_extensions_cardinality() -> None:
    assert IMAGE_EXTENSIONS == {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}
    assert DEFAULT_MAX_PIXELS == 180_000_000


# --- output contract per format ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "suffix", "kw"),
    [
        ("PNG", ".png", {}),
        ("TIFF", ".tif", {}),
        ("BMP", ".bmp", {}),
        ("WEBP", ".webp", {"lossless": True}),
    ],
)
def test_lossless_formats_exact(tmp_path: Path, fmt: str, suffix: str, kw: dict) -> None:
    img = _pattern()
    path = _save(tmp_path / f"x{suffix}", img, fmt, **kw)
    out = read_image(path)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(out, img)


def test_jpeg_smoke_and_contract(tmp_path: Path) -> None:
    img = _pattern()
    path = _save(tmp_path / "x.jpg", img, "JPEG", quality=95, subsampling=0)
    out = read_image(path)
    assert out.shape == (30, 50, 3)
    assert out.dtype == np.uint8
    assert out.flags["C_CONTIGUOUS"]
    assert np.abs(out.astype(int) - img).mean() < 3


def test_grayscale_png_and_jpeg(tmp_path: Path) -> None:
    gray = np.arange(0, 250, 10, dtype=np.uint8).reshape(5, 5)
    out = read_image(_save(tmp_path / "g.png", gray, "PNG"))
    assert out.shape == (5, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)
    flat = np.full((16, 16), 77, np.uint8)
    out = read_image(_save(tmp_path / "g.jpg", flat, "JPEG", quality=100))
    assert out.shape == (16, 16, 3)
    assert np.abs(out.astype(int) - 77).max() <= 1
    np.testing.assert_array_equal(out[:, :, 0], out[:, :, 1])


def _white_composite(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float64)[..., None] / 255.0
    return np.rint(rgb * a + 255.0 * (1.0 - a)).astype(np.uint8)


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = (10, 20, 30)
    rgba[..., 3] = [[0, 128, 255], [1, 254, 64]]
    out = read_image(_save(tmp_path / "a.png", rgba, "PNG"))
    np.testing.assert_array_equal(out[0, 0], (255, 255, 255))
    np.testing.assert_array_equal(out[0, 2], (10, 20, 30))
    np.testing.assert_array_equal(out[0, 1], (132, 137, 142))
    np.testing.assert_array_equal(out, _white_composite(rgba[..., :3], rgba[..., 3]))


def test_la_composited_on_white(tmp_path: Path) -> None:
    la = Image.fromarray(np.array([[[40, 0], [40, 255], [40, 100]]], np.uint8), mode="LA")
    out = read_image(_save(tmp_path / "la.png", la, "PNG"))
    expected = _white_composite(np.full((1, 3, 3), 40, np.uint8), np.array([[0, 255, 100]]))
    np.testing.assert_array_equal(out, expected)


def test_palette_with_and_without_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (2, 1))
    pal.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    pal.putpixel((0, 0), 0)
    pal.putpixel((1, 0), 1)
    out = read_image(_save(tmp_path / "p.png", pal, "PNG"))
    np.testing.assert_array_equal(out[0], [(255, 0, 0), (0, 0, 255)])
    out = read_image(_save(tmp_path / "pt.png", pal, "PNG", transparency=0))
    np.testing.assert_array_equal(out[0], [(255, 255, 255), (0, 0, 255)])


_V16 = np.array([[0, 128, 129, 257], [32768, 65534, 65535, 1000]], np.uint16)
_V8 = np.array([[0, 0, 1, 1], [128, 255, 255, 4]], np.uint8)  # round(v / 257)


def test_16bit_gray_png_scaled_not_clipped(tmp_path: Path) -> None:
    path = tmp_path / "g16.png"
    Image.fromarray(_V16).save(path)
    assert Image.open(path).mode.startswith("I;16")
    out = read_image(path)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], _V8)


@pytest.mark.parametrize("suffix", [".png", ".tiff"])
def test_16bit_color_scaled_exactly(tmp_path: Path, suffix: str) -> None:
    rgb16 = np.stack([_V16, _V16[::-1], 65535 - _V16], axis=-1)
    expected = np.stack([_V8, _V8[::-1], ((65535 - _V16.astype(np.uint32) + 128) // 257).astype(np.uint8)], -1)
    path = tmp_path / f"c16{suffix}"
    assert cv2.imwrite(str(path), rgb16[..., ::-1].copy())
    out = read_image(path)
    np.testing.assert_array_equal(out, expected)


def test_16bit_gray_tiff(tmp_path: Path) -> None:
    path = tmp_path / "g16.tif"
    assert cv2.imwrite(str(path), _V16)
    out = read_image(path)
    np.testing.assert_array_equal(out[:, :, 1], _V8)


def test_16bit_rgba_png_composited(tmp_path: Path) -> None:
    bgra = np.zeros((1, 2, 4), np.uint16)
    bgra[..., :3] = 257 * 10
    bgra[..., 3] = [0, 65535]
    path = tmp_path / "a16.png"
    assert cv2.imwrite(str(path), bgra)
    np.testing.assert_array_equal(read_image(path)[0], [(255, 255, 255), (10, 10, 10)])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    cmyk = np.zeros((16, 32, 4), np.uint8)
    cmyk[:, :16] = (0, 255, 255, 0)  # red
    cmyk[:, 16:] = (255, 255, 0, 0)  # blue
    path = _save(tmp_path / "cmyk.jpg", Image.fromarray(cmyk, mode="CMYK"), "JPEG", quality=100)
    assert Image.open(path).mode == "CMYK"
    out = read_image(path)
    assert out.shape == (16, 32, 3)
    assert np.abs(out[4:12, 2:12].astype(int) - (255, 0, 0)).max() <= 6
    assert np.abs(out[4:12, 20:30].astype(int) - (0, 0, 255)).max() <= 6


def test_float_tiff_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "f.tif"
    Image.fromarray(np.zeros((4, 4), np.float32)).save(path)
    with pytest.raises(ImageReadError, match="float"):
        read_image(path)


# --- EXIF orientation --------------------------------------------------------------------------


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pil_exif_transpose(tmp_path: Path, orientation: int) -> None:
    img = _pattern()
    path = _save(tmp_path / "o.png", img, "PNG", orientation=orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    out, size = read_image_with_size(path)
    np.testing.assert_array_equal(out, expected)
    assert out.flags["C_CONTIGUOUS"]
    assert size == out.shape[:2] == probe_image(path)


def test_jpeg_orientation_6_is_upright(tmp_path: Path) -> None:
    img = _pattern()  # 30 x 50, red block top-left
    path = _save(tmp_path / "r.jpg", img, "JPEG", orientation=6, quality=95, subsampling=0)
    out, size = read_image_with_size(path)
    assert out.shape == (50, 30, 3)
    assert size == (50, 30) == probe_image(path)
    # orientation 6 = stored image must turn 90 degrees clockwise: top-left goes to top-right
    expected = np.rot90(img, k=-1)
    assert np.abs(out.astype(int) - expected).mean() < 3
    assert tuple(out[2, -3]) == pytest.approx((255, 0, 0), abs=12)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_jpeg_paths_orient_identically(tmp_path: Path, orientation: int) -> None:
    """OpenCV path (ends with EOI), Pillow path (bytes after EOI) and a reduced decode agree."""
    img = np.repeat(np.repeat(_pattern(24, 40), 4, axis=0), 4, axis=1)  # 96 x 160
    path = _save(tmp_path / "a.jpg", img, "JPEG", orientation=orientation, quality=95)
    trailer = tmp_path / "b.jpg"
    trailer.write_bytes(path.read_bytes() + b"camera trailer data")
    a, size_a = read_image_with_size(path)
    b, size_b = read_image_with_size(trailer)
    assert size_a == size_b
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b).max() <= 2
    small, size_small = read_image_with_size(path, min_side=24)
    small_pil, _ = read_image_with_size(trailer, min_side=24)
    assert size_small == size_a
    assert small.shape == small_pil.shape == (a.shape[0] // 4, a.shape[1] // 4, 3)
    assert np.abs(small.astype(int) - small_pil).max() <= 2


def test_16bit_png_orientation(tmp_path: Path) -> None:
    gray = np.zeros((2, 3), np.uint16)
    gray[0, 0] = 65535
    path = _save(tmp_path / "o16.png", Image.fromarray(gray), "PNG", orientation=6)
    out = read_image(path)
    assert out.shape == (3, 2, 3)
    assert out[0, 1, 0] == 255 and out.sum() == 3 * 255


# --- reduced decode ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("min_side", "shape"),
    [
        (None, (603, 1001)),
        (1, (76, 126)),
        (76, (76, 126)),
        (77, (151, 251)),
        (151, (151, 251)),
        (152, (302, 501)),
        (302, (302, 501)),
        (303, (603, 1001)),
        (5000, (603, 1001)),
    ],
)
def test_reduced_decode_sizes(tmp_path: Path, min_side: int | None, shape: tuple[int, int]) -> None:
    img = np.random.default_rng(0).integers(0, 256, (603, 1001, 3), dtype=np.uint8)
    path = _save(tmp_path / "big.jpg", img, "JPEG", quality=80)
    out, size = read_image_with_size(path, min_side=min_side)
    assert out.shape == (*shape, 3)
    assert size == (603, 1001)
    assert out.flags["C_CONTIGUOUS"]


def test_jpeg_reduction_factor() -> None:
    assert jpeg_reduction(603, 1001, None) == 1
    assert jpeg_reduction(603, 1001, 76) == 8
    assert jpeg_reduction(603, 1001, 77) == 4
    assert jpeg_reduction(100, 100, 500) == 1


def test_min_side_ignored_for_png(tmp_path: Path) -> None:
    path = _save(tmp_path / "p.png", _pattern(), "PNG")
    assert read_image(path, min_side=2).shape == (30, 50, 3)


def test_invalid_arguments(tmp_path: Path) -> None:
    path = _save(tmp_path / "p.png", _pattern(), "PNG")
    with pytest.raises(ValueError, match="min_side"):
        read_image(path, min_side=0)
    with pytest.raises(ValueError, match="max_pixels"):
        read_image(path, max_pixels=0)


# --- decompression-bomb guard ------------------------------------------------------------------


def test_bomb_guard_png(tmp_path: Path) -> None:
    path = _save(tmp_path / "p.png", np.zeros((100, 100, 3), np.uint8), "PNG")
    with pytest.raises(ImageReadError, match=r"10,000 pixels.*max_pixels=9,999.*max_pixels="):
        read_image(path, max_pixels=9_999)
    with pytest.raises(ImageReadError, match="max_pixels"):
        read_image(path, max_pixels=9_999, min_side=10)  # no reduced decode for PNG
    assert read_image(path, max_pixels=10_000).shape == (100, 100, 3)


def test_bomb_guard_allows_reduced_jpeg(tmp_path: Path) -> None:
    path = _save(tmp_path / "j.jpg", np.zeros((800, 800, 3), np.uint8), "JPEG")
    with pytest.raises(ImageReadError, match="640,000 pixels"):
        read_image(path, max_pixels=10_000)
    assert read_image(path, max_pixels=10_000, min_side=100).shape == (100, 100, 3)  # 1/8 decode
    with pytest.raises(ImageReadError, match="40,000 pixels"):
        read_image(path, max_pixels=10_000, min_side=101)  # needs 1/4: 200 x 200
    assert probe_image(path) == (800, 800)  # probing never decodes, never refuses


# --- errors ------------------------------------------------------------------------------------


def test_truncated_jpeg(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    data = _jpeg_bytes(np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    path = tmp_path / "t.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match="truncated") as info:
        read_image(path)
    assert info.value.path == path
    assert capfd.readouterr().err == ""


def test_truncated_png(tmp_path: Path) -> None:
    path = _save(tmp_path / "t.png", np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8), "PNG")
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(ImageReadError):
        read_image(path)


def test_corrupt_jpeg_middle_never_crashes(tmp_path: Path) -> None:
    """Corruption inside the scan is not detectable from the bytes: a garbled image or ImageReadError."""
    data = bytearray(_jpeg_bytes(np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)))
    data[len(data) // 2 : len(data) // 2 + 40] = b"\x00" * 40
    path = tmp_path / "c.jpg"
    path.write_bytes(bytes(data))
    try:
        out = read_image(path)
    except ImageReadError:
        return
    assert out.shape == (64, 64, 3)


def test_zero_byte(tmp_path: Path) -> None:
    path = tmp_path / "z.jpg"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError, match="empty"):
        read_image(path)
    with pytest.raises(ImageReadError, match="empty"):
        probe_image(path)


def test_text_renamed_jpg(tmp_path: Path) -> None:
    path = tmp_path / "notes.jpg"
    path.write_text("these are field notes, not a photo\n")
    with pytest.raises(ImageReadError, match="not a recognised image format") as info:
        read_image(path)
    assert "these are" in str(info.value)
    with pytest.raises(ImageReadError, match="not a recognised image format"):
        probe_image(path)


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="does not exist"):
        read_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="does not exist"):
        probe_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageReadError, match="directory"):
        read_image(tmp_path)


def test_error_is_agripatch_error(tmp_path: Path) -> None:
    path = tmp_path / "z.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n")
    with pytest.raises(AgripatchError) as info:
        read_image(path)
    assert isinstance(info.value, ImageReadError)
    assert "z.png" in str(info.value)
