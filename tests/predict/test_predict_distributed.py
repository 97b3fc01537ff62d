"""`predict folder` under torchrun: each rank predicts its share into OUT/parts/, rank 0 merges.

The slow tests launch `python -m torch.distributed.run --standalone --nproc_per_node 2 -m agripatch predict
folder ...` on CPU (gloo) and compare with a one-process run of the same folder, byte for byte. A rank is
killed mid-run with the documented test hook AGRIPATCH_TEST_KILL_AFTER_BATCHES="<rank>:<batches>" (the rank
SIGKILLs itself after appending that many batches: deterministic, no sleeps).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from predict_helpers import jpeg_bytes, predict_folder, upright_pattern, write_synthetic

from agripatch.distributed import DistContext
from agripatch.errors import AgripatchError
from agripatch.predict import shards
from agripatch.predict.outputs import (
    CSV_COLUMNS,
    ERROR_COLUMNS,
    OutputDir,
    csv_line,
    csv_text,
)

REPO = Path(__file__).resolve().parents[2]
MERGED = ("predictions.csv", "predictions.jsonl", "errors.csv", "index.html")
# Photos are predicted one per batch in every run below, so each photo's arithmetic is the same whichever
# process reads it and whatever else its batch holds.
OPTIONS = ["--recursive", "--batch-size", "1", "--workers", "0", "--device", "cpu", "--quiet"]


# ----------------------------------------------------------------------------------- pure functions


def test_shard_is_round_robin_disjoint_and_complete():
    listing = [f"p{i}" for i in range(11)]
    parts = [shards.shard(listing, rank, 3) for rank in range(3)]
    assert parts[0] == ["p0", "p3", "p6", "p9"] and parts[1] == ["p1", "p4", "p7", "p10"]
    assert parts[2] == ["p2", "p5", "p8"]
    assert sorted(p for part in parts for p in part) == sorted(listing)
    assert shards.shard(listing, 0, 1) == listing
    assert shards.shard([], 1, 2) == []
    with pytest.raises(ValueError):
        shards.shard(listing, 2, 2)
    assert shards.part_name(1, 4) == "parts/rank-1-of-4"


def test_merge_order_follows_the_listing():
    listing = ["a.jpg", "b/c.jpg", "b/d.jpg", "e.jpg"]
    # Parts in rank order (rank 0 then rank 1), a duplicate, and a photo deleted since an earlier run.
    keys = ["a.jpg", "b/d.jpg", "gone.jpg", "b/c.jpg", "e.jpg", "a.jpg", "also_gone.jpg"]
    assert shards.merge_order(listing, keys) == ["a.jpg", "b/c.jpg", "b/d.jpg", "e.jpg", "gone.jpg", "also_gone.jpg"]
    assert shards.merge_order(listing, []) == []
    # Merging the round-robin shards gives the listing back, whatever the world size.
    for world in (1, 2, 3, 5):
        merged = shards.merge_order(listing, [p for r in range(world) for p in shards.shard(listing, r, world)])
        assert merged == listing


def _record(path: str, label: str = "healthy") -> dict:
    return {"path": path, "label": label, "label_index": 0, "decision": label, "confidence": 0.5,
            "topk": [{"class": label, "prob": 0.5}],
            "stage": 0, "macs": 10, "width": 8, "height": 8, "boxes": []}


def _write_part(out: Path, rank: int, world: int, paths: list[str], errors: list[tuple[str, str]]) -> None:
    from agripatch.pipeline.records import csv_row

    folder = out / shards.part_name(rank, world)
    folder.mkdir(parents=True)
    records = [_record(p) for p in paths]
    (folder / "predictions.csv").write_text(csv_line(CSV_COLUMNS) + "".join(csv_line(csv_row(r)) for r in records))
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    (folder / "errors.csv").write_text(csv_text(ERROR_COLUMNS, [list(e) for e in errors]))
    (folder / "run.json").write_text("{}")


def test_merge_parts_writes_what_one_process_would(tmp_path):
    from agripatch.pipeline.records import csv_row

    listing = ["a.jpg", "b, \"quoted\".jpg", "bad\nname.jpg", "c/d.jpg", "c/é.jpg"]
    out = tmp_path / "out"
    _write_part(out, 0, 2, ["a.jpg", "c/é.jpg"], [("bad\nname.jpg", "file name contains a line break")])
    _write_part(out, 1, 2, ["b, \"quoted\".jpg", "c/d.jpg"], [])
    counts = shards.merge_parts(OutputDir(out), listing, 2)
    assert counts == {"photos": 4, "errors": 1}
    good = [p for p in listing if "\n" not in p]
    expected = [_record(p) for p in good]
    rows = "".join(csv_line(csv_row(r)) for r in expected)
    assert (out / "predictions.csv").read_text() == csv_line(CSV_COLUMNS) + rows
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in expected)
    assert (out / "predictions.jsonl").read_text() == lines
    errors = csv_text(ERROR_COLUMNS, [["bad\nname.jpg", "file name contains a line break"]])
    assert (out / "errors.csv").read_text() == errors


def test_world_size_is_checked_and_parts_cleared(tmp_path):
    out = OutputDir(tmp_path / "out")
    out.root.mkdir()
    assert shards.recorded_worlds(out) == set()
    shards.check_world(out, 1)
    shards.check_world(out, 4)
    # A part with rows makes the run a 2-process one; an empty part of a refused start does not count.
    _write_part(out.root, 0, 2, ["a.jpg"], [])
    _write_part(out.root, 0, 3, [], [])
    assert shards.recorded_worlds(out) == {2}
    shards.check_world(out, 2)
    with pytest.raises(AgripatchError, match=r"written by 2 processes .*this run has one process.*--overwrite"):
        shards.check_world(out, 1)
    with pytest.raises(AgripatchError, match=r"2 processes .*this run has 4 processes.*relaunch torchrun with 2"):
        shards.check_world(out, 4)
    # A one-process run: run.json beside a predictions.csv with rows.
    single = OutputDir(tmp_path / "single")
    single.root.mkdir()
    (single.root / "predictions.csv").write_text(csv_line(CSV_COLUMNS) + csv_line(["a.jpg"] + [""] * (len(CSV_COLUMNS) - 1)))
    (single.root / "run.json").write_text("{}")
    with pytest.raises(AgripatchError, match=r"one process \(no torchrun\).*has 2 processes.*without torchrun"):
        shards.check_world(single, 2)
    # Clearing removes this tool's files in parts/ and the empty folders, nothing else.
    (out.root / "parts" / "rank-1-of-2").mkdir()
    (out.root / "parts" / "rank-1-of-2" / "notes.txt").write_text("mine")
    shards.clear_parts(out)
    left = sorted(p.relative_to(out.root).as_posix() for p in out.root.rglob("*"))
    assert left == ["parts", "parts/rank-1-of-2", "parts/rank-1-of-2/notes.txt"]


def test_part_dir_and_settle_in_one_process(tmp_path):
    out = OutputDir(tmp_path)
    single = DistContext(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))
    assert shards.part_dir(out, single) is out
    assert shards.settle(single, None, lambda: 7) == 7
    with pytest.raises(AgripatchError, match="boom"):
        shards.settle(single, None, lambda: (_ for _ in ()).throw(AgripatchError("boom")))
    assert shards.agree_thresholds(single, None, ([0.5], None), lambda: 1 / 0) == ([0.5], None)
    assert shards.agree_thresholds(single, None, (None, None), lambda: ([0.1], {"photos": 1})) == ([0.1], {"photos": 1})


def test_kill_hook_is_off_unless_asked(monkeypatch):
    monkeypatch.delenv(shards.KILL_HOOK_ENV, raising=False)
    assert shards.kill_hook(0) is None
    monkeypatch.setenv(shards.KILL_HOOK_ENV, "1:3")
    assert shards.kill_hook(0) is None
    hook = shards.kill_hook(1)
    assert hook is not None
    hook(2)  # not yet: returns (after 3 it would SIGKILL this process)
    monkeypatch.setenv(shards.KILL_HOOK_ENV, "one:3")
    with pytest.raises(AgripatchError, match="test hook"):
        shards.kill_hook(1)


# ---------------------------------------------------------------------------------- torchrun, 2 ranks


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """6 synthetic leaves and 2 unreadable files (one for each rank: listing positions 0 and 7)."""
    root = tmp_path_factory.mktemp("dist") / "photos"
    write_synthetic(root / "synth", per_class=2)
    (root / "broken.jpg").write_bytes(b"")
    whole = jpeg_bytes(upright_pattern(120, 160))
    (root / "synth" / "rust" / "zz_truncated.jpg").write_bytes(whole[: len(whole) // 2])
    return root


def _torchrun(photos: Path, model: Path, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """`predict folder` launched by torchrun with 2 CPU processes (gloo); the kill hook only when ``env`` sets it."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "agripatch", "predict", "folder", str(photos), "--model", str(model), "--out", str(out),
               *OPTIONS, *extra]
    run_env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    run_env.pop(shards.KILL_HOOK_ENV, None)
    run_env.update(env or {})
    return subprocess.run(command, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=300)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _assert_same_outputs(out: Path, reference: Path) -> dict:
    for name in MERGED:
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name
    ours, theirs = (json.loads((d / "summary.json").read_text(encoding="utf-8")) for d in (out, reference))
    for key in ("photos", "errors", "per_class", "exit_histogram", "mean_gmacs", "thresholds", "thresholds_source"):
        assert ours[key] == theirs[key], key
    crops = [sorted(p.relative_to(d).as_posix() for p in d.rglob("*.jpg")) for d in (out, reference)]
    assert crops[0] == crops[1]
    return ours


