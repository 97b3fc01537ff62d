"""End-to-end tests of `predict folder` on a real (tiny, untrained) model and a folder of awkward photos."""

from __future__ import annotations

import csv
import html
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from predict_helpers import (
    CLASSES,
    chromium_dom,
    make_model_file,
    predict_folder,
    write_synthetic,
)

from agripatch.errors import AgripatchError
from agripatch.predict.outputs import file_sha256, safe_stem

REPO = Path(__file__).resolve().parents[2]


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ----------------------------------------------------------------------------------- the mixed folder


def test_one_row_per_good_photo_and_errors_listed(mixed_run):
    out = mixed_run["out"]
    rows = _csv(out / "predictions.csv")
    assert sorted(r["path"] for r in rows) == mixed_run["good"]
    assert sorted(r["path"] for r in _jsonl(out / "predictions.jsonl")) == mixed_run["good"]
    errors = _csv(out / "errors.csv")
    assert sorted(e["path"] for e in errors) == sorted(mixed_run["bad"])
    reasons = {e["path"]: e["reason"] for e in errors}
    assert "empty" in reasons["bad/empty.jpg"]
    assert "truncated" in reasons["bad/truncated.jpg"]
    assert "not a recognised image" in reasons["bad/text_renamed.jpg"]
    assert "line break" in reasons["bad/line\nbreak.jpg"]
    summary = mixed_run["summary"]
    assert summary.photos == len(mixed_run["good"]) and summary.errors == len(mixed_run["bad"])
    assert summary.new == summary.photos and summary.resumed == 0


def test_summary_json(mixed_run):
    data = json.loads((mixed_run["out"] / "summary.json").read_text(encoding="utf-8"))
    assert sum(data["per_class"].values()) == len(mixed_run["good"])
    assert list(data["per_class"]) == CLASSES
    assert data["errors"] == len(mixed_run["bad"])
    assert data["thresholds"] == [0.9, 0.9, 0.9, 0.0] and data["thresholds_source"] == "model file"
    assert data["mean_gmacs"] > 0 and data["photos_per_s"] > 0 and data["wall_s"] > 0
    assert sum(data["exit_histogram"]) == len(mixed_run["good"])


def test_biased_model_reads_two_patches(mixed_run):
    # The fixture's classifier favours class 1: every photo exits after its second patch (see conftest).
    records = _jsonl(mixed_run["out"] / "predictions.jsonl")
    for record in records:
        assert record["stage"] == 2 and record["label"] == CLASSES[1]
        assert [b["read"] for b in record["boxes"]] == [True, True, False]
        assert len(record["topk"]) == 2 and record["topk"][0]["prob"] >= record["topk"][1]["prob"]
        assert record["confidence"] == pytest.approx(record["topk"][0]["prob"])


def test_crops_and_overlays_exist_with_safe_names(mixed_run):
    out = mixed_run["out"]
    for record in _jsonl(out / "predictions.jsonl"):
        stem = safe_stem(record["path"])
        assert record["overlay"] == f"overlays/{stem}.jpg"
        overlay = cv2.imread(str(out / record["overlay"]))
        assert overlay is not None and 480 <= max(overlay.shape[:2]) <= 800
        names = sorted(p.name for p in (out / "crops" / stem).iterdir())
        assert names == sorted(Path(b["crop"]).name for b in record["boxes"])
        assert len(names) == 3
        for name in names:
            assert "/" not in name and ".." not in name and "<" not in name
        assert names[0].startswith("patch1_rust_") and names[2] == "patch3_unread.jpg"
        for box in record["boxes"]:
            assert cv2.imread(str(out / box["crop"])) is not None


def test_nothing_written_outside_out(mixed_run):
    before, after = mixed_run["before"], mixed_run["after"]
    outside = {k: v for k, v in after.items() if not k.startswith("out/")}
    assert outside == before
    every = [p.resolve() for p in mixed_run["out"].rglob("*")]
    assert all(mixed_run["out"].resolve() in p.parents for p in every)


