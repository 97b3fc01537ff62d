"""Text in and out: file names that can always be written, and dataset text files read with clear errors."""

from __future__ import annotations

from pathlib import Path

from agripatch.errors import DatasetError

__all__ = ["read_dataset_text", "text"]


def text(value: str) -> str:
    """A str that encodes to UTF-8: undecodable file-name bytes (surrogates) become ``\\xNN`` escapes."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_dataset_text(path: Path, what: str, encoding: str = "utf-8") -> str:
    """The text of a dataset file (split file, corrections file, ...); a missing or unreadable one is one
    DatasetError naming ``what`` and the file."""
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise DatasetError(f"{what} {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {what} {str(path)!r}: {exc}") from None
