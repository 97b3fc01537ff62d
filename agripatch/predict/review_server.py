"""``agripatch review serve``: the review page of one or more ``predict folder`` outputs, served over HTTP with
every decision in a database (:mod:`agripatch.data.review_store`), for a team of reviewers.

Starlette (ASGI) under uvicorn. Pages: ``/`` (the outputs), ``/review/N/`` (output N's page: photos least sure
first, 60 at a time, filters, progress, upload and download). JSON API under ``/api/N/``: ``photos``
(a page of photos with their decisions), ``progress``, ``decisions`` (POST one decision; answered only once
it is committed), ``corrections`` (POST an offline page's corrections.csv), ``corrections.csv`` (the agreed
and settled decisions, the static page's format). Files: ``/files/N/PATH`` (an image inside output N),
``/photo/N/I`` (photo I's original). :class:`~agripatch.predict.review_guard.Guard` stands in front of it all.
"""

from __future__ import annotations

import csv
import html
import io
import json
import logging
import secrets
import socket
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from agripatch.data.corrections import CORRECTIONS_HEADER, parse_corrections
from agripatch.data.review_store import SQLITE_NAME, OutputEntry, PhotoState, ReviewStore
from agripatch.errors import DatasetError, ReviewError
from agripatch.predict.review import asset, filter_counts, json_for_script, severity_counts
from agripatch.predict.review_guard import Guard, loopback
from agripatch.predict.served import ServedOutput, photo_card

__all__ = ["PAGE_SIZE", "ReviewServer", "build_app", "open_review"]

PAGE_SIZE = 60
MAX_PAGE = 500
MAX_NAME, MAX_NOTE, MAX_LABEL = 64, 2000, 256
UPLOAD_LIMIT = 8 * 1024 * 1024
log = logging.getLogger("agripatch.review")


