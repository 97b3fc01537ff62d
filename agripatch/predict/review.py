"""The review page: one self-contained static ``index.html`` to check a folder's diagnoses by eye.

No server, no external script, font or stylesheet: inline CSS and a few lines of inline JS. Photos are
listed least sure first, each with its heat overlay, the patches the diagnosis rests on, its label,
confidence and exit stage, the model's decision when it refused (``not_a_leaf`` / ``unsure``), and a
relative link to the original photo. Filter buttons show one class (by top class) or one kind of
refusal; ``index.html#class=<index>`` (or ``#class=not_a_leaf`` / ``#class=unsure``) opens the page filtered.

Reviewing: on each card the reviewer can *confirm* the diagnosis, *pick another class*, or mark the
photo *not a leaf*, and undo that. Choices live in the browser's localStorage under a key made of the
run id (``run_id``, else the page's path), so they survive reloads and two review pages never mix.
"Download corrections CSV" saves ``corrections.csv`` (:data:`CORRECTIONS_HEADER`), which
``agripatch datasets add-reviewed`` turns into training images.

Safety: every file and class name in the HTML is escaped (:func:`html.escape`) and every URL
percent-encoded (:func:`urllib.parse.quote`). The script reads names only from one
``<script type="application/json">`` block whose ``<``, ``>`` and ``&`` are written as ``\\u003c`` etc.
(so no name can close it), and puts them on the page with ``textContent`` only, never as HTML.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from agripatch.data.corrections import CORRECTIONS_HEADER
from agripatch.resources import resource_dir

__all__ = ["CORRECTIONS_HEADER", "REFUSALS", "asset", "decision_of", "file_url", "filter_counts", "json_for_script",
           "refusal_of", "render_index", "severity_counts"]

"""Columns of the ``corrections.csv`` the page downloads: the record's path (relative to the photo
folder), its top class, the model's decision (a class, ``not_a_leaf`` or ``unsure``), the reviewer's
label (a class or ``not_a_leaf``) and the action (``confirm``, ``relabel`` or ``not_a_leaf``)."""
REFUSALS: tuple[str, ...] = ("not_a_leaf", "unsure")


@lru_cache(maxsize=None)
def asset(name: str) -> str:
    """The page's stylesheet or script, shipped as package data (``agripatch/resources/review/``) and inlined,
    so the page stays one self-contained file."""
    return (resource_dir("review") / name).read_text(encoding="utf-8")
_REFUSAL_TEXT = {"not_a_leaf": "not a leaf", "unsure": "unsure"}


# Filters, then review choices. Names come only from the JSON block and reach the page through
# textContent / new Option(text, value), never as HTML.

_REVIEW_CONTROLS = (
    '<div class="review"><button type="button" data-act="confirm">confirm</button>'
    '<select data-act="relabel" aria-label="another class"><option value="">another class\u2026</option></select>'
    '<button type="button" data-act="not_a_leaf">not a leaf</button>'
    '<button type="button" data-act="undo" class="undo">undo</button>'
    '<span class="verdict"></span></div>'
)


def file_url(target: Path, page_dir: Path) -> str:
    """Relative, percent-encoded URL from a page in ``page_dir`` to ``target`` (file: URI across drives)."""
    try:
        relative = os.path.relpath(target, page_dir)
    except ValueError:  # different drives on Windows
        return target.resolve().as_uri()
    return quote(Path(relative).as_posix(), safe="/")


def decision_of(record: dict[str, Any], classes: Sequence[str]) -> str:
    """The record's decision: a trained class name, ``not_a_leaf`` or ``unsure``; the label when absent.

    Records written before refusal existed have no ``decision``: their decision is their top class.
    Anything else is a bug in whoever wrote the record, so it raises ValueError naming the photo.
    """
    label = classes[int(record["label_index"])]
    decision = record.get("decision")
    if decision is None:
        return label
    if decision in REFUSALS or decision in classes:
        return str(decision)
    raise ValueError(f"record {record.get('path')!r} has decision {decision!r}; "
                     f"expected one of the classes, {' or '.join(REFUSALS)}")


def refusal_of(decision: str, predicted: str) -> str | None:
    """The refusal (``not_a_leaf`` or ``unsure``) a decision stands for, None when it names a class: a model whose
    top class is itself called like a refusal answered that class. One rule for both review pages' badges and
    filters."""
    return decision if decision in REFUSALS and decision != predicted else None


def severity_counts(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    """Photos per severity class, least severe first (by share), for the severity filters of both review pages."""
    counts: dict[str, int] = {}
    for record in sorted(records, key=lambda r: float(r.get("severity") or 0.0)):
        if record.get("severity_class") is not None:
            counts[record["severity_class"]] = counts.get(record["severity_class"], 0) + 1
    return counts


def filter_counts(records: Sequence[dict[str, Any]], decisions: Sequence[str],
                  classes: Sequence[str]) -> tuple[list[int], dict[str, int]]:
    """Photos per top class and per refusal, for the filter buttons of both review pages."""
    counts = [0] * len(classes)
    refusals = dict.fromkeys(REFUSALS, 0)
    for record, decision in zip(records, decisions):
        label = int(record["label_index"])
        counts[label] += 1
        refused = refusal_of(decision, classes[label])
        if refused is not None:
            refusals[refused] += 1
    return counts, refusals


def view_phrase(view: str) -> str:
    """How a review card names the view of the glance the refusal judged a photo on (a record's ``refusal_view``)."""
    if view == "exposure":
        return "re-exposed to its training photos' brightness"
    if view.startswith("turn") and view[4:].isdigit():
        return f"turned {view[4:]}\N{DEGREE SIGN} anticlockwise"
    return view


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def json_for_script(value: Any) -> str:
    """JSON safe inside <script type="application/json">: no '<', '>' or '&' (so no '</script>' or '<!--')."""
    text = json.dumps(value, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _card(index: int, record: dict[str, Any], decision: str, classes: Sequence[str], out_dir: Path,
          input_dir: Path) -> str:
    label = int(record["label_index"])
    confidence = float(record["confidence"])
    original = file_url(input_dir / record["path"], out_dir)
    overlay = quote(record["overlay"], safe="/") if record.get("overlay") else ""
    refused = refusal_of(decision, classes[label])
    extra = f' data-decision="{refused}"' if refused else ""
    notes = ""
    if record.get("severity") is not None:
        extra += f' data-severity="{float(record["severity"]):.2f}" data-sev="{_e(record["severity_class"])}"'
        notes = (f' &middot; <span class="sev">severity {float(record["severity"]):.1f}% '
                 f'({_e(record["severity_class"])})</span>')
    if record.get("turned"):
        notes += f' &middot; read turned {int(record["turned"])}&deg; clockwise'
    if record.get("refusal_view"):
        notes += f' &middot; refusal judged it {_e(view_phrase(record["refusal_view"]))}'
    also = [f for f in record.get("findings") or [] if int(f["index"]) != label]
    if also:
        notes += " &middot; also " + ", ".join(f'{_e(f["class"])} {float(f["prob"]) * 100:.0f}%' for f in also)
    parts = [f'<article class="card" data-class="{label}" data-conf="{confidence:.6f}" data-i="{index}"{extra}>']
    if overlay:
        parts.append(f'<a href="{original}"><img class="ov" src="{overlay}" loading="lazy" alt="{_e(record["path"])}"></a>')
    low = " low" if confidence < 0.5 else ""
    if refused:
        badge = f' <span class="refused">refused: {_REFUSAL_TEXT[refused]}</span>'
    elif decision != classes[label]:
        badge = f' <span class="refused">decision: {_e(decision)}</span>'
    else:
        badge = ""
    parts.append(
        f'<div class="meta"><b>{_e(classes[label])}</b> <span class="conf{low}">{confidence * 100:.1f}%</span>'
        f' &middot; stage {int(record["stage"])}{" (whole photo)" if record.get("whole_photo") else ""} &middot; {float(record["macs"]) / 1e9:.3f} GMACs{notes}{badge}</div>'
    )
    parts.append(f'<div class="name"><a href="{original}">{_e(record["path"])}</a></div>')
    crops = []
    for patch in record.get("boxes", []):
        if not patch.get("crop"):
            continue
        src = quote(patch["crop"], safe="/")
        if patch.get("read"):
            caption = f'{patch["k"]}: {_e(classes[int(patch["label_index"])])} {float(patch["prob"]) * 100:.0f}%'
            css = ""
        else:
            caption = f'{patch["k"]}: not read'
            css = ' class="unread"'
        crops.append(f'<figure{css}><a href="{src}"><img src="{src}" loading="lazy" alt="patch {patch["k"]}"></a>'
                     f'<figcaption>{caption}</figcaption></figure>')
    if crops:
        parts.append('<div class="crops">' + "".join(crops) + "</div>")
    parts.append(_REVIEW_CONTROLS)
    parts.append("</article>")
    return "".join(parts)


def _severity_buttons(records: Sequence[dict[str, Any]]) -> list[str]:
    """A filter per severity class present (``sev:NAME``) and the sort-by-severity toggle; none without severity."""
    counts = severity_counts(records)
    if not counts:
        return []
    buttons = [f'<button type="button" class="sev" data-filter="sev:{_e(name)}">severity: {_e(name)} ({count})</button>'
               for name, count in counts.items()]
    return buttons + ['<button type="button" id="sort-severity">most severe first</button>']


def render_index(
    records: Sequence[dict[str, Any]],
    classes: Sequence[str],
    out_dir: Path,
    input_dir: Path,
    *,
    title: str = "agripatch predictions",
    subtitle: str = "",
    errors: int = 0,
    run_id: str | None = None,
    refusal_available: bool | None = None,
) -> str:
    """The review page's HTML for ``records`` (the JSONL rows), least confident first.

    ``out_dir`` is where index.html will live (links are relative to it); ``input_dir`` the photo folder.
    ``run_id`` names this run in the browser's storage, so review choices of two pages never mix (the
    page's own path is used when it is None). ``refusal_available=False`` says on the page that the
    model cannot refuse (every photo got a trained class); None or True say nothing.
    """
    ordered = sorted(records, key=lambda r: (float(r["confidence"]), r["path"]))
    decisions = [decision_of(record, classes) for record in ordered]
    counts, refusals = filter_counts(ordered, decisions, classes)
    buttons = [f'<button type="button" data-filter="all">all ({len(ordered)})</button>']
    for index, name in enumerate(classes):
        if counts[index]:
            buttons.append(f'<button type="button" data-filter="{index}">{_e(name)} ({counts[index]})</button>')
    for refusal, count in refusals.items():
        if count:
            buttons.append(f'<button type="button" class="refusal" data-filter="{refusal}">'
                           f'refused: {_REFUSAL_TEXT[refusal]} ({count})</button>')
    buttons.extend(_severity_buttons(ordered))
    cards = "\n".join(_card(i, record, decision, classes, out_dir, input_dir)
                      for i, (record, decision) in enumerate(zip(ordered, decisions)))
    payload = {
        "run": run_id or "",
        "header": list(CORRECTIONS_HEADER),
        "classes": list(classes),
        "photos": [{"path": record["path"], "predicted": int(record["label_index"]), "decision": decision}
                   for record, decision in zip(ordered, decisions)],
    }
    error_note = f' &middot; <a href="errors.csv">{errors} unreadable</a>' if errors else ""
    refusal_note = ""
    if refusal_available is False:
        refusal_note = ('<p class="note" id="refusal-note">This model predates refusal: every photo gets one of its '
                        "trained classes, even a photo that is not a leaf. Mark those \u201cnot a leaf\u201d below.</p>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{asset('review.css')}</style></head>\n<body>"
        f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)} &middot; {len(ordered)} photos, least sure first{error_note}</p>"
        f"{refusal_note}</header>\n"
        f'<nav>{"".join(buttons)}<span id="shown"></span><span id="store-note"></span><span id="reviewed"></span>'
        '<button type="button" id="download" disabled>Download corrections CSV</button></nav>\n'
        f"<main>\n{cards}\n</main>\n"
        '<footer>Written by agripatch predict folder. Boxes: numbered by saliency; white = read by the classifier, '
        "grey = not needed (the cascade exited earlier). Review choices stay in this browser until you download "
        "corrections.csv; <code>agripatch datasets add-reviewed</code> adds them to a training set. To review as a team, "
        "with every decision kept on a server: <code>agripatch review serve</code> on this folder.</footer>\n"
        f'<script type="application/json" id="review-data">{json_for_script(payload)}</script>\n'
        f"<script>{asset('review.js')}</script>\n</body></html>\n"
    )
