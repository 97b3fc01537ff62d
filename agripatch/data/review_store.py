"""Review decisions in a database: who decided what about which photo, with every earlier decision kept.

The review server (``agripatch review serve``) writes here and ``agripatch datasets add-reviewed --db`` reads
here. SQLite by default (one file beside the outputs, write-ahead log, ``synchronous=FULL``: a decision the
server acknowledged survives a killed server), any SQLAlchemy URL otherwise (PostgreSQL, say).

Two tables. ``outputs``: one row per served ``predict folder`` output (its key, folder, photo folder, classes,
model). ``decisions``: append-only, one row per click or uploaded row: photo, model, reviewer, action
(``confirm``, ``relabel``, ``not_a_leaf``, or ``clear`` for an undo), class, note, whether it settles a
disagreement, time and origin. Nothing is updated or deleted: a reviewer's later decision supersedes their
earlier one (:func:`photo_state`), so the whole history stays readable.

What counts (:func:`photo_state`, one rule for the page, its progress, the export and ``add-reviewed``):
each reviewer's latest decision is theirs; reviewers who agree give the photo its final label; when they
disagree the photo is a conflict, left out of every export until someone *settles* it (a decision marked
``settles``), which holds until a later decision disagrees with it again.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa

from agripatch.data.corrections import NOT_A_LEAF, CorrectionRow
from agripatch.errors import ReviewError

__all__ = ["ACTIONS", "Decision", "NewDecision", "OutputEntry", "PhotoState", "ReviewStore", "database_url",
           "export_action", "photo_state"]

#: What a reviewer can do to a photo; ``clear`` withdraws their decision (the page's undo).
ACTIONS: tuple[str, ...] = ("confirm", "relabel", "not_a_leaf", "clear")
SQLITE_NAME = "review.sqlite3"
_REREAD = 1000  # ids re-read behind the last one seen where ids may commit out of order (not SQLite: one writer)


@dataclass(frozen=True)
class NewDecision:
    """A decision about to be stored: the photo (its path in the output), the model's class and decision, who
    decided what, an optional note, and whether it settles a disagreement."""

    photo: str
    predicted: str
    decision: str
    reviewer: str
    action: str
    label: str
    note: str = ""
    settles: bool = False


@dataclass(frozen=True)
class Decision:
    """A stored decision (``id`` grows with time, so it orders them), as :class:`NewDecision` plus when and how."""

    id: int
    photo: str
    predicted: str
    decision: str
    model: str
    reviewer: str
    action: str
    label: str
    note: str
    settles: bool
    decided_at: str
    origin: str

    def to_json(self) -> dict[str, Any]:
        """The fields the review page shows."""
        return {"id": self.id, "reviewer": self.reviewer, "action": self.action, "label": self.label,
                "note": self.note, "settles": self.settles, "at": self.decided_at, "origin": self.origin}


@dataclass(frozen=True)
class OutputEntry:
    """A served output as the database knows it."""

    id: int
    key: str
    folder: str
    photos: str
    classes: tuple[str, ...]
    model: str


@dataclass(frozen=True)
class PhotoState:
    """What the decisions about one photo add up to.

    ``current``: each reviewer's standing decision (``clear`` ones dropped), oldest first; ``final``: the
    agreed or settled label, None when nobody decided or reviewers disagree; ``conflict``: reviewers disagree
    and nothing settles it; ``settled_by``: the decision that settled it, when one did.
    """

    current: tuple[Decision, ...]
    final: Decision | None
    conflict: bool
    settled_by: Decision | None = None

    @property
    def reviewed(self) -> bool:
        """Somebody has a standing decision on this photo."""
        return bool(self.current)


@dataclass
class _OutputCache:
    """An output's decisions as read so far: ids seen, the highest, history and state per photo."""

    last_id: int = 0
    ids: set[int] = field(default_factory=set)
    history: dict[str, list[Decision]] = field(default_factory=dict)
    states: dict[str, PhotoState] = field(default_factory=dict)


def photo_state(history: Sequence[Decision]) -> PhotoState:
    """The state of one photo from its decisions in id order (see the module docstring for the rule)."""
    latest: dict[str, Decision] = {}
    for decision in history:
        latest[decision.reviewer] = decision
    current = tuple(sorted((d for d in latest.values() if d.action != "clear"), key=lambda d: d.id))
    if not current:
        return PhotoState((), None, False)
    settling = [d for d in current if d.settles]
    if settling:
        settle = settling[-1]
        against = [d for d in current if d.id > settle.id and d.label != settle.label]
        if not against:
            return PhotoState(current, settle, False, settle)
        return PhotoState(current, None, True)
    if len({d.label for d in current}) == 1:
        return PhotoState(current, current[-1], False)
    return PhotoState(current, None, True)


