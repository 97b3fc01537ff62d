"""ImageFolder datasets (`root/<class>/**/<image>`): scanning, the class map file, a torch Dataset.

Scanning never decodes an image; it only lists files, so it is fast on any size of dataset.
"""

from __future__ import annotations

import errno
import json
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from agripatch.errors import DatasetError, ImageReadError
from agripatch.io.atomic import atomic_write_text
from agripatch.io.images import is_image_path, read_image


@dataclass
class FolderIndex:
    """What `scan_image_folder` found: classes with images, samples, and what it skipped and why."""

    root: Path
    classes: list[str]
    samples: list[tuple[Path, int]]
    empty_classes: list[str] = field(default_factory=list)
    ignored: list[Path] = field(default_factory=list)
    loops: list[Path] = field(default_factory=list)


def scan_image_folder(root: str | Path) -> FolderIndex:
    """List `root/<class>/**/<image>` without decoding: sorted classes and samples, skips recorded.

    Hidden files and folders (name starting with '.') are skipped silently; other non-image files,
    and files directly under `root`, are listed in `ignored`; a class folder without any image is
    listed in `empty_classes` and gets no label; a symlink back to one of its own ancestors (or a
    self-referencing link) is listed in `loops` and not followed, so a scan always terminates.
    """
    root = check_dataset_root(root)
    ignored: list[Path] = []
    loops: list[Path] = []
    class_dirs: list[str] = []
    for entry in _sorted_entries(root):
        kind = _entry_kind(entry)
        if kind == "dir":
            class_dirs.append(entry.name)
        elif kind == "loop":
            loops.append(Path(entry.name))
        else:
            ignored.append(Path(entry.name))
    root_key = _dir_key(root)
    loops.extend(Path(name) for name in class_dirs if _dir_key(root / name) == root_key)
    class_dirs = [name for name in class_dirs if Path(name) not in loops]
    per_class: dict[str, list[Path]] = {}
    for name in class_dirs:
        files: list[Path] = []
        _walk(root / name, Path(name), {root_key}, files, ignored, loops)
        per_class[name] = sorted(files, key=lambda p: p.as_posix())
    classes = [name for name in class_dirs if per_class[name]]
    samples = [(path, label) for label, name in enumerate(classes) for path in per_class[name]]
    return FolderIndex(
        root=root,
        classes=classes,
        samples=samples,
        empty_classes=[name for name in class_dirs if not per_class[name]],
        ignored=sorted(ignored, key=lambda p: p.as_posix()),
        loops=sorted(loops, key=lambda p: p.as_posix()),
    )


