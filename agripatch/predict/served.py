"""A ``predict folder`` output as the review server serves it: its photos least sure first, its files, its rules.

:meth:`ServedOutput.load` refuses, with the fix, a folder that is missing, is not an output of
``agripatch predict folder`` (no ``run.json`` of its format) or is unfinished (no ``summary.json``).
The server reaches files only through :meth:`ServedOutput.review_file` (an image under the output folder,
resolved with links, never outside it) and :meth:`ServedOutput.original` (a listed photo by its index, so
no path from a URL ever names a file).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from agripatch.data.corrections import NOT_A_LEAF, CorrectionRow, label_of
from agripatch.data.review_store import NewDecision, PhotoState, export_action
from agripatch.errors import ReviewError
from agripatch.io.images import is_image_path
from agripatch.predict.outputs import RUN_FORMAT, read_jsonl
from agripatch.predict.review import REFUSALS, decision_of, refusal_of

__all__ = ["ServedOutput", "UploadRefusal", "photo_card"]


@dataclass(frozen=True)
class UploadRefusal:
    """A row of an uploaded corrections CSV that was not stored: its line, path and what to fix."""

    line: int
    path: str
    message: str


@dataclass
class ServedOutput:
    """One output folder: its key in the database, folder, photo folder, classes, model and records.

    ``records`` are the JSONL rows least sure first (the static page's order); ``decisions[i]`` is record i's
    decision (a class, ``not_a_leaf`` or ``unsure``).
    """

    key: str
    folder: Path
    photos: Path
    classes: list[str]
    model: str
    title: str
    records: list[dict[str, Any]]
    decisions: list[str]

    @classmethod
    def load(cls, folder: str | Path) -> ServedOutput:
        """Read an output folder of ``predict folder``; ReviewError names the folder and the fix."""
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise ReviewError(f"output folder {str(folder)!r} does not exist; pass the OUT folder of "
                              "`agripatch predict folder PHOTOS --out OUT`")
        folder = folder.resolve()
        run = _json(folder / "run.json")
        if not isinstance(run, dict) or not str(run.get("format", "")).startswith(RUN_FORMAT.split("/")[0]):
            raise ReviewError(f"{str(folder)!r} is not an output of `agripatch predict folder` (no run.json of its "
                              "format); pass the folder that command wrote")
        summary = _json(folder / "summary.json")
        if not isinstance(summary, dict) or not isinstance(summary.get("classes"), list):
            raise ReviewError(f"{str(folder)!r} is unfinished (no summary.json with the classes): rerun the same "
                              "`agripatch predict folder` command to finish it, then serve it")
        classes = [str(name) for name in summary["classes"]]
        try:
            records = sorted(read_jsonl(folder / "predictions.jsonl"),
                             key=lambda r: (float(r["confidence"]), str(r["path"])))
            decisions = [decision_of(record, classes) for record in records]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ReviewError(f"{str(folder / 'predictions.jsonl')!r} has a record this version cannot read "
                              f"({exc}); rerun `agripatch predict folder` into a new folder") from None
        source = run.get("input") or summary.get("input")
        if not source:
            raise ReviewError(f"{str(folder / 'run.json')!r} does not say which photo folder was read (no input); "
                              "rerun `agripatch predict folder` into a new folder")
        photos = Path(str(source))
        model = str(run.get("model_sha256") or "")
        key = model[:16] + ":" + str(photos)  # the static page's run id: one run, one key, wherever it is served
        return cls(key, folder, photos, classes, model, f"agripatch: {photos.name or folder.name}", records,
                   decisions)

    def __post_init__(self) -> None:
        self.index = {str(record["path"]): i for i, record in enumerate(self.records)}

    # ------------------------------------------------------------------------------------------ files
    def review_file(self, relative: str) -> Path | None:
        """The image file ``relative`` (an overlay or patch crop) inside the output folder, else None.

        None for anything that is not an image name, is hidden, goes up or is absolute, or resolves (through
        links) outside the folder: the server answers 404 for all of those alike.
        """
        pure = PurePosixPath(relative)
        if not relative or pure.is_absolute() or ".." in pure.parts or "\\" in relative or ":" in relative:
            return None
        if any(part.startswith(".") for part in pure.parts) or not is_image_path(relative):
            return None
        return _inside(self.folder / pure, self.folder)

    def original(self, index: int) -> Path | None:
        """Photo ``index``'s original file in the photo folder, when it is still there (and inside it)."""
        if not 0 <= index < len(self.records):
            return None
        return _inside(self.photos / str(self.records[index]["path"]), self.photos)

    # --------------------------------------------------------------------------------------- decisions
    def new_decision(self, index: int, reviewer: str, action: str, label: str | None, note: str,
                     settles: bool) -> NewDecision:
        """A reviewer's click on photo ``index`` as a decision to store; ValueError says what is wrong with it."""
        if not 0 <= index < len(self.records):
            raise ValueError(f"no photo {index} in this output (it has {len(self.records)})")
        predicted = self.classes[int(self.records[index]["label_index"])]
        if action == "confirm":
            label = predicted if label in (None, "") else label
            if label != predicted:
                raise ValueError(f"confirm keeps the model's class {predicted!r}; use relabel for {label!r}")
        elif action == "relabel":
            if label not in self.classes:
                raise ValueError(f"relabel needs one of the model's classes, got {label!r}")
        elif action == NOT_A_LEAF:
            label = NOT_A_LEAF
        elif action == "clear":
            label, settles = "", False
        else:
            raise ValueError(f"unknown action {action!r}; use confirm, relabel, not_a_leaf or clear")
        return NewDecision(str(self.records[index]["path"]), predicted, self.decisions[index], reviewer, action,
                           str(label), note, settles)

    def uploaded(self, rows: Sequence[CorrectionRow], reviewer: str) -> tuple[list[NewDecision], list[UploadRefusal]]:
        """An offline page's corrections rows as decisions of ``reviewer``, and the rows refused (by the CSV's
        rules, plus: the photo must be one of this output's, the class one of its model's)."""
        decisions: list[NewDecision] = []
        refused: list[UploadRefusal] = []
        seen: Counter[str] = Counter(row.path for row in rows)
        for row in rows:
            problem, label = label_of(row)
            index = self.index.get(row.path)
            if problem is None and seen[row.path] > 1:
                problem = "the same photo is listed more than once; keep one row per photo"
            if problem is None and index is None:
                problem = "not a photo of this output; upload the CSV of this review page"
            if problem is None and label != NOT_A_LEAF and label not in self.classes:
                problem = f"unknown class {label!r}; this model's classes are {', '.join(self.classes)}"
            if problem is not None or index is None or label is None:
                refused.append(UploadRefusal(row.line, row.path, problem or "unreadable row"))
                continue
            action = export_action(label, self.classes[int(self.records[index]["label_index"])])
            decisions.append(self.new_decision(index, reviewer, action, label, "", False))
        return decisions, refused

    # --------------------------------------------------------------------------------------- listing
    def matches(self, index: int, show: str, state: PhotoState | None, reviewer: str) -> bool:
        """Whether photo ``index`` is in the page's filter ``show``: ``all``, a class index (top class), a refusal
        (``not_a_leaf``/``unsure``), ``sev:NAME`` (a severity class), ``conflicts``, ``unreviewed``, ``reviewed``
        or ``mine``."""
        if show == "all":
            return True
        if show.startswith("sev:"):
            return self.records[index].get("severity_class") == show[4:]
        if show == "conflicts":
            return bool(state and state.conflict)
        if show == "unreviewed":
            return not (state and state.reviewed)
        if show == "reviewed":
            return bool(state and state.reviewed)
        if show == "mine":
            return bool(state and any(d.reviewer == reviewer for d in state.current))
        if show in REFUSALS:
            return refusal_of(self.decisions[index], self.classes[int(self.records[index]["label_index"])]) == show
        return show.isdigit() and int(show) == int(self.records[index]["label_index"])


def photo_card(output: ServedOutput, served_index: int, index: int, state: PhotoState | None) -> dict[str, Any]:
    """What the page shows of photo ``index``: the record's fields, the URLs of its images and the decisions."""
    record = output.records[index]
    base = f"/files/{served_index}/"
    boxes = [{"k": int(box["k"]), "read": bool(box.get("read")), "label_index": box.get("label_index"),
              "prob": box.get("prob"), "url": base + str(box["crop"]) if box.get("crop") else None}
             for box in record.get("boxes", [])]
    return {
        "i": index, "path": str(record["path"]), "predicted": int(record["label_index"]),
        "decision": output.decisions[index], "confidence": float(record["confidence"]),
        "stage": int(record["stage"]), "whole_photo": bool(record.get("whole_photo")),
        "macs": float(record["macs"]), "overlay": base + str(record["overlay"]) if record.get("overlay") else None,
        "original": f"/photo/{served_index}/{index}", "boxes": boxes,
        "decisions": [d.to_json() for d in state.current] if state else [],
        "final": state.final.label if state and state.final else None,
        "conflict": bool(state and state.conflict),
        "severity": record.get("severity"), "severity_class": record.get("severity_class"),
        "turned": int(record.get("turned") or 0),
    }


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _inside(path: Path, root: Path) -> Path | None:
    """``path`` resolved (links followed) when it is a file inside ``root``, else None."""
    try:
        resolved = path.resolve(strict=True)
        root = root.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if root not in resolved.parents or not resolved.is_file():
        return None
    return resolved