def test_boxes_inside_original_photo(mixed_run):
    records = {r["path"]: r for r in _jsonl(mixed_run["out"] / "predictions.jsonl")}
    for rel, record in records.items():
        width, height = Image.open(mixed_run["root"] / rel).size
        if rel == "odd/rotated.jpg":
            width, height = height, width  # EXIF 6: upright is the transpose of the stored size
        assert (record["width"], record["height"]) == (width, height), rel
        for entry in record["boxes"]:
            x0, y0, x1, y1 = entry["box"]
            assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height, (rel, entry["box"])


def test_large_photo_is_decoded_reduced_and_boxes_scaled(mixed_run):
    record = {r["path"]: r for r in _jsonl(mixed_run["out"] / "predictions.jsonl")}["odd/large.jpg"]
    big_h, big_w = mixed_run["large_hw"]
    assert (record["height"], record["width"]) == (big_h, big_w)
    assert (record["decoded_height"], record["decoded_width"]) == (big_h // 8, big_w // 8)
    # A glance cell is 67 of 128 glance pixels: in original pixels about 67/128 of each side.
    for entry in record["boxes"]:
        x0, y0, x1, y1 = entry["box"]
        assert x1 - x0 == pytest.approx(big_w * 67 / 128, rel=0.01)
        assert y1 - y0 == pytest.approx(big_h * 67 / 128, rel=0.01)


def test_field_photos_reduced(mixed_run):
    if not mixed_run["field"]:
        pytest.skip("../shared/data/field_photos is not present beside this checkout")
    records = {r["path"]: r for r in _jsonl(mixed_run["out"] / "predictions.jsonl")}
    for rel in mixed_run["field"]:
        record = records[rel]
        assert min(record["decoded_width"], record["decoded_height"]) >= 128
        assert record["decoded_width"] < record["width"]


def test_exif_rotated_crops_are_upright(mixed_run):
    out = mixed_run["out"]
    upright = mixed_run["rotated_upright"]
    record = {r["path"]: r for r in _jsonl(out / "predictions.jsonl")}["odd/rotated.jpg"]
    assert (record["height"], record["width"]) == upright.shape[:2]
    for entry in record["boxes"]:
        x0, y0 = (int(np.floor(v)) for v in entry["box"][:2])
        x1, y1 = (int(np.ceil(v)) for v in entry["box"][2:])
        crop = cv2.cvtColor(cv2.imread(str(out / entry["crop"])), cv2.COLOR_BGR2RGB).astype(np.float32)
        expected = upright[y0:y1, x0:x1].astype(np.float32)
        assert abs(crop.shape[0] - expected.shape[0]) <= 1 and abs(crop.shape[1] - expected.shape[1]) <= 1
        h, w = min(crop.shape[0], expected.shape[0]), min(crop.shape[1], expected.shape[1])
        assert np.abs(crop[:h, :w] - expected[:h, :w]).mean() < 6.0
        # Upright: red grows left -> right and green top -> bottom, as painted.
        assert crop[:, -5:, 0].mean() - crop[:, :5, 0].mean() > 50
        assert crop[-5:, :, 1].mean() - crop[:5, :, 1].mean() > 50
    overlay = cv2.imread(str(out / record["overlay"]))
    assert overlay.shape[0] > overlay.shape[1]  # portrait, like the upright photo


def test_index_html_escapes_names(mixed_run):
    page = (mixed_run["out"] / "index.html").read_text(encoding="utf-8")
    assert page.count("<script>") == 1 and "<img src=x" not in page and "<b>spot" not in page
    assert html.escape("names/<img src=x onerror=alert(1)>.jpg") in page
    assert html.escape('names/it\'s "quoted".jpg') in page
    assert html.escape(CLASSES[1]) in page
    assert page.count('class="card"') == len(mixed_run["good"])
    assert "%20" in page and "%C3%A9" in page  # spaces and non-ASCII names percent-encoded in links
    assert "http://" not in page and "https://" not in page and "<link" not in page


@pytest.mark.slow
def test_chromium_renders_one_entry_per_photo(mixed_run, tmp_path):
    dom, console = chromium_dom(mixed_run["out"] / "index.html", tmp_path)
    assert dom.count('class="card"') == len(mixed_run["good"])
    assert 'data-ready="1"' in dom
    assert console == []


# ------------------------------------------------------------------------------------ resume and reruns


@pytest.fixture(scope="session")
def small_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("small") / "photos"
    write_synthetic(folder, per_class=2)
    return folder


@pytest.fixture(scope="session")
def reference(small_folder, model_file, tmp_path_factory) -> Path:
    """An uninterrupted run on the small folder (batch size 1, as the killed CLI run below)."""
    out = tmp_path_factory.mktemp("reference") / "out"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    summary = predict_folder(small_folder, model_file, out, batch_size=1, workers=0, device="cpu", quiet=True,
                                 recursive=True)
    torch.set_num_threads(threads)
    assert summary.photos == 6
    return out


def _sorted_rows(path: Path) -> list[tuple[str, ...]]:
    return sorted(tuple(row.values()) for row in _csv(path))


def _crop_files(out: Path) -> list[str]:
    return sorted(p.relative_to(out).as_posix() for p in (out / "crops").rglob("*.jpg"))


@pytest.mark.slow
def test_resume_after_kill_matches_uninterrupted_run(small_folder, model_file, reference, tmp_path):
    out = tmp_path / "killed"
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "agripatch", "predict", "folder", str(small_folder), "--model", str(model_file),
               "--out", str(out), "--recursive", "--batch-size", "1", "--workers", "0", "--device", "cpu", "--quiet"]
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               start_new_session=True)
    csv_path = out / "predictions.csv"
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline and process.poll() is None:
            if csv_path.exists() and csv_path.read_bytes().count(b"\n") >= 3:  # header + 2 rows
                break
            time.sleep(0.005)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL, stderr
    partial = _csv(csv_path)
    assert 2 <= len(partial) < 6

    # What a kill in the middle of a write leaves: half a line at the end of each log.
    with open(csv_path, "a", encoding="utf-8") as handle:
        handle.write("rust/rust_0001.jpg,rust/../../../../evil,0.93")
    with open(out / "predictions.jsonl", "a", encoding="utf-8") as handle:
        handle.write('{"path": "rust/rust_0001.jpg", "lab')

    resumed = predict_folder(small_folder, model_file, out, batch_size=1, workers=0, device="cpu", quiet=True,
                                 recursive=True)
    assert resumed.resumed == len(partial) and resumed.new == 6 - len(partial) and resumed.photos == 6
    assert _sorted_rows(csv_path) == _sorted_rows(reference / "predictions.csv")
    assert sorted(map(json.dumps, _jsonl(out / "predictions.jsonl"))) == \
        sorted(map(json.dumps, _jsonl(reference / "predictions.jsonl")))
    assert _crop_files(out) == _crop_files(reference)

    # A third run has nothing left to do and changes no row.
    again = predict_folder(small_folder, model_file, out, workers=0, device="cpu", quiet=True, recursive=True)
    assert again.new == 0 and again.resumed == 6
    assert _sorted_rows(csv_path) == _sorted_rows(reference / "predictions.csv")


