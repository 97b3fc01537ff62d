"""What every dataset converter shares: the images it plans to place (:class:`Item`, :class:`Plan`), class
folders read from a download, and the error that shows the layout a card expects beside what was found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agripatch.data.cards import DatasetCard
from agripatch.errors import DatasetError
from agripatch.io.images import is_image_path

__all__ = ["Item", "Plan", "class_folders", "describe", "is_image", "items_of", "layout_error"]


@dataclass(frozen=True)
class Item:
    """One image to place: `src` goes to `out/<label>/<name>`; split None means `make_splits` assigns it."""

    src: Path
    label: str
    split: str | None
    origin: str  # the published split folder it came from ("" when the layout has none)
    name: str


@dataclass
class Plan:
    """What a converter found: the items, the splits to carve from the unsplit ones, optional class names."""

    items: list[Item]
    carve: tuple[str, ...]  # splits that make_splits carves from the items whose split is None
    class_names: dict[str, str] | None = None


def describe(src: Path, limit: int = 12) -> str:
    """What is at `src`, for error messages: its top-level entries, folders marked with '/'."""
    if not src.exists():
        return "nothing: the path does not exist"
    if not src.is_dir():
        return "a file, not a folder"
    entries = sorted(src.iterdir())
    if not entries:
        return "an empty folder"
    shown = [e.name + ("/" if e.is_dir() else "") for e in entries[:limit]]
    more = f" ... and {len(entries) - limit} more" if len(entries) > limit else ""
    return ", ".join(shown) + more


def layout_error(card: DatasetCard, src: Path, problem: str) -> DatasetError:
    """A one-message error: the problem, the layout the card expects, and what is at ``src``."""
    layout = "\n".join("    " + line for line in card.raw_layout.rstrip().splitlines())
    return DatasetError(
        f"{card.name}: {problem}\nexpected the published layout:\n{layout}\nfound in {str(src)!r}: {describe(src)}"
    )


def is_image(path: Path) -> bool:
    """An image file (by extension) that exists."""
    return is_image_path(path) and path.is_file()


def class_folders(root: Path) -> dict[str, list[Path]]:
    """`root/<class>/<image>`: class name -> its images (sorted), for the sub-folders that hold images directly."""
    found: dict[str, list[Path]] = {}
    if not root.is_dir():
        return found
    for child in sorted(root.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            images = sorted(p for p in child.iterdir() if is_image(p))
            if images:
                found[child.name] = images
    return found


def items_of(folders: dict[str, list[Path]], split: str | None, origin: str) -> list[Item]:
    """Every image of ``folders`` (class -> images) as an :class:`Item` of ``split`` from the published ``origin``."""
    return [Item(p, label, split, origin, p.name) for label, paths in folders.items() for p in paths]
