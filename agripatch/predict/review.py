"""The review page: one self-contained static ``index.html`` to check a folder's diagnoses by eye.

No server, no external script, font or stylesheet: inline CSS and a few lines of inline JS (class
filter buttons; ``index.html#class=<index>`` opens the page filtered). Photos are listed least sure
first, each with its heat overlay, the patches the diagnosis rests on, its label, confidence and
exit stage, and a relative link to the original photo. Every file and class name is HTML-escaped
(:func:`html.escape`) and every URL percent-encoded (:func:`urllib.parse.quote`); the script only ever
reads integer class indices from ``data-`` attributes, so no name can reach it.
"""

from __future__ import annotations

import html
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["file_url", "render_index"]

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f2;color:#1d1f1b}
header{padding:12px 18px;background:#24432b;color:#fff}
header h1{font-size:18px;margin:0 0 4px}
header p{margin:0;opacity:.85}
header a{color:#fff}
nav{padding:10px 18px;display:flex;flex-wrap:wrap;gap:6px;position:sticky;top:0;background:#f4f5f2;border-bottom:1px solid #ccd}
nav button{border:1px solid #8a9a87;background:#fff;border-radius:14px;padding:3px 10px;cursor:pointer;font:inherit}
nav button.on{background:#24432b;color:#fff;border-color:#24432b}
nav span{margin-left:auto;align-self:center;color:#555}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(340px,1fr));gap:14px;padding:14px 18px}
.card{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.15);padding:10px;overflow:hidden}
.card[hidden]{display:none}
.card img.ov{width:100%;height:auto;max-height:440px;object-fit:contain;display:block;border-radius:4px;background:#ddd}
.meta{margin:6px 0 2px;font-size:15px}
.conf{font-variant-numeric:tabular-nums}
.low{color:#b23b1c}
.name{color:#555;font-size:12px;word-break:break-all}
.crops{display:flex;gap:6px;margin-top:6px;flex-wrap:wrap}
.crops figure{margin:0;width:96px;font-size:11px;color:#444}
.crops img{width:96px;height:96px;object-fit:cover;display:block;border-radius:3px;background:#ddd}
.crops figure.unread img{opacity:.55}
footer{padding:10px 18px;color:#666;font-size:12px}
"""

_JS = """
(function () {
  var buttons = document.querySelectorAll("nav button[data-filter]");
  var cards = document.querySelectorAll("main .card");
  var shown = document.getElementById("shown");
  function apply(value) {
    var n = 0;
    for (var i = 0; i < cards.length; i++) {
      var show = value === "all" || cards[i].getAttribute("data-class") === value;
      cards[i].hidden = !show;
      if (show) { n++; }
    }
    for (var j = 0; j < buttons.length; j++) {
      buttons[j].className = buttons[j].getAttribute("data-filter") === value ? "on" : "";
    }
    shown.textContent = n + " shown";
  }
  function known(value) {
    for (var j = 0; j < buttons.length; j++) {
      if (buttons[j].getAttribute("data-filter") === value) { return true; }
    }
    return false;
  }
  for (var b = 0; b < buttons.length; b++) {
    buttons[b].addEventListener("click", function (event) {
      var value = event.currentTarget.getAttribute("data-filter");
      apply(value);
      if (window.history && history.replaceState) { history.replaceState(null, "", "#class=" + value); }
    });
  }
  var wanted = location.hash.replace(/^#class=/, "");
  apply(known(wanted) ? wanted : "all");
  document.body.setAttribute("data-ready", "1");
})();
"""


def file_url(target: Path, page_dir: Path) -> str:
    """Relative, percent-encoded URL from a page in ``page_dir`` to ``target`` (file: URI across drives)."""
    try:
        relative = os.path.relpath(target, page_dir)
    except ValueError:  # different drives on Windows
        return target.resolve().as_uri()
    return quote(Path(relative).as_posix(), safe="/")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _card(record: dict[str, Any], classes: Sequence[str], out_dir: Path, input_dir: Path) -> str:
    label = int(record["label_index"])
    confidence = float(record["confidence"])
    original = file_url(input_dir / record["path"], out_dir)
    overlay = quote(record["overlay"], safe="/") if record.get("overlay") else ""
    parts = [f'<article class="card" data-class="{label}" data-conf="{confidence:.6f}">']
    if overlay:
        parts.append(f'<a href="{original}"><img class="ov" src="{overlay}" loading="lazy" alt="{_e(record["path"])}"></a>')
    low = " low" if confidence < 0.5 else ""
    parts.append(
        f'<div class="meta"><b>{_e(classes[label])}</b> <span class="conf{low}">{confidence * 100:.1f}%</span>'
        f' &middot; stage {int(record["stage"])} &middot; {float(record["macs"]) / 1e9:.3f} GMACs</div>'
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
    parts.append("</article>")
    return "".join(parts)


def render_index(
    records: Sequence[dict[str, Any]],
    classes: Sequence[str],
    out_dir: Path,
    input_dir: Path,
    *,
    title: str = "agripatch predictions",
    subtitle: str = "",
    errors: int = 0,
) -> str:
    """The review page's HTML for ``records`` (the JSONL rows), least confident first.

    ``out_dir`` is where index.html will live (links are relative to it); ``input_dir`` the photo folder.
    """
    ordered = sorted(records, key=lambda r: (float(r["confidence"]), r["path"]))
    counts = [0] * len(classes)
    for record in ordered:
        counts[int(record["label_index"])] += 1
    buttons = [f'<button type="button" data-filter="all">all ({len(ordered)})</button>']
    for index, name in enumerate(classes):
        if counts[index]:
            buttons.append(f'<button type="button" data-filter="{index}">{_e(name)} ({counts[index]})</button>')
    cards = "\n".join(_card(record, classes, out_dir, input_dir) for record in ordered)
    error_note = f' &middot; <a href="errors.csv">{errors} unreadable</a>' if errors else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>"
        f"<header><h1>{_e(title)}</h1><p>{_e(subtitle)} &middot; {len(ordered)} photos, least sure first{error_note}</p></header>\n"
        f'<nav>{"".join(buttons)}<span id="shown"></span></nav>\n'
        f"<main>\n{cards}\n</main>\n"
        '<footer>Written by agripatch predict folder. Boxes: numbered by saliency; white = read by the classifier, '
        "grey = not needed (the cascade exited earlier).</footer>\n"
        f"<script>{_JS}</script>\n</body></html>\n"
    )
