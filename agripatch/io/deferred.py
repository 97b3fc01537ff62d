"""A photo file whose larger decode waits until the cascade reads its patches.

The cascade decodes each photo twice when the glance's reduced decode differs from the one the patches are cut
from: a 500-px iBean photo is decoded at 1/2 for the 160-px glance (as training decoded it) and at full size for the
patches. Most photos stop at the glance and never need the second decode (398 of 600 iBean photos with the `ibean`
recipe). :func:`agripatch.io.sources.load_item` with ``defer_full`` gives such a photo a :class:`DeferredPhoto`
instead of its pixels; the cascade core asks :func:`pixels` for them only when a photo reaches a patch, the
full-image exit or the symptom map. The decode is the same call with the same arguments, so every prediction is
the same (benchmarks/README.md, "Decoding only what the cascade reads").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from agripatch.errors import ImageReadError
from agripatch.io.images import read_image_with_size, reduced_hw

__all__ = ["DeferredPhoto", "pixels"]


class DeferredPhoto:
    """The decode ``read_image(path, min_side=min_side)`` of a photo of upright size ``original_hw``, made on the
    first :meth:`array` call and kept. ``hw`` and ``shape`` (HWC, like the array's) are known before it. With
    ``turns``, the decode is turned that many quarter turns clockwise, and ``original_hw`` is the turned size."""

    __slots__ = ("path", "original_hw", "min_side", "turns", "hw", "_array")

    def __init__(self, path: str | Path, original_hw: tuple[int, int], min_side: int | None, turns: int = 0):
        self.path = str(path)
        self.original_hw = (int(original_hw[0]), int(original_hw[1]))
        self.min_side = min_side
        self.turns = int(turns)
        self.hw = reduced_hw(*self.original_hw, min_side)
        self._array: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int, int]:
        """(H, W, 3) of the decode, as an HWC array's ``shape``."""
        return self.hw[0], self.hw[1], 3

    @property
    def decoded(self) -> bool:
        """Whether :meth:`array` has run (the pixels are held)."""
        return self._array is not None

    def array(self) -> np.ndarray:
        """The decoded HWC uint8 RGB pixels; raises :class:`~agripatch.errors.ImageReadError` naming the file when
        it no longer decodes to the size promised (it was replaced while being read)."""
        if self._array is None:
            array, original_hw = read_image_with_size(self.path, min_side=self.min_side, turns=self.turns)
            if tuple(original_hw) != self.original_hw or array.shape[:2] != self.hw:
                raise ImageReadError(self.path, f"the file changed while it was being read (now {array.shape[1]}x"
                                                f"{array.shape[0]} px, expected {self.hw[1]}x{self.hw[0]}); run the "
                                                "same command again")
            self._array = array
        return self._array

    def __repr__(self) -> str:
        return f"DeferredPhoto({self.path!r}, {self.hw[1]}x{self.hw[0]} px, decoded={self.decoded})"


def pixels(image: Any) -> Any:
    """A photo's pixels: a :class:`DeferredPhoto` decoded (HWC uint8), anything else (array, tensor) as it is."""
    return image.array() if isinstance(image, DeferredPhoto) else image
