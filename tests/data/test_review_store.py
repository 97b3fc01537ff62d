"""The review database: what decisions add up to, history kept, and clear refusals of a database it cannot use."""

from __future__ import annotations

import os
import sqlite3
import uuid

import pytest

from agripatch.data.review_store import NewDecision, ReviewStore, database_url, export_action
from agripatch.errors import ReviewError


def _store(tmp_path, db=None, key="run-1"):
    store = ReviewStore.open(db or tmp_path / "review.sqlite3")
    return store, store.register_output(key, tmp_path, tmp_path / "photos", ["healthy", "rust"], "sha")


def _d(reviewer: str, action: str, label: str, *, photo: str = "a.jpg", settles: bool = False, note: str = ""):
    return NewDecision(photo, "rust", "rust", reviewer, action, label, note, settles)


OTHER_DB = os.environ.get("AGRIPATCH_TEST_DB_URL")  # e.g. postgresql+psycopg://postgres@/reviews?host=/tmp&port=54329


@pytest.mark.parametrize("db", ["sqlite", pytest.param("url", marks=pytest.mark.skipif(
    not OTHER_DB, reason="set AGRIPATCH_TEST_DB_URL to a SQLAlchemy URL (PostgreSQL, say) to run this on it too"))])
def test_agreement_conflict_settle_reopen_and_undo(tmp_path, db):
    store, output = _store(tmp_path, OTHER_DB if db == "url" else None, key=f"run-{uuid.uuid4()}")
    store.decide(output.id, [_d("ana", "confirm", "rust")], model="sha")
    state = store.states(output.id)["a.jpg"]
    assert state.final.label == "rust" and not state.conflict and state.reviewed

    store.decide(output.id, [_d("ben", "relabel", "healthy")], model="sha")
    state = store.states(output.id)["a.jpg"]
    assert state.conflict and state.final is None and [d.reviewer for d in state.current] == ["ana", "ben"]

    store.decide(output.id, [_d("ana", "relabel", "healthy", settles=True, note="lesions are dust")], model="sha")
    state = store.states(output.id)["a.jpg"]
    assert not state.conflict and state.final.label == "healthy" and state.settled_by.reviewer == "ana"

    store.decide(output.id, [_d("cyd", "confirm", "rust")], model="sha")  # a later disagreement reopens it
    assert store.states(output.id)["a.jpg"].conflict
    store.decide(output.id, [_d("cyd", "clear", "")], model="sha")  # cyd's undo: the settlement holds again
    state = store.states(output.id)["a.jpg"]
    assert state.final.label == "healthy" and [d.reviewer for d in state.current] == ["ben", "ana"]

    # Nothing was overwritten: every click is in the history, in order.
    history = store.history(output.id)["a.jpg"]
    assert [(d.reviewer, d.action, d.label) for d in history] == [
        ("ana", "confirm", "rust"), ("ben", "relabel", "healthy"), ("ana", "relabel", "healthy"),
        ("cyd", "confirm", "rust"), ("cyd", "clear", "")]
    assert history[2].note == "lesions are dust" and history[2].settles and history[0].decided_at.endswith("Z")
    store.close()


def test_final_rows_leave_conflicts_out(tmp_path):
    store, output = _store(tmp_path)
    store.decide(output.id, [_d("ana", "confirm", "rust", photo="a.jpg"), _d("ana", "not_a_leaf", "not_a_leaf", photo="b.jpg"),
                             _d("ana", "confirm", "rust", photo="c.jpg"), _d("ben", "relabel", "healthy", photo="c.jpg"),
                             _d("ben", "relabel", "healthy", photo="d.jpg"), _d("ben", "clear", "", photo="d.jpg")],
                 model="sha")
    rows, conflicts = store.final_rows(output.id)
    assert [(r.path, r.reviewed_label, r.action) for r in rows] == [("a.jpg", "rust", "confirm"),
                                                                   ("b.jpg", "not_a_leaf", "not_a_leaf")]
    assert conflicts == ["c.jpg"]
    assert export_action("healthy", "rust") == "relabel" and export_action("rust", "rust") == "confirm"
    store.close()


def test_reopening_keeps_outputs_and_decisions(tmp_path):
    store, output = _store(tmp_path)
    store.decide(output.id, [_d("ana", "confirm", "rust")], model="sha")
    store.close()
    again = ReviewStore.open(tmp_path / "review.sqlite3")
    same = again.register_output("run-1", tmp_path, tmp_path / "photos", ["healthy", "rust"], "sha")
    assert same.id == output.id and [o.key for o in again.outputs()] == ["run-1"]
    assert again.states(same.id)["a.jpg"].final.label == "rust"
    with sqlite3.connect(tmp_path / "review.sqlite3") as raw:  # the write-ahead log is on
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with pytest.raises(ValueError, match="unknown action 'maybe'"):
        again.decide(same.id, [_d("ana", "maybe", "rust")], model="sha")
    again.close()


def test_databases_it_cannot_use_are_refused_by_name(tmp_path):
    foreign = tmp_path / "other.sqlite3"
    with sqlite3.connect(foreign) as raw:
        raw.execute("CREATE TABLE decisions (x INTEGER)")
    with pytest.raises(ReviewError, match="other.sqlite3.*cannot be opened as a review database"):
        ReviewStore.open(foreign)
    with pytest.raises(ReviewError, match="its folder .* does not exist"):
        ReviewStore.open(tmp_path / "missing" / "review.sqlite3")
    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("hello, this is not a database at all" * 10)
    with pytest.raises(ReviewError, match="notes.txt.*cannot be opened"):
        ReviewStore.open(not_a_db)
    with pytest.raises(ReviewError, match="cannot use this URL"):
        ReviewStore.open("nosuchdialect://user@host/db")
    assert database_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert database_url(tmp_path / "r.sqlite3") == f"sqlite:///{tmp_path / 'r.sqlite3'}"


def test_reads_in_other_threads_while_decisions_arrive_lose_none(tmp_path):
    """The review server lists pages in worker threads while decisions arrive: every read succeeds, and once the
    writers are done the incrementally read cache holds every decision."""
    import threading

    store, output = _store(tmp_path)
    errors: list[BaseException] = []

    def write(who: str) -> None:
        try:
            for i in range(60):
                store.decide(output.id, [_d(who, "confirm", "rust", photo=f"{who}-{i}.jpg")], model="sha")
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def read() -> None:
        try:
            for _ in range(200):
                states = store.states(output.id)
                assert all(state.final is not None for state in states.values())
                store.history(output.id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(name,)) for name in ("ana", "ben")] + \
              [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == [] and len(store.states(output.id)) == 120
    store.close()
