"""Generated blocks in the READMEs: a benchmark rewrites only the text between its own markers, so every number
there comes from a stored JSON."""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_block"]


def write_block(readme: Path, block: str, name: str = "results") -> None:
    """Replace the block between ``<!-- {name}:start -->`` and ``<!-- {name}:end -->`` of ``readme`` with ``block``."""
    text = readme.read_text()
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start not in text or end not in text:
        raise SystemExit(f"{readme} has no {start} ... {end} block to regenerate")
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    readme.write_text(f"{head}{start}\n{block}\n{end}{tail}")
