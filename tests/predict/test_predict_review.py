"""Tests for the static review page (agripatch.predict.review)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from predict_helpers import chromium_dom

from agripatch.predict.review import file_url, render_index

CLASSES = ["healthy", "<script>alert(1)</script>", "rust/../x"]


def _record(path: str, label: int, confidence: float, crops: bool = True) -> dict:
    boxes = []
    if crops:
        boxes = [{"k": 1, "read": True, "label_index": label, "prob": 0.8, "crop": f"crops/{path}-x/patch1_a_0.800.jpg"},
                 {"k": 2, "read": False, "label_index": None, "prob": None, "crop": f"crops/{path}-x/patch2_unread.jpg"}]
    return {"path": path, "label_index": label, "confidence": confidence, "stage": 1, "macs": 123_000_000,
            "overlay": f"overlays/{path}-x.jpg", "boxes": boxes}


RECORDS = [
    _record("a b/é.jpg", 0, 0.91),
    _record('x"><img src=y onerror=alert(2)>.jpg', 1, 0.35),
    _record("c#1?.jpg", 2, 0.6, crops=False),
    _record("d.jpg", 0, 0.2),
]


def _page(tmp_path: Path) -> str:
    return render_index(RECORDS, CLASSES, tmp_path / "out", tmp_path / "photos", subtitle="<i>sub</i>", errors=2)


def test_sorted_least_confident_first(tmp_path):
    page = _page(tmp_path)
    confs = [float(c) for c in re.findall(r'data-conf="([0-9.]+)"', page)]
    assert confs == sorted(confs) == [0.2, 0.35, 0.6, 0.91]


def test_names_escaped_and_urls_encoded(tmp_path):
    page = _page(tmp_path)
    assert page.count("<script>") == 1  # only the page's own script
    assert "<img src=y" not in page and "<i>sub" not in page
    assert html.escape(CLASSES[1]) in page and html.escape(RECORDS[1]["path"]) in page
    assert 'href="../photos/a%20b/%C3%A9.jpg"' in page
    assert 'href="../photos/c%231%3F.jpg"' in page  # '#' and '?' would otherwise cut the link
    assert 'src="crops/a%20b/%C3%A9.jpg-x/patch1_a_0.800.jpg"' in page
    assert 'href="errors.csv"' in page and "2 unreadable" in page


def test_filter_buttons_only_for_predicted_classes(tmp_path):
    page = _page(tmp_path)
    assert re.findall(r'data-filter="([^"]+)"', page) == ["all", "0", "1", "2"]
    two = render_index(RECORDS[:1], CLASSES, tmp_path, tmp_path)
    assert re.findall(r'data-filter="([^"]+)"', two) == ["all", "0"]


def test_self_contained(tmp_path):
    page = _page(tmp_path)
    assert not re.search(r"(src|href)=\"(https?:)?//", page)
    assert "<link" not in page and "@import" not in page and "url(" not in page


def test_the_card_names_the_view_the_refusal_judged_a_photo_on(tmp_path):
    records = [{**RECORDS[0], "refusal_view": "exposure"}, {**RECORDS[3], "refusal_view": "turn270"},
               {**RECORDS[2], "refusal_view": None}]
    page = render_index(records, CLASSES, tmp_path / "out", tmp_path / "photos")
    assert page.count("refusal judged it re-exposed to its training photos&#x27; brightness") == 1
    assert page.count("refusal judged it turned 270\N{DEGREE SIGN} anticlockwise") == 1
    assert page.count("refusal judged it") == 2


def test_file_url_relative(tmp_path):
    assert file_url(tmp_path / "photos" / "x y.jpg", tmp_path / "out") == "../photos/x%20y.jpg"
    assert file_url(tmp_path / "out" / "crops" / "a.jpg", tmp_path / "out") == "crops/a.jpg"


@pytest.mark.slow
def test_chromium_filters_by_fragment(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    page = out / "index.html"
    page.write_text(_page(tmp_path), encoding="utf-8")
    dom, console = chromium_dom(page, tmp_path / "profile", "#class=0")
    assert console == []
    assert 'data-ready="1"' in dom
    cards = re.findall(r'<article class="card" data-class="(\d)"[^>]*?( hidden="")?>', dom)
    assert len(cards) == 4
    assert sorted(cls for cls, hidden in cards if not hidden) == ["0", "0"]
    assert "2 shown" in dom
    # An unknown fragment shows everything.
    dom, console = chromium_dom(page, tmp_path / "profile", "#class=<script>")
    assert console == [] and "4 shown" in dom and ' hidden=""' not in dom
