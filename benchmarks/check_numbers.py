"""Is every number in the READMEs backed by a stored result?

    python -m benchmarks.check_numbers            # table of unmatched numbers; exit 1 if any

Hand-written numbers go stale: a sentence keeps an old ablation's value after the JSON was rerun. This reads
``benchmarks/README.md`` and ``README.md`` section by section (``##`` headings), takes every number that states a
measurement, and looks for it in the stored results the section names (any path or file name ending in .json,
.md or .txt, globs allowed, found under ``benchmarks/results/``), or in every stored result when the section names
none. Numbers inside generated ``<!-- name:start -->`` ... ``<!-- name:end -->`` blocks are checked the same way.

A printed number matches when some stored number rounds to it at the printed precision, as it is, x100 (a share
printed as a percentage or points), x1000 (ms from seconds), /60 (minutes from seconds) or /1e9 (GMACs from
MACs); signs are ignored. A ratio printed as ``1.93x`` or ``47%`` also matches the quotient of two other numbers
of its line (a table row). Stored numbers are the JSON values and keys, and the numbers written in the stored
.md/.txt reports (which the benchmarks generate from their JSON). Not measurements, so skipped: code spans and
blocks, dates, years, version numbers, identifiers (``top-1``, ``H200``, ``@224``, ``4x4``, ``seed 0``,
``issue 24``), sizes in px, targets (``target 0.90``, ``<= 2%``) and numbered list items.

What it cannot see: a number that matches the wrong value of a cited file (a large file holds many numbers, so
a short one such as ``2.1`` may match by chance); keep each section's citations narrow. The result also goes to
``benchmarks/results/check_numbers.json``.
"""

from __future__ import annotations

import bisect
import glob
import json
import math
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
READMES = (REPO / "benchmarks" / "README.md", REPO / "README.md")
OUT = RESULTS / "check_numbers.json"
SCALES = (1.0, 100.0, 1000.0, 1 / 60, 1e-9)

NUMBER = re.compile(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")
# Removed before numbers are read: code spans, dates, version-like dotted triples (torch 2.14.1, 127.0.0.1),
# sizes (160 px, 8-px), shapes (4x4, 500×500), model sizes (@224), K = 1..8 style ranges and HTML comments.
NOT_MEASURED = re.compile(
    r"`[^`]*`|<!--.*?-->|\b\d{4}-\d{2}-\d{2}\b|\b\d+(?:\.\d+){2,}\S*|\d+(?:\.\d+)?[- ]?px\b"
    r"|(?<![\d.])\d+ ?[x×] ?\d+(?![\d.])|@\d+|\b\d+\.\.\d+\b|\^\d+")
# A number right after one of these words names a thing, not a measurement.
LABELS = re.compile(r"(?:\b(?:issue|issues|item|seed|seeds|stride|batch|fold|folds|step|Python|torch|NCCL|exit|exits"
                    r"|k|K|T|patch|patches|class|round|top|table)\s*[=+]?\s*"  # seed 0, issue 24, K = 3
                    r"|\b[Tt]argets?\b[^.;:)\d]{0,30}|(?<!-)[<>]=?\s*)$")  # target 0.90, <= 2%: goals, not results
CITED = re.compile(r"[\w./*{},<>\[\]-]+\.(?:json|md|txt|\{[^}]*\})(?![\w.])|\bresults/[\w/-]+/(?![\w.])")


@dataclass
class Unmatched:
    """One printed number no cited result holds."""

    section: str
    line: int
    number: str
    context: str


def numbers(line: str) -> list[tuple[str, int]]:
    """The measurement-like numbers of one markdown line: (as printed, column)."""
    text = NOT_MEASURED.sub(lambda m: " " * len(m.group()), line)
    if re.match(r"\s*\d+\.\s", text):  # a numbered list item's number
        text = re.sub(r"\d+\.", lambda m: " " * len(m.group()), text, count=1)
    found = []
    for m in NUMBER.finditer(text):
        start, token = m.start(), m.group()
        before = text[:start]
        if before[-1:].isalpha() or before[-1:] in tuple("_./"):  # part of a name: H200, bf16, v2, a/b paths
            continue
        if token[0] in "+-" and before[-1:].isalnum():  # 82-85 or k+5: a range's end / an identifier
            token, start = token[1:], start + 1
            if before[-1:].isalpha():
                continue
        after = text[m.end():]
        if after[:1].isalpha() and not re.match(r"x\b", after) or after[:1] == "-" and after[1:2].isalpha():
            continue  # 2nd, 1-process, 12-MP (but 1.93x is a ratio)
        digits = token.lstrip("+-").replace(",", "")
        if re.fullmatch(r"(19|20)\d\d", digits):  # a year
            continue
        if LABELS.search(before):
            continue
        found.append((token, start))
    return found


def _precision(token: str) -> float:
    """Half a unit of the token's last printed digit (0.9687 -> 0.00005, 233 -> 0.5, 1e-7 -> a tenth of it)."""
    mantissa, _, exponent = token.lower().partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


def stored_values(paths: list[Path]) -> list[float]:
    """Sorted absolute values of every number in these results: JSON values and keys, numbers in .md/.txt text."""
    values: set[float] = set()

    def walk(x) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(k)
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)
        elif isinstance(x, bool) or x is None:
            return
        elif isinstance(x, (int, float)):
            if math.isfinite(x):  # a NaN would break the sorted order bisect relies on (its place varies by run)
                values.add(abs(float(x)))
        elif isinstance(x, str):
            values.update(abs(float(t.replace(",", ""))) for t in NUMBER.findall(x))

    for path in paths:
        text = path.read_text(errors="replace")
        walk(json.loads(text) if path.suffix == ".json" else text)
    return sorted(values)


