"""The output folder of `predict folder`: safe names, confined paths, crash-safe appends, resume state.

* Every path written goes through :meth:`OutputDir.path`, which resolves it (symlinks included) and
  refuses anything outside OUT, so a hostile photo or class name can never write elsewhere.
* ``predictions.csv`` / ``predictions.jsonl`` / ``errors.csv`` are append logs: whole lines, flushed and
  fsynced per batch; a SIGKILL loses at most the batch in flight, and a line it cut in half is dropped
  when the next run opens the log (:func:`repair_log`).
* ``run.json`` records the model file's sha256 and the settings, so a re-run resumes only with the same
  model (and the same thresholds), and ``--overwrite`` removes exactly the files this tool writes.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agripatch.errors import AgripatchError
from agripatch.io.atomic import atomic_write_text
from agripatch.io.sources import file_sha256
from agripatch.io.text import text

__all__ = [
    "AppendLog",
    "CSV_COLUMNS",
    "ERROR_COLUMNS",
    "OutputDir",
    "file_sha256",
    "read_csv_rows",
    "read_jsonl",
    "repair_log",
    "safe_label",
    "safe_stem",
    "text",
]

RUN_FORMAT = "agripatch-predict-folder/3"  # /2: predictions.csv gained the decision column; /3: severity
CSV_COLUMNS = ["path", "label", "decision", "confidence", "topk", "stage", "macs", "width", "height", "boxes", "severity",
               "severity_class"]
ERROR_COLUMNS = ["path", "reason"]

#: Files at OUT's top level that this tool writes (and ``--overwrite`` removes).
OWN_FILES = ("predictions.csv", "predictions.jsonl", "errors.csv", "index.html", "summary.json", "run.json")
_CROP_NAME = re.compile(r"^patch\d+_.*\.jpg$")
_UNSAFE = re.compile(r"[^\w.\-]+", re.UNICODE)


def _sanitise(value: str, max_bytes: int) -> str:
    """Letters, digits, ``_ . -`` only (Unicode letters kept, NFC), no leading dots, no ``..``, at most
    ``max_bytes`` bytes of UTF-8 (file systems limit a name to 255 bytes, not characters)."""
    value = unicodedata.normalize("NFC", text(value))
    value = "".join(ch if ch.isprintable() else "_" for ch in value)
    value = _UNSAFE.sub("_", value)
    value = re.sub(r"\.{2,}", "_", value).strip("._ ")
    value = value.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
    return value.rstrip("._ ")


def safe_stem(relative: str) -> str:
    """A unique, file-system-safe name for a photo's crops folder and overlay: ``<sanitised>-<hash8>``.

    The relative path (separators and extension included) is sanitised for readability; the first 8 hex
    digits of its sha1 make the name unique even when two paths sanitise alike (``a b.jpg``/``a_b.jpg``)
    or differ only in case, and keep it stable across runs (resume rewrites the same files).
    """
    digest = hashlib.sha1(text(relative).encode("utf-8")).hexdigest()[:8]
    readable = _sanitise(relative.replace("/", "__"), 80) or "photo"
    return f"{readable}-{digest}"


def safe_label(name: str, index: int) -> str:
    """A class name made safe for a file name (``/``, ``..``, control characters removed); never empty."""
    return _sanitise(name, 40) or f"class{index}"


class OutputDir:
    """OUT, with every write confined to it."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def path(self, relative: str) -> Path:
        """``OUT / relative`` after resolving symlinks; AgripatchError if it escapes OUT."""
        target = (self.root / relative).resolve()
        if target != self.root and self.root not in target.parents:
            raise AgripatchError(f"refusing to write {str(target)!r}: it lies outside the output folder {str(self.root)!r}")
        return target

    def write_text(self, relative: str, content: str) -> Path:
        """Write a whole text file atomically inside OUT."""
        target = self.path(relative)
        atomic_write_text(target, content)
        return target

    def clear(self) -> None:
        """Remove what this tool wrote (top-level files, crops ``patch*.jpg``, overlays ``*.jpg``), nothing else."""
        for name in OWN_FILES:
            self.path(name).unlink(missing_ok=True)
        crops = self.path("crops")
        if crops.is_dir():
            for folder in crops.iterdir():
                if folder.is_dir() and not folder.is_symlink():
                    for file in folder.iterdir():
                        if _CROP_NAME.match(file.name) and file.is_file():
                            file.unlink()
                    _remove_if_empty(folder)
            _remove_if_empty(crops)
        overlays = self.path("overlays")
        if overlays.is_dir():
            for file in overlays.iterdir():
                if file.suffix == ".jpg" and file.is_file():
                    file.unlink()
            _remove_if_empty(overlays)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def repair_log(path: Path) -> None:
    """Drop a trailing partial line (no final newline) that a kill mid-write may have left."""
    if not path.exists():
        return
    size = path.stat().st_size
    if size == 0:
        return
    with open(path, "rb+") as handle:
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return
        # Scan back for the last newline, a block at a time.
        end, keep = size, 0
        while end > 0:
            start = max(0, end - 65536)
            handle.seek(start)
            block = handle.read(end - start)
            cut = block.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        handle.truncate(keep)
        handle.flush()
        os.fsync(handle.fileno())


class AppendLog:
    """An append-only log of whole lines, made durable (flush + fsync) per :meth:`append`."""

    def __init__(self, path: Path, header: str | None = None):
        self.path = path
        repair_log(path)
        new = not path.exists() or path.stat().st_size == 0
        self._handle = open(path, "a", encoding="utf-8", newline="")
        if new and header is not None:
            self.append([header])

    def append(self, lines: Iterable[str]) -> None:
        """Write complete lines (each must end with a newline) in one write, then flush and fsync."""
        chunk = "".join(lines)
        if not chunk:
            return
        if not chunk.endswith("\n"):
            raise ValueError("AppendLog lines must end with a newline")
        self._handle.write(chunk)
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        """Close the file (idempotent)."""
        if not self._handle.closed:
            self._handle.close()

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def csv_line(values: list[Any]) -> str:
    """One CSV record as a string ending in a newline (quoting what needs it)."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(values)
    return buffer.getvalue()


def csv_text(header: list[str], rows: Iterable[list[Any]]) -> str:
    """A whole CSV file's text."""
    return csv_line(header) + "".join(csv_line(row) for row in rows)


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV log as dicts (empty when the file is absent)."""
    if not path.exists():
        return []
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL log; a line that does not parse (torn write) is skipped."""
    if not path.exists():
        return
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if not line:
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError:
                continue
