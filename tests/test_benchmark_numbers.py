"""Every number in benchmarks/README.md is backed by a stored result (benchmarks/check_numbers.py)."""

import json
from pathlib import Path

from benchmarks.check_numbers import READMES, RESULTS, check, cited_files, numbers


def test_every_number_in_the_benchmarks_readme_is_in_a_cited_result():
    benchmarks_readme = READMES[0]
    unmatched = check(benchmarks_readme.read_text(), RESULTS)
    assert not unmatched, "\n".join(f"line {u.line}: {u.number} ({u.context})" for u in unmatched)


def test_a_made_up_number_is_reported_and_a_stored_one_is_not(tmp_path: Path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "result.json").write_text(json.dumps({"top1": 0.96874, "macs": 154000000, "s": 0.0453}))
    readme = (
        "## A section (`results/run/result.json`)\n"
        "\n"
        "top-1 0.9687 (96.9%) at 0.154 GMACs, a page in 45 ms, seed 0, 2026-12-05, torch 2.14.1, `--batch 16`;\n"
        "stale: 0.28 points.\n"
    )
    assert [p.name for p in cited_files(readme, tmp_path)] == ["result.json"]
    unmatched = check(readme, tmp_path)
    assert [(u.line, u.number) for u in unmatched] == [(4, "0.28")]


def test_identifiers_dates_and_versions_are_not_read_as_measurements():
    line = "top-1 of seed 1 on the H200, torch 2.11.0, `--batch 64`, issue 24, 4x4 cells of 107 px, 2026-11-29: 0.97"
    assert numbers(line) == [("0.97", len(line) - 4)]