def test_resume_drops_rows_only_one_log_has(small_folder, model_file, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    # A kill between the JSONL and the CSV append: the JSONL has all 6 rows, the CSV 4.
    lines = (out / "predictions.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "predictions.csv").write_text("".join(lines[:-2]), encoding="utf-8")
    summary = predict_folder(small_folder, model_file, out, batch_size=1, workers=0, device="cpu", quiet=True,
                                 recursive=True)
    assert summary.new == 2 and summary.resumed == 4 and summary.photos == 6
    assert _sorted_rows(out / "predictions.csv") == _sorted_rows(reference / "predictions.csv")
    assert len(_jsonl(out / "predictions.jsonl")) == 6


def test_other_model_refused_unless_overwrite(small_folder, model_file, reference, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(reference, out)
    other = make_model_file(tmp_path / "other.pt", bias=-5.0)
    with pytest.raises(AgripatchError, match="another model"):
        predict_folder(small_folder, other, out, device="cpu", quiet=True)
    with pytest.raises(AgripatchError, match="other settings"):
        predict_folder(small_folder, model_file, out, device="cpu", quiet=True, thresholds=[0.0], recursive=True)

    # --overwrite removes this tool's outputs only.
    (out / "my_notes.txt").write_text("keep me")
    (out / "crops" / "mine.txt").write_text("keep me too")
    summary = predict_folder(small_folder, other, out, workers=0, device="cpu", quiet=True, overwrite=True)
    assert summary.photos == 0 and summary.new == 0  # top level holds no photos (not recursive)
    assert (out / "my_notes.txt").read_text() == "keep me" and (out / "crops" / "mine.txt").exists()
    assert not list((out / "crops").rglob("*.jpg")) and not list((out / "overlays").glob("*.jpg"))
    assert _csv(out / "predictions.csv") == []
    assert json.loads((out / "run.json").read_text())["model_sha256"] == file_sha256(other)


def test_thresholds_and_budget(small_folder, model_file, tmp_path):
    from agripatch.pipeline.bundle import load_model_file

    macs = load_model_file(model_file).pipeline.exit_macs()
    low = predict_folder(small_folder / "rust", model_file, tmp_path / "t0", thresholds=[0.0], workers=0,
                             device="cpu", quiet=True)
    assert low.thresholds == [0.0] * 4 and low.exit_histogram == [2, 0, 0, 0]
    assert low.mean_macs == macs[0]
    # Records of photos that exited at the glance have boxes but no patch read.
    assert all(not b["read"] for r in _jsonl(tmp_path / "t0" / "predictions.jsonl") for b in r["boxes"])

    # A budget between stage 1 and stage 2 costs: no labels, so the most expensive choice that fits wins.
    budget = (macs[1] + macs[2]) / 2 / 1e9
    chosen = predict_folder(small_folder / "rust", model_file, tmp_path / "b", budget=budget, workers=0,
                                device="cpu", quiet=True)
    assert chosen.thresholds_source.startswith("--budget") and chosen.mean_macs <= budget * 1e9
    assert json.loads((tmp_path / "b" / "run.json").read_text())["thresholds"] == chosen.thresholds

    # A budget above the full cascade: never exit early (an infinite threshold, "inf" in strict JSON).
    everything = predict_folder(small_folder / "rust", model_file, tmp_path / "b1", budget=macs[-1] * 2 / 1e9,
                                    workers=0, device="cpu", quiet=True)
    assert everything.exit_histogram == [0, 0, 0, 2]
    strict = json.loads((tmp_path / "b1" / "summary.json").read_text(), parse_constant=lambda c: 1 / 0)
    assert strict["thresholds"] == ["inf"] * 4

    with pytest.raises(AgripatchError, match="below the cheapest"):
        predict_folder(small_folder / "rust", model_file, tmp_path / "b2", budget=macs[0] / 2e9, workers=0,
                           device="cpu", quiet=True)
    # Nothing was predicted there, so the same OUT takes other settings without --overwrite.
    retry = predict_folder(small_folder / "rust", model_file, tmp_path / "b2", budget=budget, workers=0,
                               device="cpu", quiet=True)
    assert retry.photos == 2 and retry.thresholds == chosen.thresholds
    with pytest.raises(AgripatchError, match="either exit thresholds or a MAC budget"):
        predict_folder(small_folder, model_file, tmp_path / "b3", budget=1.0, thresholds=[0.5], quiet=True)
    with pytest.raises(AgripatchError, match="1 or 4 values"):
        predict_folder(small_folder, model_file, tmp_path / "b4", thresholds=[0.5, 0.5], quiet=True)


def test_classifier_glance_exit_has_no_boxes(small_folder, tmp_path):
    # With glance="classifier", a photo that exits at the glance never runs AnchorNet: no boxes, no CAM.
    model = make_model_file(tmp_path / "classifier_glance.pt", glance="classifier")
    summary = predict_folder(small_folder / "healthy", model, tmp_path / "out", thresholds=[0.0], workers=0,
                                 device="cpu", quiet=True)
    assert summary.exit_histogram == [2, 0, 0, 0]
    for record in _jsonl(tmp_path / "out" / "predictions.jsonl"):
        assert record["boxes"] == [] and record["stage"] == 0
        # 256 px decoded at 1/2 (a 128 glance needs no more); overlays are drawn at >= 480 px.
        assert (record["decoded_height"], record["decoded_width"]) == (128, 128)
        assert cv2.imread(str(tmp_path / "out" / record["overlay"])).shape[:2] == (480, 480)
    assert not (tmp_path / "out" / "crops").exists()


def test_bad_arguments(small_folder, model_file, tmp_path):
    with pytest.raises(AgripatchError, match="does not exist"):
        predict_folder(tmp_path / "missing", model_file, tmp_path / "o", quiet=True)
    with pytest.raises(AgripatchError, match="model file"):
        predict_folder(small_folder, tmp_path / "missing.pt", tmp_path / "o", quiet=True)
    with pytest.raises(AgripatchError, match="input folder itself"):
        predict_folder(small_folder, model_file, small_folder, quiet=True)
    with pytest.raises(AgripatchError, match="--writers must be >= 1"):
        predict_folder(small_folder, model_file, tmp_path / "o", quiet=True, writers=0)


def test_out_inside_input_is_not_walked(small_folder, model_file, tmp_path):
    photos = tmp_path / "photos"
    shutil.copytree(small_folder / "healthy", photos)
    out = photos / "review"
    first = predict_folder(photos, model_file, out, recursive=True, workers=0, device="cpu", quiet=True)
    again = predict_folder(photos, model_file, out, recursive=True, workers=0, device="cpu", quiet=True)
    assert first.photos == again.photos == 2 and again.new == 0  # its own crops and overlays are not photos


def test_cli_prints_where_the_page_is(small_folder, model_file, tmp_path):
    from typer.testing import CliRunner

    from agripatch.cli import app

    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["predict", "folder", str(small_folder / "healthy"), "--model", str(model_file),
                                      "--out", str(out), "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "index.html" in result.output.strip().splitlines()[-1]
    assert len(_csv(out / "predictions.csv")) == 2


def test_no_crops_no_overlays_gives_the_same_diagnoses_and_no_images(small_folder, model_file, reference, tmp_path):
    from typer.testing import CliRunner

    from agripatch.cli import app

    out = tmp_path / "lean"
    result = CliRunner().invoke(app, ["predict", "folder", str(small_folder), "--model", str(model_file), "--out",
                                      str(out), "--recursive", "--batch-size", "1", "--workers", "0", "--device", "cpu",
                                      "--quiet", "--no-crops", "--no-overlays"])
    assert result.exit_code == 0, result.output
    assert _sorted_rows(out / "predictions.csv") == _sorted_rows(reference / "predictions.csv")
    assert not (out / "crops").exists() and not (out / "overlays").exists()
    records = _jsonl(out / "predictions.jsonl")
    assert len(records) == 6 and all(r["overlay"] is None for r in records)
    assert all(box["crop"] is None for r in records for box in r["boxes"])
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count('<article class="card"') == 6 and 'class="ov"' not in page and "<figure" not in page


def test_several_writer_processes_write_the_same_files(small_folder, model_file, tmp_path):
    """Crops and overlays of a batch encoded by 3 writer processes (as on a GPU machine) are byte for byte
    those the one writer thread writes."""
    outs = {n: tmp_path / f"writers{n}" for n in (1, 3)}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for n, out in outs.items():
            predict_folder(small_folder, model_file, out, batch_size=6, workers=0, device="cpu", quiet=True,
                           recursive=True, writers=n)
    finally:
        torch.set_num_threads(threads)
    one, three = outs[1], outs[3]
    assert [json.loads((out / "summary.json").read_text())["writers"] for out in (one, three)] == [1, 3]
    assert _sorted_rows(three / "predictions.csv") == _sorted_rows(one / "predictions.csv")
    images = sorted(p.relative_to(one).as_posix() for p in one.rglob("*.jpg"))
    assert images == sorted(p.relative_to(three).as_posix() for p in three.rglob("*.jpg")) and len(images) > 6
    assert all((three / name).read_bytes() == (one / name).read_bytes() for name in images)


def test_a_writer_process_that_dies_is_a_clear_error(model_file, tmp_path):
    """A writer process killed mid-run (out of memory, say) surfaces as an AgripatchError that says how to go on."""
    import os

    from agripatch.predict.evidence import EvidenceWriter
    from agripatch.predict.outputs import OutputDir
    from agripatch.predict.predictor import Predictor

    writer = EvidenceWriter(OutputDir(tmp_path), Predictor.from_file(model_file, device="cpu"), writers=2)
    writer._pending.append(writer._pool.submit(os._exit, 1))  # the process dies as the OOM killer would end it
    with pytest.raises(AgripatchError, match="run the same command again"):
        writer.wait()
    writer._pool.shutdown(wait=True)


def test_overlays_without_crops(small_folder, model_file, tmp_path):
    out = tmp_path / "overlays_only"
    predict_folder(small_folder / "healthy", model_file, out, workers=0, device="cpu", quiet=True, crops=False)
    assert not (out / "crops").exists()
    assert len(list((out / "overlays").glob("*.jpg"))) == 2


def test_every_record_carries_a_decision_and_old_models_refuse_nothing(small_folder, model_file, tmp_path):
    summary = predict_folder(small_folder / "rust", model_file, tmp_path / "old", workers=0, device="cpu", quiet=True)
    records = _jsonl(tmp_path / "old" / "predictions.jsonl")
    assert records and all(r["decision"] == r["label"] and r["ood_distance"] is None for r in records)
    assert summary.extra["refusal_available"] is False
    assert "predates refusal" in (tmp_path / "old" / "index.html").read_text()
    rows = _csv(tmp_path / "old" / "predictions.csv")
    assert all(row["decision"] == row["label"] for row in rows)


def test_a_model_with_a_refusal_rule_refuses_far_photos(small_folder, tmp_path):
    from agripatch.pipeline.refusal import Refusal

    # Class means far from any real glance feature: every photo is "not a leaf".
    rule = Refusal(np.full((3, 384), 100.0), np.eye(384), distance_threshold=10.0, confidence_threshold=0.0)
    model = make_model_file(tmp_path / "refusing.pt", refusal=rule)
    summary = predict_folder(small_folder / "rust", model, tmp_path / "out", workers=0, device="cpu", quiet=True)
    records = _jsonl(tmp_path / "out" / "predictions.jsonl")
    assert [r["decision"] for r in records] == ["not_a_leaf"] * len(records)
    assert all(r["ood_distance"] > 10.0 for r in records)
    assert summary.extra["decisions"] == {"not_a_leaf": len(records)} and summary.extra["refusal_available"]
    assert "predates refusal" not in (tmp_path / "out" / "index.html").read_text()


def test_precision_is_chosen_reported_and_checked(small_folder, model_file, tmp_path):
    """``--precision bfloat16`` (the default on CPUs with AMX units) runs the networks in bf16 and says so in
    summary.json; the answers are float32's on this model. Resuming a run in another precision, a misspelt
    precision, or one with ONNX Runtime, is refused before anything is written."""
    runs = {p: predict_folder(small_folder, model_file, tmp_path / p, precision=p, recursive=True, workers=0,
                              device="cpu", quiet=True)
            for p in ("float32", "bfloat16")}
    for precision in runs:
        assert json.loads((tmp_path / precision / "summary.json").read_text())["precision"] == precision
    labels = [{r["path"]: r["label"] for r in _csv(tmp_path / p / "predictions.csv")} for p in runs]
    assert labels[0] == labels[1] and len(labels[0]) == runs["float32"].photos > 0
    with pytest.raises(AgripatchError, match=r"other settings \(precision: 'float32' -> 'bfloat16'\)"):
        predict_folder(small_folder, model_file, tmp_path / "float32", precision="bfloat16", recursive=True,
                       workers=0, device="cpu", quiet=True)  # resuming the float32 run in bf16 would mix answers
    with pytest.raises(AgripatchError, match="--precision 'half'"):
        predict_folder(small_folder, model_file, tmp_path / "half", precision="half", quiet=True)
    with pytest.raises(AgripatchError, match="ONNX Runtime runs the exported graphs"):
        predict_folder(small_folder, model_file, tmp_path / "onnx", precision="bfloat16", backend="onnxruntime",
                       quiet=True)
    assert not (tmp_path / "half").exists() and not (tmp_path / "onnx").exists()


def test_a_landscape_model_reads_a_portrait_photo_turned_and_reports_its_boxes_on_the_file(tmp_path):
    """The record's boxes are in the file's pixels, its crops are the turned photo's (as the model read them: the
    file's box turned a quarter clockwise), the overlay shows the turned photo, and summary.json counts the turn."""
    from predict_helpers import upright_pattern

    from agripatch.io.orientation import turn
    from agripatch.io.torchfile import load_object, save_object

    folder = tmp_path / "photos"
    folder.mkdir()
    portrait = upright_pattern(300, 200)
    Image.fromarray(portrait).save(folder / "tall.png")
    Image.fromarray(upright_pattern(200, 300)).save(folder / "wide.png")
    obj = load_object(make_model_file(tmp_path / "model.pt"))
    model = save_object({**obj, "cascade": {**obj["cascade"], "photo_orientation": "landscape"}}, tmp_path / "land.pt")
    summary = predict_folder(folder, model, tmp_path / "out", workers=0, device="cpu", quiet=True)
    records = {r["path"]: r for r in _jsonl(tmp_path / "out" / "predictions.jsonl")}
    tall, wide = records["tall.png"], records["wide.png"]
    assert (tall["turned"], wide["turned"]) == (90, 0)
    assert (tall["width"], tall["height"]) == (200, 300) and (tall["decoded_width"], tall["decoded_height"]) == (200, 300)
    assert summary.extra["turned"] == 1 and summary.extra["photo_orientation"] == "landscape"
    assert summary.extra["judged_on_views"] == sum(1 for r in records.values() if r["refusal_view"])
    for entry in tall["boxes"]:
        x0, y0, x1, y1 = entry["box"]
        assert 0 <= x0 < x1 <= 200 and 0 <= y0 < y1 <= 300
        crop = cv2.cvtColor(cv2.imread(str(tmp_path / "out" / entry["crop"])), cv2.COLOR_BGR2RGB).astype(np.float32)
        expected = turn(portrait[int(y0):int(np.ceil(y1)), int(x0):int(np.ceil(x1))], 1).astype(np.float32)
        assert abs(crop.shape[0] - expected.shape[0]) <= 2 and abs(crop.shape[1] - expected.shape[1]) <= 2
        h, w = min(crop.shape[0], expected.shape[0]), min(crop.shape[1], expected.shape[1])
        assert np.abs(crop[:h, :w] - expected[:h, :w]).mean() < 6.0  # a JPEG-saved crop of the same pixels
        # turned clockwise: the photo's green ramp (top -> bottom) now runs right -> left, its red one top -> bottom
        assert crop[:, :5, 1].mean() - crop[:, -5:, 1].mean() > 20 and crop[-5:, :, 0].mean() - crop[:5, :, 0].mean() > 20
    overlay = cv2.imread(str(tmp_path / "out" / tall["overlay"]))
    assert overlay.shape[1] > overlay.shape[0]  # the photo as the model read it
    assert (tmp_path / "out" / "index.html").read_text().count("read turned 90&deg; clockwise") == 1  # the review card
