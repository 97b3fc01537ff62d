"""Find the photos of a folder and decode them in DataLoader workers, reduced when that loses nothing.

The walk is a generator (``os.scandir``, one directory at a time, names sorted), so nothing is opened
or decoded while listing; the caller keeps only the relative path strings. Decoding happens in
:class:`PhotoDataset`, a map-style dataset over that list, inside DataLoader worker processes: each
item is the (possibly reduced) upright photo, its glance, its decoded and original sizes, or an error
entry for an unreadable file. Batches are collated as lists because photos differ in size.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from agripatch.errors import AgripatchError, ImageReadError
from agripatch.io.images import is_image_path, read_image_with_size
from agripatch.pipeline.cascade import make_glance

__all__ = ["PhotoDataset", "collate_photos", "iter_photos"]


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


class PhotoDataset(Dataset):
    """Decode ``root / paths[i]`` upright, reduced down to ``min_side``, plus its glance input.

    Each item is a dict: ``index``, ``path`` (relative, as given), ``image`` ([3, h, w] uint8 tensor of
    the decoded photo, or None), ``glance`` ([3, S, S] float 0..1, made by the cascade's own
    :func:`~agripatch.pipeline.cascade.make_glance` so results equal an in-process resize),
    ``decoded_hw`` and ``original_hw`` (upright sizes, to map boxes back to the photo's pixels) and
    ``error`` (the reader's reason for an unreadable file). Tensors travel to the main process through
    shared memory.
    """

    def __init__(self, root: str | Path, paths: list[str], *, min_side: int | None, glance_size: int):
        self.root = Path(root)
        self.paths = paths
        self.min_side = min_side
        self.glance_size = glance_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rel = self.paths[index]
        item: dict[str, Any] = {"index": index, "path": rel, "image": None, "glance": None,
                                "decoded_hw": None, "original_hw": None, "error": None}
        if "\n" in rel or "\r" in rel:
            # The CSV/JSONL logs are line-based (a torn last line is dropped on resume): refuse such names.
            item["error"] = "file name contains a line break; rename the file to predict it"
            return item
        try:
            array, original_hw = read_image_with_size(self.root / rel, min_side=self.min_side)
            image = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))
            glance = make_glance([image], self.glance_size)[0]
        except ImageReadError as error:
            item["error"] = error.reason
            return item
        except Exception as error:  # noqa: BLE001 - one odd file must not end a long run
            item["error"] = f"unexpected failure ({type(error).__name__}: {error})"
            return item
        item.update(image=image, glance=glance, decoded_hw=(int(image.shape[1]), int(image.shape[2])),
                    original_hw=(int(original_hw[0]), int(original_hw[1])))
        return item


def collate_photos(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep a batch as the list of item dicts: photo sizes differ and errors carry no tensor."""
    return list(items)
