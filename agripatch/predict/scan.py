"""Find the photos of a folder for `predict folder`.

The walk is a generator (``os.scandir``, one directory at a time, names sorted), so nothing is opened
or decoded while listing; the caller keeps only the relative path strings and decodes them with
:class:`agripatch.data.photos.PhotoDataset` in DataLoader workers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from agripatch.errors import AgripatchError
from agripatch.io.images import is_image_path

__all__ = ["iter_photos"]


def iter_photos(root: str | Path, *, recursive: bool = False, exclude: Path | None = None) -> Iterator[str]:
    """Yield the image files under ``root`` as posix paths relative to it, sorted, lazily.

    Hidden files and folders (leading ``.``) are skipped, so are names without an image extension and,
    when given, the ``exclude`` folder (the output folder when it lies inside the input, so a re-run
    never classifies its own crops). Symlinked folders are not followed (no loops); symlinked files are.
    Order: each folder's files by name, then its sub-folders by name (depth first), so the listing is
    the same on every run, which resume relies on.
    """
    root = Path(root)
    if not root.is_dir():
        raise AgripatchError(f"input folder {str(root)!r} does not exist or is not a folder")
    skip = exclude.resolve() if exclude is not None else None
    yield from _walk(root, "", recursive, skip)


def _walk(folder: Path, prefix: str, recursive: bool, skip: Path | None) -> Iterator[str]:
    try:
        with os.scandir(folder) as entries:
            listed = sorted(entries, key=lambda e: e.name)
    except OSError:
        return
    subfolders = []
    for entry in listed:
        if entry.name.startswith("."):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                subfolders.append(entry)
            elif entry.is_file() and is_image_path(entry.name):
                yield prefix + entry.name
        except OSError:
            continue
    if not recursive:
        return
    for entry in subfolders:
        path = Path(entry.path)
        if skip is not None and path.resolve() == skip:
            continue
        yield from _walk(path, f"{prefix}{entry.name}/", recursive, skip)
