"""Team review at 10,000 photos: how long the served page takes to show its first photos, and a decision to be saved.

Targets (issue 27): first page shown in <= 2 s, a decision saved in <= 50 ms (median), on this machine. Each is
measured on an empty database and on one that already holds 3 decisions per photo (two reviewers who disagree on
a tenth of the photos, and an undo), since listing a page reads every decision of the output.

* first page: a fresh Chromium context opens /review/0/ until the page has drawn its first cards (the page's own
  ``data-ready``), with its stylesheet, script and the first page's JSON; also the JSON request alone.
* server start: loading the output and reading every stored decision, before it listens.
* decision: the wall time of a POST /api/0/decisions from a client on 127.0.0.1 until the answer, which the server
  sends only after SQLite committed (WAL, synchronous=FULL).

    python -m benchmarks.review_server [--photos 10000] [--decisions 200]

Writes benchmarks/results/review_server/results.json and .md, prints the table with the CPU and puts it in
benchmarks/README.md ("Team review at 10,000 photos").
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from agripatch.data.review_store import NewDecision, ReviewStore
from agripatch.predict.review_server import open_review
from benchmarks.machine import cpu_description
from benchmarks.readme_blocks import write_block
from tests.predict.review_helpers import call, running, write_review_output  # the tests' synthetic output, client

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "review_server"

CHROMIUM = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]


def prefill(db: Path, out: Path, records: list[dict]) -> int:
    """Store 3 decisions per photo (two reviewers, a tenth in disagreement, one undo each tenth); returns how many."""
    store = ReviewStore.open(db)
    served = open_review([out], db=db, port=0)  # registers the output exactly as the server does
    served.socket.close()
    served.store.close()
    entry = store.outputs()[0]
    batch = []
    for i, record in enumerate(records):
        label = record["label"]
        batch.append(NewDecision(record["path"], label, record["decision"], "ana", "confirm", label))
        batch.append(NewDecision(record["path"], label, record["decision"], "ben",
                                 "not_a_leaf" if i % 10 == 0 else "confirm", "not_a_leaf" if i % 10 == 0 else label))
        batch.append(NewDecision(record["path"], label, record["decision"], "cyd", "clear" if i % 10 else "confirm",
                                 "" if i % 10 else label))
    store.decide(entry.id, batch, model=entry.model, origin="upload")
    store.close()
    return len(batch)


def first_page(base: str, repeats: int) -> tuple[list[float], list[float]]:
    """Seconds until the page shows its first cards (Chromium), and for the first page's JSON alone."""
    from playwright.sync_api import sync_playwright

    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        raise SystemExit("needs Debian's chromium (apt-get install chromium) and the playwright package")
    page_s, json_s = [], []
    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM)
        for _ in range(repeats):
            context = browser.new_context()
            page = context.new_page()
            start = time.perf_counter()
            page.goto(f"{base}/review/0/")
            page.wait_for_selector('body[data-ready="1"] article.card')
            page_s.append(time.perf_counter() - start)
            context.close()
            start = time.perf_counter()
            status, _, _ = call("GET", f"{base}/api/0/photos?offset=0&limit=60&show=all")
            json_s.append(time.perf_counter() - start)
            assert status == 200
        browser.close()
    return page_s, json_s


def decisions(base: str, n: int, photos: int) -> list[float]:
    """Seconds per decision POST, ``n`` of them over the photos, alternating two reviewers."""
    times = []
    for k in range(n):
        body = {"photo": (k * 37) % photos, "reviewer": ("ana", "ben")[k % 2], "action": "not_a_leaf", "note": f"#{k}"}
        start = time.perf_counter()
        status, _, answer = call("POST", f"{base}/api/0/decisions", body)
        times.append(time.perf_counter() - start)
        assert status == 200, answer
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=10_000)
    parser.add_argument("--decisions", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    cpu = cpu_description()
    work = Path(tempfile.mkdtemp(prefix="review-bench-"))
    rows = []
    try:
        start = time.perf_counter()
        records = write_review_output(work / "out", work / "photos", args.photos)
        print(f"wrote a {args.photos}-photo output in {time.perf_counter() - start:.1f} s")
        for name, filled in (("empty database", False), ("3 decisions per photo", True)):
            db = work / f"{name.split()[0]}.sqlite3"
            stored = prefill(db, work / "out", records) if filled else 0
            start = time.perf_counter()
            server = open_review([work / "out"], db=db, port=0)
            start_s = time.perf_counter() - start
            with running(server) as base:
                page_s, json_s = first_page(base, args.repeats)
                save_s = decisions(base, args.decisions, args.photos)
            rows.append({"database": name, "stored_decisions": stored, "photos": args.photos, "server_start_s": start_s,
                         "first_page_s_median": statistics.median(page_s), "first_page_s_max": max(page_s),
                         "first_page_json_s_median": statistics.median(json_s),
                         "decision_ms_median": 1000 * statistics.median(save_s),
                         "decision_ms_p90": 1000 * sorted(save_s)[int(0.9 * len(save_s))],
                         "repeats": args.repeats, "decisions": args.decisions})
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"CPU: {cpu['model']}, {cpu['cores']} cores, flags {' '.join(cpu['flags'])}")
    header = ("| database | photos | server start | first page shown (median / max) | page JSON | "
              "decision saved (median / p90) |")
    lines = [header, "|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['database']} ({row['stored_decisions']}) | {row['photos']} | {row['server_start_s']:.2f} s | "
                     f"{row['first_page_s_median']:.2f} s / {row['first_page_s_max']:.2f} s | "
                     f"{1000 * row['first_page_json_s_median']:.0f} ms | "
                     f"{row['decision_ms_median']:.1f} ms / {row['decision_ms_p90']:.1f} ms |")
    print("\n".join(lines))
    print("targets: first page <= 2 s, decision <= 50 ms (median)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "results.json").write_text(json.dumps({"cpu": cpu, "rows": rows}, indent=2) + "\n")
    table = f"CPU: {cpu['model']}, {cpu['cores']} cores, flags {' '.join(cpu['flags'])}\n\n" + "\n".join(lines)
    (RESULTS / "results.md").write_text(table + "\n")
    write_block(ROOT / "benchmarks" / "README.md", table, "review_server")


if __name__ == "__main__":
    main()
