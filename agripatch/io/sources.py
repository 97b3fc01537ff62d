"""A photo from wherever a user has it (a file, a PIL image, an array) as an item the cascade can take, with
the same rules for every backend: upright HWC uint8 RGB, reduced decoding of large files, and an ``error``
entry instead of an exception for an unreadable one. The torch items (agripatch.data.photos) and the
torch-free runtime's (agripatch.runtime.photos) both come from :func:`load_item`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agripatch.errors import ImageReadError
from agripatch.io.deferred import DeferredPhoto
from agripatch.io.glance import PhotoFile, glance_array, glance_pixels
from agripatch.io.images import DEFAULT_MAX_PIXELS, read_image_with_size, reduced_hw
from agripatch.io.orientation import quarter_turns, turn, turn_with_size

__all__ = ["file_sha256", "in_memory", "load_item", "photo_files"]


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (model files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def in_memory(source: Any) -> np.ndarray:
    """An HWC uint8 array or a PIL image (EXIF orientation applied) as HWC uint8 RGB."""
    if not isinstance(source, np.ndarray):
        from PIL import ImageOps

        source = np.asarray(ImageOps.exif_transpose(source).convert("RGB"))
    if source.ndim != 3 or source.shape[2] != 3 or source.dtype != np.uint8:
        raise ImageReadError("<array>", f"in-memory photos must be HxWx3 uint8 RGB, got {source.shape} {source.dtype}")
    return source


def load_item(source: Any, finish: Callable[[np.ndarray, np.ndarray | None], dict[str, Any]], *, index: int = 0,
              path: str | None = None, label: int | None = None, min_side: int | None = None,
              glance_size: int | None = None, to_array: Callable[[Any], np.ndarray] = in_memory,
              defer_full: bool = False, orientation: str | None = None) -> dict[str, Any]:
    """The item dict of one photo: ``index``, ``path``, ``label``, ``decoded_hw``, ``original_hw``, ``error``,
    ``file`` (the file read, a str; None for an in-memory photo), ``turns`` (quarter turns clockwise that brought
    the photo to the model's ``orientation``, :mod:`agripatch.io.orientation`; sizes and pixels are the turned
    photo's), plus what ``finish(hwc_uint8, glance)`` returns
    (the backend's ``image`` and ``glance``). ``glance`` (None without ``glance_size``) is the [3, S, S] float32
    glance, made from the file as training decodes it for that size (:func:`agripatch.io.glance.whole_photo`), or
    from the in-memory array. ``reduced`` (only when it is another decode than ``image``'s pixels) is the decode
    the glance was made from, kept for :class:`~agripatch.io.glance.PhotoFile` (:func:`photo_files`).

    A path is decoded (reduced down to ``min_side`` when lossless); anything else goes through ``to_array``.
    With ``defer_full`` (and a ``glance_size``), a file is decoded for its glance only, and when the ``min_side``
    decode would be another, larger one, ``image`` is a :class:`~agripatch.io.deferred.DeferredPhoto` that makes it
    when the cascade first reads its pixels (``decoded_hw`` is its size all the same).
    A name with a line break is refused (outputs are line-based logs), and any failure becomes ``error``.
    """
    if path is None and isinstance(source, (str, Path)):
        path = str(source)
    item: dict[str, Any] = {"index": index, "path": path, "label": label, "image": None, "glance": None,
                            "decoded_hw": None, "original_hw": None, "error": None, "turns": 0,
                            "file": str(source) if isinstance(source, (str, Path)) else None}
    if path is not None and ("\n" in path or "\r" in path):
        item["error"] = "file name contains a line break; rename the file to read it"
        return item
    try:
        deferred = None
        if isinstance(source, (str, Path)):
            smaller = defer_full and glance_size and (min_side is None or glance_size < min_side)
            first = glance_size if smaller else min_side
            array, original_hw = read_image_with_size(source, min_side=first)
            item["turns"] = turns = quarter_turns(original_hw, orientation)
            array, original_hw = turn_with_size(array, original_hw, turns)
            file = PhotoFile(str(source), (int(original_hw[0]), int(original_hw[1])), turns=turns)
            if smaller and array.shape[:2] not in (file.original_hw, reduced_hw(*file.original_hw, min_side)):
                # the glance's decode is not the cascade's
                deferred = DeferredPhoto(source, file.original_hw, min_side, turns)
                if deferred.hw[0] * deferred.hw[1] > DEFAULT_MAX_PIXELS:
                    deferred.array()  # refused now by the decompression-bomb guard, as the eager decode would be
        else:
            array, file = to_array(source), None
            item["turns"] = turns = quarter_turns(array.shape[:2], orientation)
            array = turn(array, turns)
            original_hw = array.shape[:2]
        glance_from = None if glance_size is None else glance_pixels(array, glance_size, file)
        item.update(finish(array, None if glance_from is None else glance_array(glance_from, glance_size)))
        if deferred is not None:
            item["image"] = deferred
            item["reduced"] = array  # the glance's decode: the symptom map may read it without the deferred one
        elif glance_from is not None and glance_from is not array:
            item["reduced"] = glance_from  # a second, reduced decode made for the glance (PhotoFile.reduced)
    except ImageReadError as error:
        item["error"] = error.reason
        return item
    except Exception as error:  # noqa: BLE001 - one odd file must not end a long run
        item["error"] = f"unexpected failure ({type(error).__name__}: {error})"
        return item
    decoded_hw = array.shape[:2] if deferred is None else deferred.hw
    item.update(decoded_hw=(int(decoded_hw[0]), int(decoded_hw[1])),
                original_hw=(int(original_hw[0]), int(original_hw[1])))
    return item


def photo_files(items: Any) -> list[PhotoFile | None]:
    """Each readable item's :class:`~agripatch.io.glance.PhotoFile` (None for an in-memory photo, or an item from
    before items carried their file): what the full-image exit makes its input from."""
    return [PhotoFile(item["file"], tuple(item["original_hw"]), item.get("reduced"), item.get("turns", 0))
            if item.get("file") else None for item in items]