def matches(token: str, values: list[float]) -> bool:
    """Does some stored value, as is or times one of ``SCALES``, round to the printed token?"""
    printed = abs(float(token.replace(",", "")))
    half = _precision(token) * (1 + 1e-9) + 1e-12
    for scale in SCALES:
        lo, hi = (printed - half) / scale, (printed + half) / scale
        i = bisect.bisect_left(values, lo)
        if i < len(values) and values[i] <= hi:
            return True
    return False


def is_ratio(token: str, after: str, line_numbers: list[tuple[str, int]]) -> bool:
    """A ratio printed as 1.93x or 47% may be the quotient of two other numbers of the same line (a table row)."""
    if not after.startswith(("x", "%")):
        return False
    others = [abs(float(t.replace(",", ""))) for t, _ in line_numbers if t != token]
    return matches(token, sorted(a / b for a in others for b in others if b and a != b))


def cited_files(text: str, results: Path = RESULTS) -> list[Path]:
    """The stored results a section names: `results/protocol/ibean.json`, `results/profile/` (a folder), globs and
    braces (`results/gpu/gpu_check.{json,md}`). A bare file name (`plantvillage_mini.json`) is looked up beside the
    last path the section named before it; with none before it, it names no result (`summary.json` of a run)."""
    found: set[Path] = set()
    folder = None
    for name in CITED.findall(text):
        name = re.sub(r"<[^>]*>", "*", re.sub(r"^(?:\.\.\.|\.\./)+", "*", name)).removeprefix("benchmarks/")
        if name.startswith("results/"):
            name = name.removeprefix("results/")
            folder = name.rpartition("/")[0] if "/" in name else ""
        elif "/" in name or folder is None:
            continue
        else:
            name = f"{folder}/{name}" if folder else name
        name += "**/*" if name.endswith("/") else ""  # a folder: every file in it
        brace = re.search(r"\{([^}]*)\}", name)
        parts = brace.group(1).split(",") if brace else [""]
        for n in ([name[:brace.start()] + part + name[brace.end():] for part in parts] if brace else [name]):
            found.update(Path(p) for p in glob.glob(str(results / n), recursive=True))
    return sorted(p for p in found if p.is_file() and p.resolve() != OUT.resolve())


def sections(text: str) -> list[tuple[str, int, list[str]]]:
    """(heading, first line number, lines) per ``##`` section; text before the first one is "(top)"."""
    out: list[tuple[str, int, list[str]]] = [("(top)", 1, [])]
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("## "):
            out.append((line[3:].strip(), number, []))
        out[-1][2].append(line)
    return out


def check(text: str, results: Path = RESULTS, citations: bool = True) -> list[Unmatched]:
    """Every printed measurement of a README's text that no result its section cites holds.

    ``citations=False`` checks every section against every stored result: the top-level README points to
    benchmarks/README.md, and the file names it gives (``summary.json``) are a run's outputs, not results."""
    stored = [p for p in results.rglob("*") if p.suffix in (".json", ".md", ".txt") and p.resolve() != OUT.resolve()]
    everything = stored_values([p for p in stored if p.is_file()])
    unmatched = []
    for heading, first, lines in sections(text):
        cited = cited_files("\n".join(lines), results) if citations else []
        values = stored_values(cited) if cited else everything
        fenced, previous = False, ""
        for offset, line in enumerate(lines):
            if line.lstrip().startswith("```"):
                fenced = not fenced
            indented_code = line.startswith("    ") and not previous.strip()
            previous = line if not indented_code else ""
            if fenced or indented_code or line.lstrip().startswith("```"):
                continue
            found = numbers(line)
            for token, column in found:
                if not matches(token, values) and not is_ratio(token, line[column + len(token):], found):
                    context = line[max(0, column - 50):column + 40].strip()
                    unmatched.append(Unmatched(heading[:60], first + offset, token, context))
    return unmatched


def main() -> int:
    """Check both READMEs, print the unmatched numbers per section and write them to ``OUT``."""
    report: dict[str, list[dict]] = {}
    for readme in READMES:
        rows = check(readme.read_text(), citations=readme.parent != REPO)
        report[str(readme.relative_to(REPO))] = [asdict(r) for r in rows]
        print(f"{readme.relative_to(REPO)}: {len(rows)} unmatched numbers")
        section = None
        for r in rows:
            if r.section != section:
                section = r.section
                print(f"\n## {section}\n| line | number | context |\n|---|---|---|")
            print(f"| {r.line} | {r.number} | {r.context} |")
        print()
    OUT.write_text(json.dumps({"unmatched": report, "total": sum(map(len, report.values()))}, indent=1) + "\n")
    return 1 if any(report.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