def export_action(label: str, predicted: str) -> str:
    """The corrections CSV's action for a final label: ``not_a_leaf``, ``confirm`` (the model's class) or
    ``relabel``."""
    if label == NOT_A_LEAF:
        return NOT_A_LEAF
    return "confirm" if label == predicted else "relabel"


def database_url(db: str | Path) -> str:
    """A SQLAlchemy URL for ``db``: a URL as given (``postgresql://...``), a path as a SQLite file."""
    text = str(db)
    if "://" in text:
        return text
    return "sqlite:///" + str(Path(text).expanduser().resolve())


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ReviewStore:
    """The review database: open (or create) it, register outputs, append decisions, read their states.

    >>> store = ReviewStore.open("OUT/review.sqlite3")
    >>> output = store.register_output("run-key", "OUT", "photos", ["healthy", "rust"], "sha256...")
    >>> store.decide(output.id, [NewDecision("a.jpg", "rust", "rust", "ana", "confirm", "rust")], model="sha256...")
    """

    def __init__(self, engine: Any, tables: Any):
        self.engine = engine
        self._tables = tables
        self._lock = threading.RLock()  # one refresh at a time; callers copy what they return under it
        self._caches: dict[int, _OutputCache] = {}
        self._reread = 0 if engine.dialect.name == "sqlite" else _REREAD
        self.url = engine.url.render_as_string(hide_password=True)

    @classmethod
    def open(cls, db: str | Path) -> ReviewStore:
        """Connect to ``db`` (a SQLite path or a SQLAlchemy URL), creating the tables when absent.

        ReviewError names the database and the fix when it cannot be reached, created or is not a review
        database (a SQLite file of something else, say).
        """
        url = database_url(db)
        if url.startswith("sqlite:///"):
            folder = Path(url.removeprefix("sqlite:///")).parent
            if not folder.is_dir():
                raise ReviewError(f"review database {str(db)!r}: its folder {str(folder)!r} does not exist; "
                                  "create it or pass another --db")
        try:
            engine = sa.create_engine(url, connect_args=_connect_args(url), pool_pre_ping=True)
        except Exception as exc:  # a malformed URL or a missing driver (psycopg for postgresql://)
            raise ReviewError(f"review database {str(db)!r}: cannot use this URL ({exc}); pass a file path or a "
                              "SQLAlchemy URL such as postgresql://user@host/db with its driver installed") from None
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        tables = _tables()
        try:
            tables.metadata.create_all(engine)
            with engine.connect() as connection:  # a foreign table of the same name shows here
                connection.execute(sa.select(tables.decisions.c.id, tables.decisions.c.settles).limit(1)).all()
                connection.execute(sa.select(tables.outputs.c.key, tables.outputs.c.classes).limit(1)).all()
        except (sa.exc.SQLAlchemyError, sqlite3.Error) as exc:
            shown = engine.url.render_as_string(hide_password=True)
            engine.dispose()
            raise ReviewError(f"review database {shown!r} cannot be opened as a review database: "
                              f"{_reason(exc)}; check that it is reachable and writable, or pass another --db") from None
        return cls(engine, tables)

    def close(self) -> None:
        """Release the connections."""
        self.engine.dispose()

    # --------------------------------------------------------------------------------------- outputs
    def register_output(self, key: str, folder: str | Path, photos: str | Path, classes: Sequence[str],
                        model: str) -> OutputEntry:
        """The output with ``key`` (added, or its folder, photo folder, classes and model brought up to date)."""
        outputs = self._tables.outputs
        values = {"folder": str(folder), "photos": str(photos), "classes": json.dumps(list(classes)), "model": model}
        with self.engine.begin() as connection:
            found = connection.execute(sa.select(outputs.c.id).where(outputs.c.key == key)).scalar()
            if found is None:
                found = connection.execute(outputs.insert().values(key=key, added_at=_now(), **values)).inserted_primary_key[0]
            else:
                connection.execute(outputs.update().where(outputs.c.id == found).values(**values))
        return OutputEntry(int(found), key, str(folder), str(photos), tuple(classes), model)

    def outputs(self) -> list[OutputEntry]:
        """Every output the database knows, in the order they were first served."""
        outputs = self._tables.outputs
        with self.engine.connect() as connection:
            rows = connection.execute(sa.select(outputs).order_by(outputs.c.id)).all()
        return [OutputEntry(row.id, row.key, row.folder, row.photos, tuple(json.loads(row.classes)), row.model)
                for row in rows]

    # ------------------------------------------------------------------------------------- decisions
    def decide(self, output_id: int, decisions: Iterable[NewDecision], *, model: str, origin: str = "page") -> list[int]:
        """Append ``decisions`` in one transaction (all or none) and return their ids; committed on return."""
        rows = [{"output_id": output_id, "photo": d.photo, "predicted": d.predicted, "decision": d.decision,
                 "model": model, "reviewer": d.reviewer, "action": d.action, "label": d.label, "note": d.note,
                 "settles": bool(d.settles), "decided_at": _now(), "origin": origin} for d in decisions]
        for row in rows:
            if row["action"] not in ACTIONS:
                raise ValueError(f"unknown action {row['action']!r}; one of {', '.join(ACTIONS)}")
        table = self._tables.decisions
        ids = []
        with self.engine.begin() as connection:
            for row in rows:
                ids.append(int(connection.execute(table.insert().values(**row)).inserted_primary_key[0]))
        return ids

    def history(self, output_id: int, photos: Iterable[str] | None = None) -> dict[str, list[Decision]]:
        """Every decision per photo of an output (only ``photos`` when given), oldest first."""
        with self._lock:  # copied under the lock: another request's refresh may be adding rows
            cache = self._refresh(output_id)
            if photos is None:
                return {photo: list(rows) for photo, rows in cache.history.items()}
            return {photo: list(cache.history[photo]) for photo in set(photos) if photo in cache.history}

    def states(self, output_id: int, photos: Iterable[str] | None = None) -> dict[str, PhotoState]:
        """:func:`photo_state` of every photo of an output with a decision (only ``photos`` when given)."""
        with self._lock:
            cache = self._refresh(output_id)
            if photos is None:
                return dict(cache.states)
            return {photo: cache.states[photo] for photo in set(photos) if photo in cache.states}

    def _refresh(self, output_id: int) -> _OutputCache:
        """The output's decisions, read once and then only the new rows (a 10,000-photo page lists in milliseconds).

        Where ids can commit out of order (not SQLite, which has one writer at a time), rows are re-read from
        ``_REREAD`` ids back and known ids skipped, so a row another server committed late is still seen.
        """
        table = self._tables.decisions
        with self._lock:
            cache = self._caches.setdefault(output_id, _OutputCache())
            query = (sa.select(table).where(table.c.output_id == output_id, table.c.id > cache.last_id - self._reread)
                     .order_by(table.c.id))
            with self.engine.connect() as connection:
                rows = connection.execute(query).all()
            touched: set[str] = set()
            for row in rows:
                if row.id in cache.ids:
                    continue
                decision = Decision(row.id, row.photo, row.predicted, row.decision, row.model or "", row.reviewer,
                                    row.action, row.label, row.note, bool(row.settles), row.decided_at, row.origin)
                history = cache.history.setdefault(row.photo, [])
                history.append(decision)
                if len(history) > 1 and history[-2].id > decision.id:
                    history.sort(key=lambda d: d.id)
                cache.ids.add(row.id)
                cache.last_id = max(cache.last_id, row.id)
                touched.add(row.photo)
            for photo in touched:
                cache.states[photo] = photo_state(cache.history[photo])
            return cache

    def final_rows(self, output_id: int) -> tuple[list[CorrectionRow], list[str]]:
        """The output's agreed or settled decisions as corrections rows (``line`` = the deciding decision's id), and
        the photos left out because reviewers disagree; ``add-reviewed --db`` applies the rows by the CSV's rules."""
        rows: list[CorrectionRow] = []
        conflicts: list[str] = []
        for photo, state in sorted(self.states(output_id).items()):
            if state.conflict:
                conflicts.append(photo)
            elif state.final is not None:
                final = state.final
                rows.append(CorrectionRow(final.id, photo, final.predicted, final.decision, final.label,
                                          export_action(final.label, final.predicted)))
        return rows, conflicts