class _ReviewRoutes:
    """The routes, one method each, over the outputs, their database entries and the store."""

    def __init__(self, outputs: Sequence[ServedOutput], store: ReviewStore):
        self.outputs, self.store = list(outputs), store
        self.entries = [store.register_output(o.key, o.folder, o.photos, o.classes, o.model) for o in self.outputs]
        for entry in self.entries:
            store.states(entry.id)  # read the decisions now, not on the first reviewer's first page

    def get(self, request: Request) -> tuple[int, ServedOutput, OutputEntry]:
        """Output N of the URL, its entry, or 404."""
        n = int(request.path_params["n"])
        if not 0 <= n < len(self.outputs):
            raise HTTPException(404, f"no output {n}; this server serves {len(self.outputs)}")
        return n, self.outputs[n], self.entries[n]

    def routes(self) -> list[Route]:
        """Every URL the server answers (anything else is 404)."""
        return [
            Route("/", self.home), Route("/favicon.ico", lambda request: Response(status_code=204)),
            Route("/review/{n:int}/", self.page), Route("/static/{name}", self.static),
            Route("/api/{n:int}/photos", self.photos), Route("/api/{n:int}/progress", self.progress),
            Route("/api/{n:int}/decisions", self.decide, methods=["POST"]),
            Route("/api/{n:int}/corrections", self.upload, methods=["POST"]),
            Route("/api/{n:int}/corrections.csv", self.export),
            Route("/files/{n:int}/{path:path}", self.review_file), Route("/photo/{n:int}/{i:int}", self.original),
        ]

    async def home(self, request: Request) -> Response:
        """The outputs served (straight to the page when there is one)."""
        if len(self.outputs) == 1:
            return RedirectResponse("/review/0/", status_code=303)
        items = "".join(f'<li><a href="/review/{n}/">{html.escape(o.title)}</a> ({len(o.records)} photos, {html.escape(str(o.folder))})</li>'
                        for n, o in enumerate(self.outputs))
        return HTMLResponse(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>agripatch review'
                            f'</title><link rel="stylesheet" href="/static/review.css"></head><body><header>'
                            f"<h1>agripatch review</h1></header><main><ul>{items}</ul></main></body></html>")

    async def page(self, request: Request) -> Response:
        """Output N's page: a shell whose script lists the photos through the API."""
        n, output, _ = self.get(request)
        return HTMLResponse(_page_html(n, output))

    async def static(self, request: Request) -> Response:
        """The page's stylesheets and script (package data), and nothing else."""
        name = request.path_params["name"]
        kinds = {"review.css": "text/css", "serve.js": "text/javascript", "serve.css": "text/css"}
        if name not in kinds:
            raise HTTPException(404, "no such file")
        return Response(asset(name), media_type=kinds[name])

    def photos(self, request: Request) -> Response:
        """A page of photos (``offset``, ``limit``) in the filter ``show``, least sure first (``sort=severity``: most
        severe first), with their decisions."""
        n, output, entry = self.get(request)
        query = request.query_params
        offset, limit = _int(query.get("offset", "0"), 0, 10**9), _int(query.get("limit", str(PAGE_SIZE)), 1, MAX_PAGE)
        show, reviewer = query.get("show", "all"), query.get("reviewer", "")
        states = self.store.states(entry.id)
        chosen = [i for i in range(len(output.records))
                  if output.matches(i, show, states.get(str(output.records[i]["path"])), reviewer)]
        if query.get("sort") == "severity":
            chosen.sort(key=lambda i: -float(output.records[i].get("severity") or -1.0))
        window = chosen[offset:offset + limit]
        cards = [photo_card(output, n, i, states.get(str(output.records[i]["path"]))) for i in window]
        return JSONResponse({"total": len(chosen), "offset": offset, "photos": cards})

    def progress(self, request: Request) -> Response:
        """Reviewed, disagreed and total photos per class; photos per reviewer."""
        _, output, entry = self.get(request)
        return JSONResponse(_progress(output, self.store.states(entry.id), self.store.history(entry.id)))

    async def decide(self, request: Request) -> Response:
        """Store one decision; answered only once committed, with the photo's card as it now stands."""
        n, output, entry = self.get(request)
        payload = _json_body(await request.body())
        reviewer = _text(payload.get("reviewer"), "reviewer", MAX_NAME, required=True)
        note = _text(payload.get("note", ""), "note", MAX_NOTE, multiline=True)
        label = _text(payload.get("label") or "", "label", MAX_LABEL)
        settles = payload.get("settles", False)
        index = payload.get("photo")
        if not isinstance(settles, bool) or not isinstance(index, int) or isinstance(index, bool):
            raise HTTPException(400, "photo must be a photo number and settles true or false")
        try:
            decision = output.new_decision(index, reviewer, str(payload.get("action", "")), label or None, note, settles)
        except ValueError as exc:
            raise HTTPException(400, str(exc)) from None
        ids = await run_in_threadpool(self.store.decide, entry.id, [decision], model=output.model)
        state = (await run_in_threadpool(self.store.states, entry.id, [decision.photo])).get(decision.photo)
        return JSONResponse({"saved": ids[0], "card": photo_card(output, n, index, state)})

    async def upload(self, request: Request) -> Response:
        """Store the rows of an offline page's corrections.csv as ``reviewer``'s decisions; list the refused rows."""
        _, output, entry = self.get(request)
        reviewer = _text(request.query_params.get("reviewer"), "reviewer", MAX_NAME, required=True)
        try:
            text = (await request.body()).decode("utf-8")
            rows = parse_corrections(text, "uploaded corrections.csv")
        except UnicodeDecodeError:
            raise HTTPException(400, "the upload is not UTF-8 text; upload the corrections.csv the page downloaded") from None
        except DatasetError as exc:
            raise HTTPException(400, str(exc)) from None
        decisions, refused = output.uploaded(rows, reviewer)
        ids = await run_in_threadpool(self.store.decide, entry.id, decisions, model=output.model, origin="upload")
        return JSONResponse({"saved": len(ids), "refused": [r.__dict__ for r in refused]})

    def export(self, request: Request) -> Response:
        """The agreed and settled decisions as the static page's corrections.csv (conflicts counted in a header)."""
        _, output, entry = self.get(request)
        rows, conflicts = self.store.final_rows(entry.id)
        order = {path: i for i, path in enumerate(str(r["path"]) for r in output.records)}
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(CORRECTIONS_HEADER)
        for row in sorted(rows, key=lambda r: order.get(r.path, len(order))):
            writer.writerow([row.path, row.predicted, row.decision, row.reviewed_label, row.action])
        return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"content-disposition": 'attachment; filename="corrections.csv"',
                                 "x-agripatch-conflicts": str(len(conflicts))})

    def review_file(self, request: Request) -> Response:
        """An overlay or patch crop inside output N; 404 for anything else."""
        _, output, _ = self.get(request)
        path = output.review_file(request.path_params["path"])
        if path is None:
            raise HTTPException(404, "no such file in this output")
        return FileResponse(path)

    def original(self, request: Request) -> Response:
        """Photo I's original, by its number (never a path from the URL)."""
        _, output, _ = self.get(request)
        path = output.original(int(request.path_params["i"]))
        if path is None:
            raise HTTPException(404, "that photo is no longer in its folder")
        return FileResponse(path)


