"""Project exceptions: one family, each naming the file or key at fault and how to fix it."""

from __future__ import annotations

from pathlib import Path


class AgripatchError(Exception):
    """Base of every error agripatch raises on purpose; the CLI prints these without a traceback."""


class ImageReadError(AgripatchError):
    """A file could not be decoded as an image (missing, empty, truncated, not an image, too large)."""

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"cannot read image {str(self.path)!r}: {reason}")


class DatasetError(AgripatchError):
    """A dataset folder, split file or class map is unusable (empty, one class, mismatched)."""


class RecipeError(AgripatchError):
    """A recipe is invalid: unknown key, wrong type, or a name that does not exist."""


class WeightsError(AgripatchError):
    """Pretrained weights are missing, corrupt, or do not fit the architecture."""


class CheckpointError(AgripatchError):
    """A model checkpoint is missing, corrupt, or from another architecture."""


class ReviewError(AgripatchError):
    """A team review cannot go on: an output folder that is missing or not predict folder's, an unreachable or
    foreign review database."""
