"""File names as text that can always be written: undecodable bytes become visible escapes."""

from __future__ import annotations

__all__ = ["text"]


def text(value: str) -> str:
    """A str that encodes to UTF-8: undecodable file-name bytes (surrogates) become ``\\xNN`` escapes."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
