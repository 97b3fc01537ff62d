"""Review controls of the static review page: confirm / another class / not a leaf, persisted, downloaded.

The browser test drives Debian's Chromium (``apt-get install chromium``) through the ``playwright``
package, pointed at that executable (``playwright install`` downloads nothing here). It skips with a
reason when either is missing.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
import shutil

import pytest

from agripatch.predict.review import CORRECTIONS_HEADER, decision_of, render_index

CLASSES = ["healthy", "</script><script>alert(1)</script>", 'rust, "late" & <b>bad</b>']
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]


def _record(path: str, label: int, confidence: float, decision: str | None = None) -> dict:
    record = {"path": path, "label": CLASSES[label], "label_index": label, "confidence": confidence, "stage": 1,
              "macs": 100_000_000, "overlay": None, "boxes": []}
    if decision is not None:
        record["decision"] = decision
    return record


# Least sure first: this is also the page's (and the CSV's) order.
RECORDS = [
    _record('plot 1/leaf, "a".jpg', 0, 0.20),  # an old record: no decision -> its label
    _record("b/é <img src=x onerror=alert(1)>.jpg", 0, 0.30, "unsure"),
    _record("c/</script>\n.jpg", 1, 0.40, "not_a_leaf"),
    _record("d.jpg", 2, 0.90, CLASSES[2]),
]


def _data_block(page: str) -> dict:
    match = re.search(r'<script type="application/json" id="review-data">(.*?)</script>', page, re.S)
    assert match
    return json.loads(match.group(1))


# ------------------------------------------------------------------------------------ static HTML
def test_data_block_is_escaped_and_exact(tmp_path):
    page = render_index(RECORDS, CLASSES, tmp_path / "out", tmp_path / "photos", run_id="run </script> 1")
    block = re.search(r'id="review-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in block and ">" not in block and "&" not in block
    data = _data_block(page)
    assert data["classes"] == CLASSES and data["run"] == "run </script> 1"
    assert data["header"] == list(CORRECTIONS_HEADER) == ["path", "predicted", "decision", "reviewed_label", "action"]
    assert [(p["path"], p["predicted"], p["decision"]) for p in data["photos"]] == [
        (r["path"], r["label_index"], decision_of(r, CLASSES)) for r in RECORDS]
    # Only the page's own script runs; every name in the HTML is escaped.
    assert page.count("<script>") == 1 and page.count("<script") == 2
    assert "<img src=x" not in page and "<b>bad" not in page
    assert html.escape(CLASSES[2]) in page and html.escape(RECORDS[2]["path"]) in page
    assert not re.search(r"(src|href)=\"(https?:)?//", page) and "<link" not in page


def test_decisions_and_refusal_filters(tmp_path):
    page = render_index(RECORDS, CLASSES, tmp_path, tmp_path)
    assert re.findall(r'data-filter="([^"]+)"', page) == ["all", "0", "1", "2", "not_a_leaf", "unsure"]
    assert re.findall(r'data-decision="([^"]+)"', page) == ["unsure", "not_a_leaf"]
    assert "refused: not a leaf (1)" in page and "refused: unsure (1)" in page
    # No refused photo, no refusal button.
    plain = render_index([RECORDS[0], RECORDS[3]], CLASSES, tmp_path, tmp_path)
    assert re.findall(r'data-filter="([^"]+)"', plain) == ["all", "0", "2"]
    assert 'data-decision="' not in plain
    assert decision_of(RECORDS[0], CLASSES) == "healthy"
    with pytest.raises(ValueError, match="decision 'maybe'"):
        decision_of({**RECORDS[0], "decision": "maybe"}, CLASSES)


def test_refusal_note_only_when_the_model_cannot_refuse(tmp_path):
    old = render_index(RECORDS[:1], CLASSES, tmp_path, tmp_path, refusal_available=False)
    assert 'id="refusal-note"' in old and "predates refusal" in old
    for value in (None, True):
        assert "refusal-note" not in render_index(RECORDS[:1], CLASSES, tmp_path, tmp_path, refusal_available=value)


# ------------------------------------------------------------------------------------- in Chromium
def _browser_or_skip():
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package (pip install playwright) drives Chromium for this test")
    executable = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if executable is None:
        pytest.skip("no chromium on PATH (apt-get install chromium) to check the review controls in a browser")
    return sync_api, executable


@pytest.mark.slow
def test_review_in_chromium_persists_and_downloads(tmp_path):
    sync_api, executable = _browser_or_skip()
    pages = {}
    for run in ("run-A", "run-B"):
        out = tmp_path / run
        out.mkdir()
        pages[run] = out / "index.html"
        pages[run].write_text(render_index(RECORDS, CLASSES, out, tmp_path / "photos", run_id=run), encoding="utf-8")
    problems: list[str] = []

    def card(page, i: int):
        return page.locator(f'article.card[data-i="{i}"]')

    def state(page) -> list[tuple[str | None, str, str]]:
        return [(card(page, i).get_attribute("data-review"), card(page, i).locator(".verdict").text_content(),
                 card(page, i).locator("select").input_value()) for i in range(len(RECORDS))]

    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(accept_downloads=True)
            context.set_default_timeout(30_000)
            page = context.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda msg: problems.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None)
            page.on("dialog", lambda dialog: (problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
            page.goto(pages["run-A"].resolve().as_uri())
            page.wait_for_selector('body[data-ready="1"]')
            assert page.locator("#reviewed").text_content() == "0 reviewed"
            assert page.locator("#download").is_disabled()
            # The class names reach the select as text, never as HTML.
            assert card(page, 0).locator("select option").all_text_contents() == ["another class\u2026", *CLASSES]

            card(page, 0).locator("button[data-act=confirm]").click()
            card(page, 1).locator("select").select_option(label=CLASSES[2])
            card(page, 2).locator("button[data-act=not_a_leaf]").click()
            card(page, 3).locator("button[data-act=confirm]").click()
            assert card(page, 3).get_attribute("data-review") == "confirm"
            card(page, 3).locator("button[data-act=undo]").click()  # undone: not in the CSV
            expected = [
                ("confirm", "\u2713 confirmed: healthy", ""),
                ("relabel", f"\u2192 relabelled: {CLASSES[2]}", "2"),
                ("not_a_leaf", "\u2717 not a leaf", ""),
                (None, "", ""),
            ]
            assert state(page) == expected
            assert page.locator("#reviewed").text_content() == "3 reviewed"
            assert not card(page, 3).locator("button[data-act=undo]").is_visible()

            page.reload()
            page.wait_for_selector('body[data-ready="1"]')
            assert state(page) == expected  # persisted across the reload
            assert page.locator("#reviewed").text_content() == "3 reviewed"

            # Refusal filter: only the photo the model called not a leaf.
            page.locator('nav button[data-filter="not_a_leaf"]').click()
            assert [card(page, i).is_visible() for i in range(len(RECORDS))] == [False, False, True, False]
            page.locator('nav button[data-filter="all"]').click()

            with page.expect_download() as info:
                page.locator("#download").click()
            download = info.value
            assert download.suggested_filename == "corrections.csv"
            saved = tmp_path / "corrections.csv"
            download.save_as(saved)

            # Another run's page in the same browser starts with no choices.
            other = context.new_page()
            other.goto(pages["run-B"].resolve().as_uri())
            other.wait_for_selector('body[data-ready="1"]')
            assert other.locator("#reviewed").text_content() == "0 reviewed"
            assert [s[0] for s in state(other)] == [None] * len(RECORDS)
        finally:
            browser.close()
    assert problems == []
    with open(saved, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows == [
        list(CORRECTIONS_HEADER),
        [RECORDS[0]["path"], "healthy", "healthy", "healthy", "confirm"],
        [RECORDS[1]["path"], "healthy", "unsure", CLASSES[2], "relabel"],
        [RECORDS[2]["path"], CLASSES[1], "not_a_leaf", "not_a_leaf", "not_a_leaf"],
    ]
    assert list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))[2]["path"] == "c/</script>\n.jpg"


@pytest.mark.slow
def test_severity_filter_and_sort_in_chromium(tmp_path):
    """The static page's severity filter hides the other classes and its sort puts the most severe first, then
    back to least sure first."""
    sync_api, executable = _browser_or_skip()
    shares = [3.5, 12.0, 0.4, 8.25]
    records = [{**record, "severity": share, "severity_class": "high" if share >= 5 else "low"}
               for record, share in zip(RECORDS, shares)]
    page_path = tmp_path / "index.html"
    page_path.write_text(render_index(records, CLASSES, tmp_path, tmp_path / "photos"), encoding="utf-8")
    problems: list[str] = []
    with sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page()
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.goto(page_path.resolve().as_uri())
            page.wait_for_selector('body[data-ready="1"]')
            order = page.locator("main article.card").evaluate_all("cards => cards.map(c => c.dataset.i)")
            page.locator("#sort-severity").click()
            by_severity = page.locator("main article.card").evaluate_all(
                "cards => cards.map(c => parseFloat(c.dataset.severity))")
            assert by_severity == sorted(shares, reverse=True)
            page.locator("#sort-severity").click()
            assert page.locator("main article.card").evaluate_all("cards => cards.map(c => c.dataset.i)") == order
            page.locator('nav button[data-filter="sev:high"]').click()
            visible = page.locator("main article.card:not([hidden])").evaluate_all(
                "cards => cards.map(c => c.dataset.sev)")
            assert visible == ["high", "high"]
        finally:
            browser.close()
    assert problems == []
