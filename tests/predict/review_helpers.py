"""Helpers for the review server's tests and benchmark: a synthetic ``predict folder`` output, a server running in
a thread, and a tiny HTTP client (urllib, 127.0.0.1 only).

The output is what ``predict folder`` writes (run.json, summary.json, predictions.jsonl, overlays and crops), with
made-up diagnoses: the server reads nothing else, so this is the real input it serves, at any size.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from agripatch.predict.outputs import RUN_FORMAT

CLASSES = ["healthy", "rust <img src=x onerror=alert(1)>", 'spot "late" & <b>bad']  # no slash: they are folder names in add-reviewed


def write_review_output(out: Path, photos: Path, n: int, *, classes: Sequence[str] = CLASSES, seed: int = 0,
                        images: bool = True, names: Sequence[str] | None = None,
                        severity: bool = False) -> list[dict[str, Any]]:
    """Write a finished ``predict folder`` output of ``n`` photos to ``out`` (originals in ``photos``); returns the
    records. ``images=False`` skips the JPEGs (the server then answers 404 for them); ``severity`` gives every
    photo a share and a class (low under 5%, high from it)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    photos.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        path = names[i] if names is not None else f"plot{i % 7}/photo_{i:05d}.jpg"
        label = int(rng.integers(len(classes)))
        stem = f"p{i:05d}"
        record = {"path": path, "label": classes[label], "label_index": label,
                  "decision": "unsure" if i % 11 == 5 else classes[label],
                  "confidence": round(float(rng.uniform(0.3, 1.0)), 6), "topk": [], "stage": int(rng.integers(3)),
                  "whole_photo": False, "macs": 90_000_000, "width": 256, "height": 256,
                  "boxes": [{"k": 1, "box": [0, 0, 64, 64], "score": 0.1, "read": True, "label": classes[label],
                             "label_index": label, "prob": 0.8, "crop": f"crops/{stem}/patch1.jpg"}],
                  "overlay": f"overlays/{stem}.jpg"}
        if severity:
            share = round(float(rng.uniform(0, 10)), 2)
            record.update(severity=share, severity_class="low" if share < 5 else "high")
        records.append(record)
        if images:  # each photo its own bytes (add-reviewed skips duplicates by content)
            pixels = np.full((24, 24, 3), (40, 140, 60), np.uint8)
            pixels[i % 24, (i // 24) % 24] = (i % 251, (i // 251) % 251, 255)
            pixel = cv2.imencode(".png", pixels)[1].tobytes()
            for target in (out / record["overlay"], out / record["boxes"][0]["crop"], photos / path):
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(pixel)
    with open(out / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    sha = f"{seed:064x}"
    (out / "run.json").write_text(json.dumps({"format": RUN_FORMAT, "input": str(photos), "model_sha256": sha}),
                                  encoding="utf-8")
    (out / "summary.json").write_text(json.dumps({"classes": list(classes), "input": str(photos), "photos": n,
                                                  "model_sha256": sha}), encoding="utf-8")
    return records


@contextlib.contextmanager
def running(server: Any) -> Iterator[str]:
    """Serve a :class:`~agripatch.predict.review_server.ReviewServer` in a thread; yields its base URL."""
    worker = server.uvicorn_server()
    thread = threading.Thread(target=worker.run, kwargs={"sockets": [server.socket]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not worker.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the review server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        worker.should_exit = True
        thread.join(10)
        server.store.close()


def call(method: str, url: str, body: bytes | str | dict | None = None, *, headers: dict[str, str] | None = None,
         write: bool = True) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; a write carries the review page's header unless ``write=False``."""
    data = None
    sent = dict(headers or {})
    if isinstance(body, dict):
        data = json.dumps(body).encode()
        sent.setdefault("Content-Type", "application/json")
    elif isinstance(body, str):
        data = body.encode("utf-8")
    else:
        data = body
    if method == "POST" and write:
        sent.setdefault("X-Agripatch-Review", "1")
    request = urllib.request.Request(url, data=data, method=method, headers=sent)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def error_of(body: bytes) -> str:
    """The ``error`` text of a JSON error answer."""
    return json.loads(body)["error"]