def build_app(outputs: Sequence[ServedOutput], store: ReviewStore) -> Starlette:
    """The ASGI app serving ``outputs`` with decisions in ``store`` (wrap it in a Guard before serving)."""
    return Starlette(routes=_ReviewRoutes(outputs, store).routes(),
                     exception_handlers={HTTPException: _http_error, sa.exc.SQLAlchemyError: _db_error,
                                         Exception: _server_error})


class ReviewServer:
    """A review server ready to run: its outputs, database, bound socket, address and token (None on loopback unless
    one was asked for)."""

    def __init__(self, app: Any, store: ReviewStore, sock: socket.socket, host: str, token: str | None):
        self.app, self.store, self.socket, self.token, self.host = app, store, sock, token, host
        self.port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else shown}:{self.port}/"

    @property
    def login_url(self) -> str:
        """The URL to open first (it carries the token, which the browser then keeps as a cookie)."""
        return self.url + (f"?token={self.token}" if self.token else "")

    @property
    def team_url(self) -> str | None:
        """The URL colleagues open from other machines (this machine's name), None when bound to loopback."""
        if loopback(self.host):
            return None
        name = self.host if self.host not in ("0.0.0.0", "::") else socket.getfqdn()
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{self.port}/" + (f"?token={self.token}" if self.token else "")

    def uvicorn_server(self) -> Any:
        """The uvicorn server for this app (quiet, no lifespan events); serve it on :attr:`socket`."""
        import uvicorn

        return uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False,
                                             timeout_graceful_shutdown=5))

    def run(self) -> None:
        """Serve until interrupted (Ctrl+C stops cleanly; a killed server loses no acknowledged decision)."""
        try:
            self.uvicorn_server().run(sockets=[self.socket])
        finally:
            self.store.close()


def open_review(folders: Sequence[str | Path], *, db: str | Path | None = None, host: str = "127.0.0.1",
                port: int = 8765, token: str | None = None) -> ReviewServer:
    """Load the outputs, open the database (default ``FIRST_OUT/review.sqlite3``) and bind the address; nothing is
    served until :meth:`ReviewServer.run`. ReviewError (before anything listens) names a bad folder, database or
    address and the fix.

    >>> server = open_review(["out/field-3"])          # http://127.0.0.1:8765/, decisions in out/field-3/review.sqlite3
    >>> server.run()
    """
    if not folders:
        raise ReviewError("name at least one output folder of `agripatch predict folder` to review")
    outputs = [ServedOutput.load(folder) for folder in folders]
    keys = Counter(output.key for output in outputs)
    twice = [output.folder for output in outputs if keys[output.key] > 1]
    if twice:
        raise ReviewError(f"{', '.join(map(str, twice))} are the same run (same model and photo folder); serve one of them")
    store = ReviewStore.open(db if db is not None else outputs[0].folder / SQLITE_NAME)
    if not loopback(host) and not token:
        token = secrets.token_urlsafe(24)  # beyond this machine, never without a token
    try:
        sock = _bind(host, port)
    except OSError as exc:
        store.close()
        raise ReviewError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port "
                          "(0 picks a free one) or --host") from None
    hosts = None if not loopback(host) else {f"{name}:{sock.getsockname()[1]}" for name in ("127.0.0.1", "localhost", "[::1]")}
    limits = {"/corrections": UPLOAD_LIMIT}
    app = Guard(build_app(outputs, store), token=token, hosts=hosts, limits=limits)
    return ReviewServer(app, store, sock, host, token)


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