def check_dataset_root(root: str | Path) -> Path:
    """Return `root` as a Path, or raise DatasetError when it is missing or not a directory."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"dataset folder {str(root)!r} does not exist")
    if not root.is_dir():
        raise DatasetError(f"dataset path {str(root)!r} is not a directory")
    return root


def _walk(
    folder: Path,
    rel: Path,
    ancestors: set[tuple[int, int]],
    files: list[Path],
    ignored: list[Path],
    loops: list[Path],
) -> None:
    """Depth-first listing of `folder` (shown as `rel`), following symlinks but never into a loop."""
    key = _dir_key(folder)
    if key in ancestors:
        loops.append(rel)
        return
    ancestors = ancestors | {key}
    for entry in _sorted_entries(folder):
        child = rel / entry.name
        kind = _entry_kind(entry)
        if kind == "dir":
            _walk(Path(entry.path), child, ancestors, files, ignored, loops)
        elif kind == "loop":
            loops.append(child)
        elif is_image_path(entry.name):
            files.append(child)  # includes dangling links: reading them reports the problem
        else:
            ignored.append(child)


def _sorted_entries(folder: Path) -> list[os.DirEntry[str]]:
    """Non-hidden entries of a folder, sorted by name; DatasetError when it cannot be listed."""
    try:
        with os.scandir(folder) as it:
            entries = [e for e in it if not e.name.startswith(".")]
    except OSError as exc:
        raise DatasetError(f"cannot list folder {str(folder)!r}: {exc.strerror or exc}") from None
    return sorted(entries, key=lambda e: e.name)


def _entry_kind(entry: os.DirEntry[str]) -> str:
    """'dir', 'file' or 'loop' (a symlink whose resolution loops); dangling links count as files."""
    try:
        return "dir" if entry.is_dir(follow_symlinks=True) else "file"
    except OSError as exc:
        return "loop" if exc.errno == errno.ELOOP else "file"


def _dir_key(folder: Path) -> tuple[int, int]:
    """(device, inode) identifying a directory whatever path or symlink reaches it."""
    st = folder.stat()
    return (st.st_dev, st.st_ino)


def save_class_map(classes: Sequence[str], path: str | Path) -> Path:
    """Write the ordered class names as JSON {"classes": [...]} atomically, so labels map back to names."""
    names = list(classes)
    _validate_classes(names, Path(path))
    return atomic_write_text(path, json.dumps({"classes": names}, indent=2, ensure_ascii=False) + "\n")


def load_class_map(path: str | Path) -> list[str]:
    """Read a class map written by `save_class_map`; DatasetError naming the file when it is unusable."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"class map {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"class map {str(path)!r} is not valid JSON: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("classes"), list):
        raise DatasetError(f'class map {str(path)!r} must be a JSON object {{"classes": [names...]}}')
    names = payload["classes"]
    _validate_classes(names, path)
    return list(names)


def _validate_classes(names: list[Any], path: Path) -> None:
    """Class names must be a non-empty list of distinct non-empty strings."""
    if not names:
        raise DatasetError(f"class map {str(path)!r} has no classes")
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise DatasetError(f"class map {str(path)!r}: class names must be non-empty strings, got {bad[0]!r}")
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise DatasetError(f"class map {str(path)!r} repeats class names: {dupes}")


_WARNED: set[str] = set()  # files already warned about in this process


class ImageDataset(Dataset):
    """(image, label) pairs read with `read_image`; an unreadable file is skipped, never fatal.

    When a file cannot be decoded, a warning names it (once per process), the path is added to
    `bad_paths`, and the next readable sample in order (wrapping around) is returned instead, so
    a run never dies on one corrupt photo and stays deterministic.
    """

    def __init__(
        self,
        root: str | Path,
        samples: Sequence[tuple[Path | str, int]],
        transform: Callable[..., dict[str, Any]] | None = None,
        min_side: int | None = None,
        cache_bytes: int = 0,
    ) -> None:
        """`samples` are (path relative to `root`, label); `transform` is albumentations-style.

        ``cache_bytes`` > 0 keeps decoded photos in memory (up to that many bytes), so later epochs skip the
        JPEG decode; useful when the dataset lives in the training process (no loader workers).
        """
        self.root = Path(root)
        self.samples = [(Path(p), int(label)) for p, label in samples]
        self.transform = transform
        self.min_side = min_side
        self.bad_paths: set[Path] = set()
        self.cache_bytes = int(cache_bytes)
        self._cache: dict[Path, np.ndarray] = {}
        self._cached = 0

    def __len__(self) -> int:
        """Number of samples, readable or not."""
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        """Return (transformed image, label) for `index`, or for the next readable sample after it."""
        n = len(self.samples)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} samples")
        for step in range(n):
            rel, label = self.samples[(index + step) % n]
            path = self.root / rel
            if path in self.bad_paths:
                continue
            try:
                image = self._read(path)
            except ImageReadError as exc:
                self._mark_bad(path, exc)
                continue
            return self._apply(image, rel), label
        raise DatasetError(
            f"none of the {n} images under {str(self.root)!r} could be read; "
            f"run `agripatch datasets check {self.root}` to see why"
        )

    def _read(self, path: Path) -> np.ndarray:
        """The decoded photo, from the in-memory cache when it is there (a copy: transforms may write to it)."""
        image = self._cache.get(path)
        if image is not None:
            return image.copy()
        image = read_image(path, min_side=self.min_side)
        if self._cached + image.nbytes <= self.cache_bytes:
            self._cache[path] = image.copy()
            self._cached += image.nbytes
        return image

    def _apply(self, image: np.ndarray, rel: Path) -> Any:
        """Run the albumentations-style transform, if any (``rel``, the sample's path, lets a subclass read the
        photo's companion files, e.g. its lesion mask)."""
        if self.transform is None:
            return image
        return self.transform(image=image)["image"]

    def _mark_bad(self, path: Path, exc: ImageReadError) -> None:
        """Remember an unreadable file and warn about it once per process."""
        self.bad_paths.add(path)
        key = str(path)
        if key not in _WARNED:
            _WARNED.add(key)
            warnings.warn(f"skipping unreadable image {key!r}: {exc.reason}", RuntimeWarning, stacklevel=3)
