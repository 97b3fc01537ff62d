"""Lesion masks for training photos: find a photo's mask file and read it at the decoded photo's size.

A mask is a grayscale image (PNG) of the photo's own aspect ratio, one per annotated photo, where pixels of
at least ``min_value`` mark a lesion (``coffee_bracol/lesion_masks`` codes background 0, leaf 1, lesion 2,
so its ``min_value`` is 2; a plain binary mask uses 1 or 255). It is looked up as ``<folder>/<class>/<name>.png``
(mirroring the dataset) and then as ``<folder>/<name>.png`` (a flat folder, as coffee_bracol ships it).
Photos without a mask simply have none: the lesion loss skips them.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from agripatch.errors import DatasetError

__all__ = ["LesionMasks"]

_ASPECT_TOLERANCE = 0.02  # relative difference of width / height a mask may have from its photo


class LesionMasks:
    """The mask folder of a dataset: ``find`` a photo's mask, ``read`` it as a 0/1 lesion map of a given size."""

    def __init__(self, folder: str | Path, min_value: int = 1):
        self.folder = Path(folder).expanduser()
        if not self.folder.is_dir():
            raise DatasetError(f"lesion mask folder {str(self.folder)!r} does not exist or is not a folder: "
                               "give the folder of mask images (lesions.masks=DIR, or --lesion-masks DIR)")
        if not 1 <= int(min_value) <= 255:
            raise ValueError(f"min_value must be in 1..255, got {min_value}")
        self.min_value = int(min_value)

    def find(self, rel: str | Path) -> Path | None:
        """The mask file of the photo at ``rel`` (relative to the dataset root), or None when it has none."""
        rel = Path(rel)
        for candidate in (self.folder / rel.with_suffix(".png"), self.folder / f"{rel.stem}.png"):
            if candidate.is_file():
                return candidate
        return None

    def read(self, rel: str | Path, height: int, width: int) -> np.ndarray | None:
        """The photo's lesion map resized to ``height`` x ``width``, uint8 0/1, or None without a mask.

        A lesion pixel stays a lesion when the mask is shrunk (area filter, then any coverage counts), so a
        lesion a few pixels wide is not lost in a reduced decode. A mask that cannot be read, or whose aspect
        ratio is not the photo's, is an error naming the file (it was probably made for another photo).
        """
        mask = self._load(rel, height, width)
        return None if mask is None else self._lesion(mask, height, width)

    def read_levels(self, rel: str | Path, height: int, width: int) -> np.ndarray | None:
        """Background, leaf and lesion fractions of every pixel of the photo at ``height`` x ``width``, [3, H, W]
        float32 (area filter), for a mask that also marks the leaf (values between 0 and ``min_value``, as
        coffee_bracol's 0 / 1 / 2); None for a plain lesion mask, which does not say where the leaf is, or a photo
        without a mask."""
        mask = self._load(rel, height, width)
        return None if mask is None else self._levels(mask, height, width)

    def read_targets(self, rel: str | Path, height: int, width: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(levels, lesion)`` from one read of the photo's mask: the :meth:`read_levels` fractions when it marks
        the leaf too (``lesion`` None), else the :meth:`read` lesion map (``levels`` None); both None without one."""
        mask = self._load(rel, height, width)
        if mask is None:
            return None, None
        levels = self._levels(mask, height, width)
        return (levels, None) if levels is not None else (None, self._lesion(mask, height, width))

    def _lesion(self, mask: np.ndarray, height: int, width: int) -> np.ndarray:
        mh, mw = mask.shape
        lesion = (mask >= self.min_value).astype(np.uint8)
        if (mh, mw) == (height, width):
            return lesion
        if mh * mw > height * width:
            shrunk = cv2.resize(lesion * np.uint8(255), (width, height), interpolation=cv2.INTER_AREA)
            return (shrunk > 0).astype(np.uint8)
        return cv2.resize(lesion, (width, height), interpolation=cv2.INTER_NEAREST)

    def _levels(self, mask: np.ndarray, height: int, width: int) -> np.ndarray | None:
        leaf = (mask > 0) & (mask < self.min_value)
        if not leaf.any():
            return None
        levels = [mask == 0, leaf, mask >= self.min_value]
        return np.stack([cv2.resize(level.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
                         for level in levels])

    def _load(self, rel: str | Path, height: int, width: int) -> np.ndarray | None:
        """The photo's mask as stored (grayscale), checked against the photo's ``height`` x ``width``; None without
        one. A mask that cannot be read, or whose aspect ratio is not the photo's, is an error naming the file."""
        path = self.find(rel)
        if path is None:
            return None
        mask = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if mask is None:
            raise DatasetError(f"cannot read lesion mask {str(path)!r}: re-export it as a grayscale PNG")
        mh, mw = mask.shape
        if abs(mw / mh - width / height) > _ASPECT_TOLERANCE * (width / height):
            raise DatasetError(f"lesion mask {str(path)!r} is {mw}x{mh} but its photo {str(rel)!r} is "
                               f"{width}x{height} (as decoded): a mask must have its photo's aspect ratio")
        return mask

    def count(self, rels: list[str | Path]) -> int:
        """How many of the photos ``rels`` have a mask."""
        return sum(self.find(rel) is not None for rel in rels)