# --------------------------------------------------------------------------------------------- helpers
def _page_html(n: int, output: ServedOutput) -> str:
    counts, refusals = filter_counts(output.records, output.decisions, output.classes)
    boot = {"output": n, "title": output.title, "classes": output.classes, "photos": len(output.records),
            "counts": counts, "refusals": refusals, "page": PAGE_SIZE, "run": output.key,
            "severity": severity_counts(output.records)}
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f'<title>{html.escape(output.title)}</title><link rel="stylesheet" href="/static/review.css">'
            '<link rel="stylesheet" href="/static/serve.css"></head><body>'
            f'<script type="application/json" id="boot">{json_for_script(boot)}</script>'
            '<script src="/static/serve.js" defer></script></body></html>\n')


def _progress(output: ServedOutput, states: dict[str, PhotoState], history: dict[str, list]) -> dict[str, Any]:
    per_class = [{"name": name, "total": 0, "reviewed": 0, "conflicts": 0} for name in output.classes]
    for record in output.records:
        entry = per_class[int(record["label_index"])]
        state = states.get(str(record["path"]))
        entry["total"] += 1
        entry["reviewed"] += bool(state and state.final is not None)
        entry["conflicts"] += bool(state and state.conflict)
    reviewers: Counter[str] = Counter()
    for state in states.values():
        reviewers.update(d.reviewer for d in state.current)
    decisions = sum(len(rows) for rows in history.values())
    return {"photos": len(output.records), "decided": sum(c["reviewed"] for c in per_class),
            "conflicts": sum(c["conflicts"] for c in per_class), "decisions": decisions, "classes": per_class,
            "reviewers": [{"name": name, "photos": count} for name, count in sorted(reviewers.items())]}


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "the body is not JSON; send {\"photo\": N, \"reviewer\": NAME, \"action\": ...}") from None
    if not isinstance(payload, dict):
        raise HTTPException(400, "the body must be a JSON object")
    return payload


def _text(value: Any, name: str, limit: int, *, required: bool = False, multiline: bool = False) -> str:
    """A user's text field: a string of at most ``limit`` characters with no control characters (newlines in
    notes), trimmed; 400 naming the field otherwise."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise HTTPException(400, f"{name} must be text")
    value = value.strip()
    if required and not value:
        raise HTTPException(400, f"{name} is required: type your name on the page first")
    if len(value) > limit:
        raise HTTPException(400, f"{name} is longer than {limit} characters")
    if not all(ch.isprintable() or (multiline and ch in "\n\t") for ch in value):
        raise HTTPException(400, f"{name} holds control characters")
    return value


def _int(text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise HTTPException(400, f"{text!r} is not a whole number") from None
    return min(max(value, low), high)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, status_code=exc.status_code)


async def _db_error(request: Request, exc: Exception) -> Response:
    reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    log.error("review database error on %s: %s", request.url.path, reason)
    return JSONResponse({"error": "the review database cannot be reached or written; nothing was saved "
                                  "(see the server's console)"}, status_code=503)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("review server error on %s", request.url.path)
    return JSONResponse({"error": "the review server failed on this request; nothing was saved "
                                  "(see the server's console)"}, status_code=500)

