"""The review server's gate: every request passes here before any route sees it.

* **Host**: a server bound to loopback answers only requests addressed to ``127.0.0.1``, ``localhost`` or
  ``[::1]`` at its port, so a web page elsewhere cannot reach it through a DNS name pointed at 127.0.0.1.
* **Token**: when the server has one (always, when it listens beyond loopback) every request, local clients
  included, carries it: ``Authorization: Bearer TOKEN``, or the cookie set when the printed URL
  ``...?token=TOKEN`` was opened once. A wrong or missing token is 401, compared in constant time.
* **Writes**: a POST must carry the header ``X-Agripatch-Review: 1``, which a form on another site cannot
  send and a cross-site script cannot send without a preflight this server never grants.
* **Size**: a request body over its route's limit is 413, read no further.
* **Headers**: every answer says: no script, style or image from elsewhere, no inline script, no framing, no
  MIME sniffing, no referrer, no caching.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Awaitable, Callable, Mapping
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = ["COOKIE", "WRITE_HEADER", "Guard", "loopback"]

COOKIE = "agripatch_review"
WRITE_HEADER = "x-agripatch-review"
SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'none'; img-src 'self'; script-src 'self'; style-src 'self'; "
                                 b"connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cache-control", b"no-store"),
]
Scope = dict[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[dict]], Callable[[dict], Awaitable[None]]], Awaitable[None]]


def loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) reaches only this machine."""
    return host in ("localhost", "::1") or host.startswith("127.")


class Guard:
    """ASGI middleware enforcing the module's rules around ``app``.

    ``hosts``: the Host header values accepted (None: any; the token guards instead); ``token``: the access
    token or None; ``limits``: body size limit per path suffix, ``default_limit`` for the rest.
    """

    def __init__(self, app: ASGIApp, *, token: str | None, hosts: set[str] | None, limits: Mapping[str, int],
                 default_limit: int = 16 * 1024):
        self.app, self.token, self.hosts = app, token, hosts
        self.limits, self.default_limit = dict(limits), default_limit

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[dict]],
                       send: Callable[[dict], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in scope["headers"]}
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        if self.token and scope["method"] == "GET" and _query_token(scope) is not None:  # the printed URL: keep it
            await _answer(send, 303, "", extra=[(b"location", _without_token(scope).encode("latin-1")),
                                                (b"set-cookie", _cookie(self.token))])
            return
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE"):
            body = await self._body(scope, headers, receive)
            if body is None:
                limit = self._limit(scope["path"])
                await _answer(send, 413, f"request body over {limit} bytes; send less (one decision, or a smaller CSV)")
                return
            receive = _replay(body)

        async def secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, secured)

    def _refusal(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        if self.hosts is not None and headers.get("host", "") not in self.hosts:
            return 400, (f"this review server answers requests addressed to {', '.join(sorted(self.hosts))}, "
                         f"not {headers.get('host', '')!r}")
        if self.token:
            given = [_bearer(headers), _cookie_token(headers), _query_token(scope)]
            if not any(value is not None and secrets.compare_digest(value.encode(), self.token.encode())
                       for value in given):
                return 401, ("this review server needs its access token: open the URL it printed at its start "
                             "(…/?token=…) or send 'Authorization: Bearer TOKEN'")
        if scope["method"] in ("POST", "PUT", "PATCH", "DELETE") and headers.get(WRITE_HEADER) != "1":
            return 403, f"a write needs the header '{WRITE_HEADER}: 1' (the review page sends it)"
        if scope["method"] not in ("GET", "HEAD", "POST"):
            return 405, f"method {scope['method']} is not served"
        return None

    def _limit(self, path: str) -> int:
        for suffix, limit in self.limits.items():
            if path.endswith(suffix):
                return limit
        return self.default_limit

    async def _body(self, scope: Scope, headers: dict[str, str], receive: Callable[[], Awaitable[dict]]) -> bytes | None:
        """The whole body, or None as soon as it passes the route's limit (declared or streamed)."""
        limit = self._limit(scope["path"])
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(chunks)


def _replay(body: bytes) -> Callable[[], Awaitable[dict]]:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _answer(send: Callable[[dict], Awaitable[None]], status: int, message: str,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": message}).encode() if message else b""
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               *SECURITY_HEADERS, *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization", "")
    return value[7:].strip() if value.lower().startswith("bearer ") else None


def _cookie_token(headers: dict[str, str]) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed cookie header is no token
        return None
    return jar[COOKIE].value if COOKIE in jar else None


def _query_token(scope: Scope) -> str | None:
    for name, value in parse_qsl(scope.get("query_string", b"").decode("latin-1")):
        if name == "token":
            return value
    return None


def _without_token(scope: Scope) -> str:
    rest = [(n, v) for n, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if n != "token"]
    path = (scope.get("raw_path") or scope["path"].encode("utf-8")).decode("latin-1")
    return path + ("?" + urlencode(rest) if rest else "")


def _cookie(token: str) -> bytes:
    return f"{COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/".encode("latin-1")