def _connect_args(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"check_same_thread": False, "timeout": 30}
    return {}


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    """Write-ahead log (readers never wait for the writer) and a full sync per commit (an acknowledged decision is
    on disk), foreign keys checked."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _reason(exc: BaseException) -> str:
    original = getattr(exc, "orig", None)
    return str(original if original is not None else exc).splitlines()[0]


def _tables() -> SimpleNamespace:
    """The two tables (portable types: SQLite, PostgreSQL, MySQL alike)."""
    metadata = sa.MetaData()
    outputs = sa.Table(
        "outputs", metadata,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String(1024), nullable=False, unique=True),
        sa.Column("folder", sa.Text, nullable=False),
        sa.Column("photos", sa.Text, nullable=False),
        sa.Column("classes", sa.Text, nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("added_at", sa.String(32), nullable=False),
    )
    decisions = sa.Table(
        "decisions", metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("output_id", sa.Integer, sa.ForeignKey("outputs.id"), nullable=False),
        sa.Column("photo", sa.Text, nullable=False),
        sa.Column("predicted", sa.Text, nullable=False),
        sa.Column("decision", sa.Text, nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("reviewer", sa.String(64), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("label", sa.Text, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("settles", sa.Boolean, nullable=False),
        sa.Column("decided_at", sa.String(32), nullable=False),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Index("ix_decisions_output_photo", "output_id", "photo", "id"),
    )
    return SimpleNamespace(metadata=metadata, outputs=outputs, decisions=decisions)
