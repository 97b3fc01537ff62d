"""The project's one image reader: any common image file -> upright HxWx3 uint8 RGB array.

Decoders, measured on the iBean 500x500 JPEGs (one thread, shared 2-core machine): OpenCV decodes a
JPEG in ~1.45 ms, Pillow in ~2.0-2.9 ms, a Pillow header parse (size, mode, EXIF) costs ~0.15 ms, and
`read_image` as a whole ~1.6 ms (~1.3 ms with min_side=224, a 1/2 decode). So:

* Pillow always parses the header first (lazy open, no pixels): format, mode, stored size and the
  EXIF orientation. That is what the decompression-bomb guard and `read_image_with_size` use.
* Baseline/progressive JPEGs in YCbCr or grayscale whose bytes end with the EOI marker are decoded by
  ``cv2.imdecode`` (with ``IMREAD_REDUCED_COLOR_{2,4,8}`` for reduced decodes). A JPEG without EOI
  (truncated, or with trailing bytes after the image) goes to Pillow, which raises on truncation where
  some OpenCV builds silently return a half-grey image, and which keeps libjpeg's "Premature end of
  JPEG file" off stderr. (Corruption *inside* a complete file cannot be seen from the bytes; OpenCV's
  libjpeg then prints one "Corrupt JPEG data" line for that file, which cannot be silenced safely.)
* 16-bit PNG/TIFF are decoded by ``cv2.imdecode(IMREAD_UNCHANGED)`` at full depth and scaled to 8 bit
  with ``round(v / 257)`` (Pillow clips ``I;16`` to 255 and truncates 16-bit RGB to the high byte).
* Everything else (CMYK JPEG, palette, RGBA, TIFF, BMP, WebP, ...) is decoded by Pillow.
* EXIF orientation is applied by this module, with numpy, after every decoder (OpenCV is told to
  ignore it), so every path rotates identically and agrees with the reported original size.
* Transparency (RGBA, LA, palette with a transparent index) is composited on white: pixels under a
  fully transparent alpha hold arbitrary colours that would otherwise leak into the classifier.

Importing this module disables Pillow's own global decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``):
it would also block header-only probes of large photos, is not thread-safe to toggle per call, and is
replaced by the ``max_pixels`` guard below, which counts the pixels actually decoded.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from agripatch.errors import ImageReadError
from agripatch.io.orientation import turn_with_size

Image.MAX_IMAGE_PIXELS = None  # replaced by `max_pixels`, see the module docstring

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"})
DEFAULT_MAX_PIXELS = 180_000_000

_JPEG_MAGIC = b"\xff\xd8\xff"  # every JPEG (and MPO) stream starts so; the one format decoded reduced
_REDUCTIONS = (8, 4, 2)
_CV2_REDUCED_BITS = {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
                     8: cv2.IMREAD_REDUCED_GRAYSCALE_8}  # OR-ed with a colour flag: IMREAD_REDUCED_COLOR_n
_CV2_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.11 decodes straight to RGB
_EXIF_ORIENTATION = 0x0112


def is_image_path(path: str | Path) -> bool:
    """True when `path` has an image extension (any case) and is not a hidden file, so scans skip junk."""
    name = Path(path).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS


def probe_image(path: str | Path) -> tuple[int, int]:
    """Return the upright (height, width) of an image from its header only, for cheap size checks."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = _orientation(im)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - every decoder failure becomes one error type
        raise ImageReadError(path, _reason(exc, _head(path))) from exc
    return _oriented_hw(height, width, orientation)


def read_image(
    path: str | Path, *, min_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, turns: int = 0
) -> np.ndarray:
    """Decode an image file to an upright HxWx3 uint8 RGB C-contiguous array.

    `min_side` allows a reduced JPEG decode (1/2, 1/4 or 1/8) whose shorter side stays >= min_side,
    for callers that resize down anyway; other formats are decoded at full size. `max_pixels` caps
    the number of decoded pixels (decompression-bomb guard). ``turns`` quarter turns clockwise follow the upright
    decode (:mod:`agripatch.io.orientation`: photos read in the model's orientation). Raises ImageReadError on any
    failure.
    """
    return read_image_with_size(path, min_side=min_side, max_pixels=max_pixels, turns=turns)[0]