@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes(photos, model_file, tmp_path):
    reference = tmp_path / "one"
    single = predict_folder(photos, model_file, reference, recursive=True, batch_size=1, workers=0, device="cpu",
                            quiet=True)
    assert single.photos == 6 and single.errors == 2 and not (reference / "parts").exists()
    assert "world_size" not in json.loads((reference / "summary.json").read_text())

    out = tmp_path / "two"
    done = _torchrun(photos, model_file, out)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = _assert_same_outputs(out, reference)
    assert summary["world_size"] == 2 and summary["photos_per_rank"] == [4, 4] and summary["listed_per_rank"] == [4, 4]
    assert summary["new"] == 6 and summary["resumed"] == 0
    assert sorted(p.name for p in (out / "parts").iterdir()) == ["rank-0-of-2", "rank-1-of-2"]
    for rank in (0, 1):
        part = out / "parts" / f"rank-{rank}-of-2"
        assert len(_rows(part / "predictions.csv")) == 3 and len(_rows(part / "errors.csv")) == 1

    # A rerun of the finished run has nothing left to predict and changes nothing.
    again = _torchrun(photos, model_file, out)
    assert again.returncode == 0, again.stderr[-3000:]
    summary = _assert_same_outputs(out, reference)
    assert summary["new"] == 0 and summary["resumed"] == 6 and summary["photos_per_rank"] == [1, 1]  # the unreadable

    # Another number of processes on either OUT is an error that says what to do.
    with pytest.raises(AgripatchError, match=r"written by 2 processes.*relaunch torchrun with 2"):
        predict_folder(photos, model_file, out, recursive=True, workers=0, device="cpu", quiet=True)
    refused = _torchrun(photos, model_file, reference)
    assert refused.returncode != 0
    assert "written by one process (no torchrun)" in " ".join(refused.stderr.split())
    # --overwrite in one process starts over, parts included.
    predict_folder(photos, model_file, out, recursive=True, batch_size=1, workers=0, device="cpu", quiet=True,
                   overwrite=True)
    assert not (out / "parts").exists()
    for name in ("predictions.csv", "predictions.jsonl", "errors.csv"):
        assert (out / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.slow
def test_killed_rank_resumes_to_the_same_output_with_one_budget(photos, model_file, tmp_path):
    from agripatch.pipeline.bundle import load_model_file

    macs = load_model_file(model_file).pipeline.exit_macs()
    budget = f"{(macs[1] + macs[2]) / 2 / 1e9:.6f}"  # between stage 1 and stage 2: thresholds chosen on a batch
    reference = tmp_path / "one"
    predict_folder(photos, model_file, reference, recursive=True, batch_size=1, workers=0, device="cpu", quiet=True,
                   budget=float(budget))
    chosen = json.loads((reference / "run.json").read_text())["thresholds"]

    out = tmp_path / "two"
    killed = _torchrun(photos, model_file, out, "--budget", budget, env={shards.KILL_HOOK_ENV: "1:2"})
    assert killed.returncode != 0 and "SIGKILL" in killed.stderr, killed.stderr[-3000:]
    part1 = out / "parts" / "rank-1-of-2"
    assert len(_rows(part1 / "predictions.csv")) == 2  # rank 1 stopped after its 2nd batch of 4
    assert not (out / "predictions.csv").exists()  # no merge happened
    assert json.loads((part1 / "run.json").read_text())["thresholds"] == chosen

    resumed = _torchrun(photos, model_file, out, "--budget", budget)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = _assert_same_outputs(out, reference)  # byte-identical: no photo twice, none missing
    assert summary["new"] + summary["resumed"] == 6 and summary["resumed"] >= 2
    assert len({row["path"] for row in _rows(out / "predictions.csv")}) == 6
    for rank in (0, 1):
        state = json.loads((out / "parts" / f"rank-{rank}-of-2" / "run.json").read_text())
        assert state["thresholds"] == chosen and state["budget_gmacs"] == float(budget)
