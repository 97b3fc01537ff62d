"""The team review server over real HTTP on 127.0.0.1: decisions, disagreements, export, upload, the way back
into training, and every kind of bad input it must refuse with a clear message."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
from review_helpers import CLASSES, call, error_of, running, write_review_output

from agripatch.data.corrections import CORRECTIONS_HEADER
from agripatch.data.review_store import ReviewStore
from agripatch.data.reviewed import add_reviewed_from_db
from agripatch.errors import DatasetError, ReviewError
from agripatch.predict.review_server import open_review
from agripatch.predict.served import ServedOutput


@pytest.fixture
def output(tmp_path):
    records = write_review_output(tmp_path / "out", tmp_path / "photos", 24)
    return tmp_path / "out", sorted(records, key=lambda r: (r["confidence"], r["path"]))


def _decide(base, photo, reviewer, action, label=None, **extra):
    status, _, body = call("POST", f"{base}/api/0/decisions",
                           {"photo": photo, "reviewer": reviewer, "action": action, "label": label, **extra})
    assert status == 200, body
    return json.loads(body)


def _photos(base, show="all", reviewer="", limit=100):
    query = urllib.parse.urlencode({"show": show, "reviewer": reviewer, "limit": limit})
    status, _, body = call("GET", f"{base}/api/0/photos?{query}")
    assert status == 200, body
    return json.loads(body)


def test_two_reviewers_conflicts_settle_export_and_add_reviewed(output, tmp_path):
    out, records = output
    with running(open_review([out], port=0)) as base:
        first = _photos(base, limit=5)
        assert first["total"] == 24 and [p["path"] for p in first["photos"]] == [r["path"] for r in records[:5]]
        predicted = [CLASSES[r["label_index"]] for r in records]
        other = [CLASSES[(r["label_index"] + 1) % 3] for r in records]
        _decide(base, 0, "ana", "confirm")
        _decide(base, 0, "ben", "confirm")                      # agree
        _decide(base, 1, "ana", "relabel", other[1], note="<script>alert('note')</script>")
        _decide(base, 1, "ben", "not_a_leaf")                   # disagree
        _decide(base, 2, "ana", "confirm")
        _decide(base, 2, "ben", "relabel", other[2])
        card = _decide(base, 2, "ben", "relabel", other[2], settles=True)["card"]  # ben settles photo 2
        assert card["final"] == other[2] and not card["conflict"]
        _decide(base, 3, "ben", "not_a_leaf")
        _decide(base, 3, "ben", "clear")                        # undone: nothing decided

        conflicts = _photos(base, "conflicts")
        assert [p["i"] for p in conflicts["photos"]] == [1]
        assert [(d["reviewer"], d["label"], d["note"]) for d in conflicts["photos"][0]["decisions"]] == [
            ("ana", other[1], "<script>alert('note')</script>"), ("ben", "not_a_leaf", "")]
        assert [p["i"] for p in _photos(base, "mine", "ana")["photos"]] == [0, 1, 2]
        assert _photos(base, "unreviewed")["total"] == 21 and _photos(base, "reviewed")["total"] == 3
        refused = _photos(base, "unsure")["photos"]
        assert refused and all(p["decision"] == "unsure" for p in refused)

        progress = json.loads(call("GET", f"{base}/api/0/progress")[2])
        assert (progress["decided"], progress["conflicts"], progress["decisions"]) == (2, 1, 9)
        assert progress["reviewers"] == [{"name": "ana", "photos": 3}, {"name": "ben", "photos": 3}]

        status, headers, body = call("GET", f"{base}/api/0/corrections.csv")
        assert status == 200 and headers["x-agripatch-conflicts"] == "1"
        rows = list(csv.reader(io.StringIO(body.decode("utf-8"))))
        assert rows == [list(CORRECTIONS_HEADER),
                        [records[0]["path"], predicted[0], records[0]["decision"], predicted[0], "confirm"],
                        [records[2]["path"], predicted[2], records[2]["decision"], other[2], "relabel"]]

    # Back into training straight from the database: the agreed and the settled photo, the conflict left out.
    result = add_reviewed_from_db(out / "review.sqlite3", tmp_path / "dataset")
    assert sorted((a.source, a.label) for a in result.added) == sorted(
        [(records[0]["path"], predicted[0]), (records[2]["path"], other[2])])
    assert result.left_out == [records[1]["path"]]
    with pytest.raises(DatasetError, match="has no decisions for"):
        add_reviewed_from_db(out / "review.sqlite3", tmp_path / "dataset", output=tmp_path)


def test_uploading_an_offline_corrections_csv(output):
    out, records = output
    predicted = [CLASSES[r["label_index"]] for r in records]
    lines = [",".join(CORRECTIONS_HEADER),
             f"{records[0]['path']},{predicted[0]},{records[0]['decision']},{predicted[0]},confirm",
             f"{records[1]['path']},{predicted[1]},{records[1]['decision']},not_a_leaf,not_a_leaf",
             f"../../etc/passwd.jpg,{predicted[0]},x,{predicted[0]},confirm",
             f"{records[2]['path']},{predicted[2]},x,no-such-class,relabel",
             f"{records[3]['path']},{predicted[3]},x,{predicted[3]},shrug"]
    with running(open_review([out], port=0)) as base:
        status, _, body = call("POST", f"{base}/api/0/corrections?reviewer=field%20team", "\n".join(lines) + "\n",
                               headers={"Content-Type": "text/csv"})
        assert status == 200, body
        result = json.loads(body)
        assert result["saved"] == 2
        assert [(r["line"], r["message"].split(";")[0]) for r in result["refused"]] == [
            (4, "not a photo of this output"), (5, "unknown class 'no-such-class'"), (6, "unknown action 'shrug'")]
        mine = _photos(base, "mine", "field team")["photos"]
        assert [(p["i"], p["final"]) for p in mine] == [(0, predicted[0]), (1, "not_a_leaf")]
        status, _, body = call("POST", f"{base}/api/0/corrections?reviewer=ana", "just,a,header\n")
        assert status == 400 and "lacks the column(s)" in error_of(body)
        status, _, body = call("POST", f"{base}/api/0/corrections?reviewer=ana", b"\xff\xfe\x00bad")
        assert status == 400 and "not UTF-8" in error_of(body)


def test_bad_requests_are_refused_with_a_message(output, tmp_path):
    out, _ = output
    (tmp_path / "secret.jpg").write_bytes(b"not for you")
    (out / "overlays" / "link.jpg").symlink_to(tmp_path / "secret.jpg")
    with running(open_review([out], port=0)) as base:
        assert call("GET", f"{base}/files/0/overlays/p00000.jpg")[0] == 200
        for path in ("../secret.jpg", "%2e%2e/secret.jpg", "%2e%2e%2fsecret.jpg", "..%5csecret.jpg",
                     "/etc/passwd", "%2Fetc%2Fpasswd", "overlays/link.jpg", "run.json", "review.sqlite3",
                     "overlays/../../secret.jpg"):
            status, _, body = call("GET", f"{base}/files/0/{path}")
            assert status == 404, (path, status)
        assert call("GET", f"{base}/photo/0/9999")[0] == 404
        assert call("GET", f"{base}/static/../../cli.py")[0] == 404
        assert call("GET", f"{base}/api/7/photos")[0] == 404

        def refused(body_or_dict, status_wanted, words, **kw):
            status, headers, body = call("POST", f"{base}/api/0/decisions", body_or_dict, **kw)
            assert status == status_wanted and words in error_of(body), (status, body)
            assert "traceback" not in body.decode().lower()

        refused("{not json", 400, "not JSON", headers={"Content-Type": "application/json"})
        refused("[1, 2]", 400, "JSON object")
        refused({"photo": 0, "reviewer": "", "action": "confirm"}, 400, "reviewer is required")
        refused({"photo": 0, "reviewer": "x" * 65, "action": "confirm"}, 400, "longer than 64")
        refused({"photo": 0, "reviewer": "ana\u0000", "action": "confirm"}, 400, "control characters")
        refused({"photo": 0, "reviewer": "ana", "action": "confirm", "note": "n" * 2001}, 400, "note is longer")
        refused({"photo": 99, "reviewer": "ana", "action": "confirm"}, 400, "no photo 99")
        refused({"photo": "0", "reviewer": "ana", "action": "confirm"}, 400, "photo number")
        refused({"photo": 0, "reviewer": "ana", "action": "delete"}, 400, "unknown action")
        refused({"photo": 0, "reviewer": "ana", "action": "relabel", "label": "oak"}, 400, "relabel needs")
        refused({"photo": 0, "reviewer": "ana", "action": "confirm", "note": "x" * 20_000}, 413, "over 16384 bytes")
        refused({"photo": 0, "reviewer": "ana", "action": "confirm"}, 403, "x-agripatch-review", write=False)
        assert _oversized_upload(base, 9 * 1024 * 1024) == 413  # refused from its declared length, unread
        status, _, body = call("GET", f"{base}/api/0/photos", headers={"Host": "attacker.example"})
        assert status == 400 and "attacker.example" in error_of(body)
        status, _, body = call("DELETE", f"{base}/api/0/decisions")
        assert status in (403, 405)
        # Scripts in names and notes are stored as typed and only ever sent as JSON text.
        _decide(base, 0, "<img src=x onerror=alert(1)>", "confirm", note="</script><b>x</b>")
        status, headers, body = call("GET", f"{base}/review/0/")
        assert status == 200 and "script-src 'self'" in headers["content-security-policy"]
        page = body.decode()
        assert "<script>" not in page and "<img" not in page and "<b>" not in page  # names only as escaped JSON
        assert re.findall(r"<script[^>]*>", page) == ['<script type="application/json" id="boot">',
                                                       '<script src="/static/serve.js" defer>']
    with sqlite_rows(out / "review.sqlite3") as rows:
        assert rows == [("<img src=x onerror=alert(1)>", "confirm", "</script><b>x</b>")]


def _oversized_upload(base: str, size: int) -> int:
    """Status of an upload declaring ``size`` bytes; the server answers before the body is sent, then hangs up."""
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", int(base.rsplit(":", 1)[1]), timeout=30)
    connection.putrequest("POST", "/api/0/corrections?reviewer=ana")
    for name, value in (("Content-Length", str(size)), ("Content-Type", "text/csv"), ("X-Agripatch-Review", "1")):
        connection.putheader(name, value)
    connection.endheaders()
    try:
        connection.send(b"a" * 65536)
    except OSError:
        pass
    return connection.getresponse().status


class sqlite_rows:
    """The (reviewer, action, note) rows of a review database, oldest first."""

    def __init__(self, path: Path):
        self.store = ReviewStore.open(path)

    def __enter__(self):
        output = self.store.outputs()[0]
        return [(d.reviewer, d.action, d.note) for h in self.store.history(output.id).values() for d in h]

    def __exit__(self, *exc):
        self.store.close()


def test_a_server_beyond_loopback_asks_every_client_for_its_token(output):
    out, _ = output
    server = open_review([out], host="0.0.0.0", port=0)
    assert server.token and len(server.token) >= 24
    assert server.team_url.endswith(f":{server.port}/?token={server.token}") and server.url.startswith("http://127.0.0.1")
    with running(server) as base:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "agripatch_review=wrong"}):
            status, _, body = call("GET", f"{base}/api/0/photos", headers=headers)
            assert status == 401 and "access token" in error_of(body)
        assert call("GET", f"{base}/files/0/overlays/p00000.jpg")[0] == 401
        assert call("GET", f"{base}/api/0/photos", headers={"Authorization": f"Bearer {server.token}"})[0] == 200
        assert call("GET", f"{base}/api/0/photos", headers={"Cookie": f"agripatch_review={server.token}"})[0] == 200
        # The printed URL sets the cookie once and drops the token from the address.
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        connection.request("GET", f"/review/0/?token={server.token}")
        answer = connection.getresponse()
        assert answer.status == 303 and answer.getheader("location") == "/review/0/"
        assert f"agripatch_review={server.token}" in answer.getheader("set-cookie")
        assert "HttpOnly" in answer.getheader("set-cookie")


def test_missing_foreign_and_unfinished_outputs_are_refused(tmp_path):
    with pytest.raises(ReviewError, match="does not exist"):
        ServedOutput.load(tmp_path / "nope")
    (tmp_path / "photos").mkdir()
    with pytest.raises(ReviewError, match="is not an output of `agripatch predict folder`"):
        ServedOutput.load(tmp_path / "photos")
    write_review_output(tmp_path / "out", tmp_path / "pics", 3)
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    (tmp_path / "out" / "run.json").write_text(json.dumps({**run, "input": None}))
    (tmp_path / "out" / "summary.json").write_text(json.dumps({"classes": CLASSES}))
    with pytest.raises(ReviewError, match="does not say which photo folder"):
        ServedOutput.load(tmp_path / "out")
    (tmp_path / "out" / "summary.json").unlink()
    with pytest.raises(ReviewError, match="unfinished"):
        ServedOutput.load(tmp_path / "out")


def test_cli_errors_are_messages_not_tracebacks(tmp_path):
    write_review_output(tmp_path / "out", tmp_path / "pics", 3)
    cases = [([str(tmp_path / "nope")], "does not exist"),
             ([str(tmp_path / "pics")], "not an output of"),
             ([str(tmp_path / "out"), "--db", str(tmp_path / "no" / "where.sqlite3")], "does not exist"),
             ([str(tmp_path / "out"), "--db", "nosuchdialect://h/db"], "cannot use this URL")]
    for args, words in cases:
        done = subprocess.run([sys.executable, "-m", "agripatch", "review", "serve", *args, "--port", "0"],
                              capture_output=True, text=True, timeout=120)
        message = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 1 and words in message and "Traceback" not in message, message


@pytest.mark.slow
def test_kill_9_loses_no_acknowledged_decision(output):
    out, records = output

    def start():
        process = subprocess.Popen([sys.executable, "-m", "agripatch", "review", "serve", str(out), "--port", "0"],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env={**os.environ, "COLUMNS": "200"})
        for line in process.stdout:
            found = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
            if found:
                return process, f"http://127.0.0.1:{found.group(1)}"
        raise AssertionError("the server printed no URL")

    process, base = start()
    acknowledged: list[tuple[int, str]] = []
    stop = threading.Event()

    def stream():
        n = 0
        while not stop.is_set():
            photo, reviewer = n % len(records), f"r{n % 3}"
            try:
                status, _, body = call("POST", f"{base}/api/0/decisions",
                                       {"photo": photo, "reviewer": reviewer, "action": "not_a_leaf", "note": str(n)})
            except OSError:
                return  # the server is gone: this decision was never acknowledged
            if status == 200:
                acknowledged.append((json.loads(body)["saved"], str(n)))
            n += 1

    writer = threading.Thread(target=stream)
    writer.start()
    deadline = time.monotonic() + 60
    while len(acknowledged) < 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    stop.set()
    writer.join(30)
    assert len(acknowledged) >= 40

    process, base = start()  # a restart serves the same state
    try:
        with sqlite_rows(out / "review.sqlite3") as rows:
            notes = [note for _, _, note in rows]
        assert all(note in notes for _, note in acknowledged)
        served = json.loads(call("GET", f"{base}/api/0/photos?show=reviewed&limit=500")[2])["photos"]
        assert {int(n) % len(records) for _, n in acknowledged} <= {p["i"] for p in served}
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def test_add_reviewed_cli_reads_the_database(output, tmp_path):
    from typer.testing import CliRunner

    from agripatch.cli import app

    out, records = output
    second = tmp_path / "out2"
    write_review_output(second, tmp_path / "photos2", 4, seed=1)
    db = out / "review.sqlite3"
    server = open_review([out, second], port=0)  # registers both outputs
    server.socket.close()
    first = server.store.outputs()[0]
    served = ServedOutput.load(out)
    server.store.decide(first.id, [served.new_decision(0, "ana", "confirm", None, "", False),
                                   served.new_decision(1, "ana", "confirm", None, "", False),
                                   served.new_decision(1, "ben", "not_a_leaf", None, "", False)], model=first.model)
    server.store.close()
    flat = lambda text: " ".join(text.split())  # noqa: E731

    both = CliRunner().invoke(app, ["datasets", "add-reviewed", "c.csv", "--db", str(db), "--to", str(tmp_path / "d")])
    assert both.exit_code == 2 and "either a corrections.csv or --db" in flat(both.output)
    which = CliRunner().invoke(app, ["datasets", "add-reviewed", "--db", str(db), "--to", str(tmp_path / "d")])
    assert which.exit_code == 1 and "holds 2 outputs" in flat(str(which.exception)) and "--output" in flat(str(which.exception))
    done = CliRunner().invoke(app, ["datasets", "add-reviewed", "--db", str(db), "--output", str(out),
                                    "--to", str(tmp_path / "d")])
    assert done.exit_code == 0, done.output
    assert re.search(r"total\W+1\b", flat(done.stdout))
    assert "left out: 1 photo(s) where reviewers disagree" in flat(done.stdout)
    assert (tmp_path / "d" / CLASSES[records[0]["label_index"]] / Path(records[0]["path"]).name).is_file()


def test_severity_filters_and_sorts_the_served_photos(tmp_path):
    records = write_review_output(tmp_path / "out", tmp_path / "photos", 20, severity=True)
    with running(open_review([tmp_path / "out"], port=0)) as base:
        status, _, page = call("GET", f"{base}/")
        boot = json.loads(re.search(rb'id="boot">(.*?)</script>', page).group(1))
        assert boot["severity"] == {"low": sum(r["severity_class"] == "low" for r in records),
                                    "high": sum(r["severity_class"] == "high" for r in records)}
        high = _photos(base, show="sev:high")
        assert high["total"] == boot["severity"]["high"] and all(p["severity_class"] == "high" for p in high["photos"])
        query = urllib.parse.urlencode({"show": "all", "limit": 100, "sort": "severity"})
        ordered = json.loads(call("GET", f"{base}/api/0/photos?{query}")[2])["photos"]
        assert [p["severity"] for p in ordered] == sorted((r["severity"] for r in records), reverse=True)