def read_image_with_size(
    path: str | Path, *, min_side: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS, turns: int = 0
) -> tuple[np.ndarray, tuple[int, int]]:
    """Like `read_image`, also returning the original upright (H, W), turned like the pixels, to map
    reduced-image boxes back."""
    if min_side is not None and (not isinstance(min_side, int) or min_side < 1):
        raise ValueError(f"min_side must be a positive int or None, got {min_side!r}")
    if not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
    path = Path(path)
    data = _read_bytes(path)
    try:
        array, hw = _decode(path, data, min_side, max_pixels)
    except ImageReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - never let a cv2/PIL exception escape
        raise ImageReadError(path, _reason(exc, data[:16])) from exc
    return turn_with_size(array, hw, turns)


def decodes_reduced(path: str | Path) -> bool:
    """Whether `read_image` can decode this file reduced (it is a JPEG): other formats always come at full
    size, so a caller holding a full-size decode of one need not decode it again for a smaller size."""
    try:
        with open(path, "rb") as handle:
            return handle.read(3) == _JPEG_MAGIC
    except OSError:
        return False


def jpeg_reduction(height: int, width: int, min_side: int | None) -> int:
    """Largest JPEG scale-down factor (1, 2, 4 or 8) whose decoded shorter side stays >= `min_side`."""
    if min_side is None:
        return 1
    short = min(height, width)
    for factor in _REDUCTIONS:
        if math.ceil(short / factor) >= min_side:
            return factor
    return 1


def reduced_hw(height: int, width: int, min_side: int | None) -> tuple[int, int]:
    """The upright (H, W) that `read_image(min_side=...)` gives a JPEG of upright size (height, width): each side
    divided by :func:`jpeg_reduction`'s factor, rounded up (libjpeg's scaled size). What a caller needs to place
    boxes on a decode it has not made yet."""
    factor = jpeg_reduction(int(height), int(width), min_side)
    return math.ceil(int(height) / factor), math.ceil(int(width) / factor)


def _decode(path: Path, data: bytes, min_side: int | None, max_pixels: int) -> tuple[np.ndarray, tuple[int, int]]:
    """Parse the header, apply the bomb guard, pick a decoder, and orient the result."""
    im = Image.open(io.BytesIO(data))
    width, height = im.size
    orientation = _orientation(im)
    is_jpeg = data[:3] == _JPEG_MAGIC
    factor = jpeg_reduction(height, width, min_side) if is_jpeg else 1
    decoded = math.ceil(width / factor) * math.ceil(height / factor)
    if decoded > max_pixels:
        raise ImageReadError(path, _bomb_reason(width, height, decoded, max_pixels, is_jpeg))
    array = None
    if is_jpeg and im.mode in ("L", "RGB") and _ends_with_eoi(data):
        array = _decode_cv2_jpeg(data, factor)
    elif not is_jpeg and _is_16bit(im):
        array = _decode_cv2_16bit(data)
    if array is None:  # the general path, and the fallback when OpenCV declines a file
        array = _decode_pil(im, factor)
    array = _apply_orientation(array, orientation)
    return np.ascontiguousarray(array), _oriented_hw(height, width, orientation)


def _decode_cv2_jpeg(data: bytes, factor: int) -> np.ndarray | None:
    """OpenCV JPEG decode (optionally reduced), EXIF ignored; None when OpenCV cannot decode it."""
    colour = cv2.IMREAD_COLOR if _CV2_RGB is None else _CV2_RGB
    flags = colour | _CV2_REDUCED_BITS[factor] | cv2.IMREAD_IGNORE_ORIENTATION
    try:
        out = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    except cv2.error:
        return None
    if out is None or out.ndim != 3 or out.shape[2] != 3:
        return None
    return out if _CV2_RGB is not None else cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def _decode_cv2_16bit(data: bytes) -> np.ndarray | None:
    """Decode a 16-bit PNG/TIFF at full depth and scale to 8-bit RGB; None when OpenCV cannot."""
    try:
        raw = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)  # ignores EXIF
    except cv2.error:
        return None
    if raw is None or raw.dtype != np.uint16:
        return None
    raw = _to_uint8(raw)
    if raw.ndim == 2:
        return np.repeat(raw[:, :, None], 3, axis=2)
    if raw.shape[2] == 3:
        return cv2.cvtColor(raw, cv2.COLOR_BGR2RGB)
    if raw.shape[2] == 4:
        return _composite_on_white(cv2.cvtColor(raw, cv2.COLOR_BGRA2RGBA))
    return None


