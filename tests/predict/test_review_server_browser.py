"""The served review page in a real headless Chromium: two reviewers in two browser contexts decide on the same photos
at once; the database holds every decision, the disagreement filter shows the conflicts, the download equals what
was decided, and nothing a reviewer typed ever runs as script.

Debian's Chromium (``apt-get install chromium``) driven by the ``playwright`` package; skips with a reason without
either (as the static page's browser test does).
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from review_helpers import CLASSES, running, write_review_output
from test_review_controls import CHROMIUM_FLAGS, _browser_or_skip

from agripatch.data.corrections import CORRECTIONS_HEADER
from agripatch.data.review_store import ReviewStore
from agripatch.predict.review_server import PAGE_SIZE, open_review

N = PAGE_SIZE + 10  # two pages


def _open(browser, base: str, name: str, problems: list[str]):
    context = browser.new_context(accept_downloads=True)
    context.set_default_timeout(30_000)
    page = context.new_page()
    page.on("pageerror", lambda error: problems.append(f"{name}: page error: {error}"))
    page.on("console", lambda msg: problems.append(f"{name}: console: {msg.text}") if msg.type == "error" else None)
    page.on("response", lambda r: problems.append(f"{name}: {r.status} {r.url}") if r.status >= 400 else None)
    page.on("dialog", lambda dialog: (problems.append(f"{name}: dialog: {dialog.message}"), dialog.dismiss()))
    page.goto(f"{base}/review/0/")
    page.wait_for_selector('body[data-ready="1"]')
    assert page.locator("article.card .review button").first.is_disabled()  # no name, no decisions
    page.locator("#reviewer").fill(name)
    page.locator("#reviewer").press("Tab")  # the change event
    page.wait_for_selector('body[data-ready="1"] article.card .review button:not([disabled])')
    return page


def _card(page, i: int):
    return page.locator(f'article.card[data-i="{i}"]')


def _saved(page, indices):
    for i in indices:
        _card(page, i).locator(".saved.ok").wait_for()


@pytest.mark.slow
def test_two_reviewers_at_once_in_chromium(tmp_path):
    sync_api, executable = _browser_or_skip()
    records = sorted(write_review_output(tmp_path / "out", tmp_path / "photos", N),
                     key=lambda r: (r["confidence"], r["path"]))
    predicted = [CLASSES[r["label_index"]] for r in records]
    other = [CLASSES[(r["label_index"] + 1) % len(CLASSES)] for r in records]
    problems: list[str] = []
    ana, ben = "ana", "ben <img src=x onerror=alert(1)>"
    with running(open_review([tmp_path / "out"], port=0)) as base, sync_api.sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            a, b = _open(browser, base, ana, problems), _open(browser, base, ben, problems)
            assert a.locator("article.card").count() == PAGE_SIZE
            assert a.locator("#shown").text_content() == f"1\u2013{PAGE_SIZE} of {N} shown"
            # Both click before either waits: requests of the two contexts are in flight together.
            _card(a, 0).locator("button[data-act=confirm]").click()
            _card(b, 0).locator("button[data-act=confirm]").click()
            _card(a, 1).locator("select").select_option(label=other[1])
            _card(b, 1).locator("button[data-act=not_a_leaf]").click()
            _card(b, 2).locator("input.note").fill("<script>alert('note')</script>")
            _card(b, 2).locator("select").select_option(label=other[2])
            _card(a, 2).locator("button[data-act=confirm]").click()
            _card(a, 3).locator("button[data-act=not_a_leaf]").click()
            _saved(a, [0, 1, 2, 3])
            _saved(b, [0, 1, 2])

            # The disagreement filter shows exactly the two conflicts.
            a.locator('nav button[data-filter="conflicts"]').click()
            a.wait_for_selector('body[data-ready="1"]')
            assert a.locator("article.card").evaluate_all("cards => cards.map(c => Number(c.dataset.i))") == [1, 2]
            others = _card(a, 2).locator("ul.others li").all_text_contents()
            assert sorted(others[:2]) == sorted([f"{ana}: {predicted[2]}",
                                                 f"{ben}: {other[2]} \u2014 <script>alert('note')</script>"])
            assert "reviewers disagree" in others[2]
            _card(a, 1).locator("button[data-act=settle]").click()  # ana settles photo 1 with her relabel
            _saved(a, [1])
            assert _card(a, 1).get_attribute("data-conflict") is None
            a.locator('nav button[data-filter="conflicts"]').click()
            a.wait_for_selector('body[data-ready="1"]')
            assert a.locator("article.card").evaluate_all("cards => cards.map(c => Number(c.dataset.i))") == [2]

            # An offline page's corrections.csv, uploaded by ben: one row saved, one refused with its line.
            offline = tmp_path / "offline.csv"
            offline.write_text(",".join(CORRECTIONS_HEADER) + "\n"
                               f"{records[5]['path']},{predicted[5]},{records[5]['decision']},not_a_leaf,not_a_leaf\n"
                               f"elsewhere.jpg,{predicted[5]},x,{predicted[5]},confirm\n", encoding="utf-8")
            b.locator("#upload").set_input_files(str(offline))
            sync_api.expect(b.locator("#status")).to_have_text(re.compile("^uploaded"))  # (the CSP forbids eval)
            assert b.locator("#status").text_content() == (
                "uploaded: 1 decision(s) saved, 1 row(s) refused \u00b7 line 3: not a photo of this output; "
                "upload the CSV of this review page")

            # Pages: the second page holds the last N - PAGE_SIZE photos.
            a.locator('nav button[data-filter="all"]').click()
            a.wait_for_selector('body[data-ready="1"]')
            a.locator("#next").click()
            a.wait_for_selector(f'body[data-ready="1"] article.card[data-i="{PAGE_SIZE}"]')
            assert a.locator("article.card").count() == N - PAGE_SIZE and a.locator("#next").is_disabled()

            sync_api.expect(a.locator("#totals")).to_have_text(re.compile("^4 of"))
            with a.expect_download() as info:
                a.locator("#download").click()
            saved = tmp_path / "corrections.csv"
            info.value.save_as(saved)
        finally:
            browser.close()
    assert problems == []
    rows = list(csv.reader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert rows == [list(CORRECTIONS_HEADER),
                    [records[0]["path"], predicted[0], records[0]["decision"], predicted[0], "confirm"],
                    [records[1]["path"], predicted[1], records[1]["decision"], other[1], "relabel"],
                    [records[3]["path"], predicted[3], records[3]["decision"], "not_a_leaf", "not_a_leaf"],
                    [records[5]["path"], predicted[5], records[5]["decision"], "not_a_leaf", "not_a_leaf"]]
    store = ReviewStore.open(tmp_path / "out" / "review.sqlite3")
    try:
        history = store.history(store.outputs()[0].id)
        clicks = sorted((d.photo, d.reviewer, d.label, d.settles) for rows_ in history.values() for d in rows_)
        paths = [r["path"] for r in records]
        assert clicks == sorted([(paths[0], ana, predicted[0], False), (paths[0], ben, predicted[0], False),
                                 (paths[1], ana, other[1], False), (paths[1], ben, "not_a_leaf", False),
                                 (paths[2], ben, other[2], False), (paths[2], ana, predicted[2], False),
                                 (paths[3], ana, "not_a_leaf", False), (paths[1], ana, other[1], True),
                                 (paths[5], ben, "not_a_leaf", False)])
    finally:
        store.close()