def _decode_pil(im: Image.Image, factor: int) -> np.ndarray:
    """Pillow decode (JPEG draft-reduced by `factor`) to RGB uint8, stored orientation."""
    if factor > 1:
        width, height = im.size
        im.draft(None, (max(1, width // factor), max(1, height // factor)))
    im.load()  # raises OSError("image file is truncated") on short files
    mode = im.mode
    if mode.startswith("I;16") or mode == "I":
        gray = _to_uint8(np.clip(np.asarray(im), 0, 65535).astype(np.uint16))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        raise ValueError("32-bit float images are not supported; convert to 8- or 16-bit first")
    if mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    elif mode == "P":
        im = im.convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return _composite_on_white(np.asarray(im.convert("RGBA")))
    if im.mode == "RGB":
        return np.asarray(im)
    return np.asarray(im.convert("RGB"))


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Scale 16-bit values to 8 bit by rounding v * 255 / 65535 (= v / 257), never clipping."""
    return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _composite_on_white(rgba: np.ndarray) -> np.ndarray:
    """Blend an RGBA uint8 image over a white background, rounding to nearest."""
    rgb = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:4].astype(np.uint32)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Rotate/flip a stored-orientation array upright, following EXIF tag 274 (same as PIL exif_transpose)."""
    if orientation == 2:
        return array[:, ::-1]
    if orientation == 3:
        return array[::-1, ::-1]
    if orientation == 4:
        return array[::-1]
    if orientation == 5:
        return array.transpose(1, 0, 2)
    if orientation == 6:
        return np.rot90(array, k=-1)
    if orientation == 7:
        return array[::-1, ::-1].transpose(1, 0, 2)
    if orientation == 8:
        return np.rot90(array, k=1)
    return array


def _orientation(im: Image.Image) -> int:
    """EXIF orientation 1..8 of an opened image; 1 when absent, invalid, or the EXIF block is broken.

    Never decodes pixels: for PNG only an eXIf chunk before the image data counts (Pillow would
    otherwise decode the whole image to look for one after it), in probes and reads alike.
    """
    if im.format == "PNG" and "exif" not in im.info:
        return 1
    try:
        value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # noqa: BLE001 - broken metadata must not make a readable image unreadable
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _oriented_hw(height: int, width: int, orientation: int) -> tuple[int, int]:
    """(H, W) after orientation: tags 5-8 swap the axes."""
    return (width, height) if orientation >= 5 else (height, width)


def _is_16bit(im: Image.Image) -> bool:
    """True when Pillow reports a 16-bit-per-channel layout (mode I;16* or a ';16' raw mode)."""
    if im.mode.startswith("I;16"):
        return True
    for tile in im.tile:
        args = tile[3]
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ";16" in rawmode:
            return True
    return False


def _ends_with_eoi(data: bytes) -> bool:
    """True when JPEG bytes end with the EOI marker (ignoring trailing NUL padding): not truncated."""
    return data[-64:].rstrip(b"\x00").endswith(b"\xff\xd9")


def _check_file(path: Path) -> int:
    """Size in bytes of an existing, non-empty regular file; ImageReadError otherwise."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ImageReadError(path, "file does not exist") from None
    except OSError as exc:
        raise ImageReadError(path, f"cannot access the file ({exc.strerror or exc})") from None
    if path.is_dir():
        raise ImageReadError(path, "is a directory, not an image file")
    if stat.st_size == 0:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return stat.st_size


def _read_bytes(path: Path) -> bytes:
    """All bytes of the file, with missing/empty/unreadable files turned into ImageReadError."""
    _check_file(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageReadError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if not data:
        raise ImageReadError(path, "file is empty (0 bytes)")
    return data


def _head(path: Path) -> bytes:
    """First bytes of a file for error messages (empty when unreadable)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(16)
    except OSError:
        return b""


def _reason(exc: BaseException, head: bytes) -> str:
    """A human sentence for a decoder exception."""
    text = str(exc)
    if isinstance(exc, UnidentifiedImageError):
        return f"not a recognised image format (file starts with {head[:12]!r})"
    if "truncated" in text.lower():
        return "file is truncated (incomplete download or copy?)"
    if isinstance(exc, MemoryError):
        return "out of memory while decoding; lower max_pixels or pass min_side for a reduced decode"
    if isinstance(exc, ValueError):
        return text
    return f"decoder failed ({type(exc).__name__}: {text})"


def _bomb_reason(width: int, height: int, decoded: int, max_pixels: int, is_jpeg: bool) -> str:
    """Explain a decompression-bomb refusal and how to lift it."""
    hint = " or pass min_side= for a reduced JPEG decode" if is_jpeg else ""
    return (
        f"image is {width}x{height} and would decode to {decoded:,} pixels, more than "
        f"max_pixels={max_pixels:,} (decompression-bomb guard); pass a larger max_pixels= "
        f"if you trust this file{hint}"
    )
