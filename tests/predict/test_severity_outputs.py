"""Severity in what users get (issue 25): the records, predictions.csv, summary.json, the API option, resume, and
the ONNX runtime giving the same severity as PyTorch."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from predict_helpers import make_model_file, predict_folder, write_synthetic

from agripatch.errors import AgripatchError, CheckpointError
from agripatch.io.glance import shrink_array
from agripatch.models.symptom_map import shipped_symptom_map
from agripatch.pipeline.severity import map_hw, severity_share
from agripatch.predict.predictor import Predictor

SIDE = 64


@pytest.fixture(scope="module")
def severity_model(tmp_path_factory):
    return make_model_file(tmp_path_factory.mktemp("severity") / "model.pt", severity_side=SIDE)


@pytest.fixture(scope="module")
def prior_model(severity_model, tmp_path_factory):
    """The severity model with cell_prior 'symptom': the map also ranks the patch stages' cells."""
    from agripatch.io.torchfile import load_object, save_object
    from agripatch.pipeline.bundle import MODEL_FORMAT

    obj = load_object(severity_model, MODEL_FORMAT)
    obj["cascade"] = {**obj["cascade"], "cell_prior": "symptom"}
    return save_object(obj, tmp_path_factory.mktemp("prior") / "prior.pt")


@pytest.fixture(scope="module")
def leaves(tmp_path_factory):
    root = tmp_path_factory.mktemp("leaves") / "photos"
    write_synthetic(root, per_class=2)
    return sorted(root.rglob("*.jpg"))


def test_records_carry_the_shipped_maps_share_and_the_diagnosis_does_not_move(severity_model, leaves, tmp_path):
    plain = make_model_file(tmp_path / "plain.pt")
    predictor = Predictor.from_file(severity_model, device="cpu")
    with_severity = predictor.predict(leaves)
    without = Predictor.from_file(plain, device="cpu").predict(leaves)
    network = shipped_symptom_map()
    mean, std = torch.tensor(network.cfg["mean"]).view(1, 3, 1, 1), torch.tensor(network.cfg["std"]).view(1, 3, 1, 1)
    for record, reference, path in zip(with_severity, without, leaves):
        assert {k: v for k, v in record.items() if not k.startswith("severity")} == \
               {k: v for k, v in reference.items() if not k.startswith("severity")}
        assert reference["severity"] is None and reference["severity_class"] is None
        photo = predictor.item(path)["image"].permute(1, 2, 0).numpy()  # the decode the cascade reads
        assert min(photo.shape[:2]) >= SIDE  # never an upscaled reduced decode
        x = torch.from_numpy(shrink_array(photo, *map_hw(*photo.shape[:2], SIDE, 8)))[None]
        with torch.no_grad():
            share = float(severity_share(network((x - mean) / std).softmax(dim=1))[0])
        assert record["severity"] == pytest.approx(share, abs=0.006)  # rounded to 2 decimals
        assert record["severity_class"] in ("healthy", "very_low", "low", "high", "very_high")
        assert record["severity_macs"] > 0


def test_model_file_asking_for_severity_without_a_map_is_refused(tmp_path):
    from agripatch.io.torchfile import load_object, save_object
    from agripatch.pipeline.bundle import MODEL_FORMAT, load_model_file

    path = make_model_file(tmp_path / "m.pt", severity_side=SIDE)
    obj = load_object(path, MODEL_FORMAT)
    obj["symptom_map"] = None
    save_object(obj, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match="severity but holds no symptom map"):
        load_model_file(tmp_path / "broken.pt")


def test_predict_folder_writes_severity_and_a_summary(leaves, tmp_path):
    model = make_model_file(tmp_path / "m.pt")
    photos = leaves[0].parents[1]
    summary = predict_folder(photos, model, tmp_path / "out", quiet=True, workers=0, recursive=True, severity=True,
                             crops=False, overlays=False).to_json()
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    with open(tmp_path / "out" / "predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(records) == len(rows) == summary["severity"]["photos"] == len(leaves)
    for record, row in zip(sorted(records, key=lambda r: r["path"]), sorted(rows, key=lambda r: r["path"])):
        assert float(row["severity"]) == pytest.approx(record["severity"]) and row["severity_class"] == record["severity_class"]
    shares = [r["severity"] for r in records]
    assert summary["severity"]["mean_share"] == pytest.approx(np.mean(shares), abs=0.006)
    assert list(summary["severity"]["classes"]) == ["healthy", "very_low", "low", "high", "very_high"]
    assert sum(summary["severity"]["classes"].values()) == len(leaves)
    with pytest.raises(AgripatchError, match="severity_option"):  # a resume must not mix runs with and without
        predict_folder(photos, model, tmp_path / "out", quiet=True, workers=0, recursive=True, severity=False)


def test_api_load_severity_option(leaves, tmp_path):
    import agripatch

    model = agripatch.load(make_model_file(tmp_path / "m.pt"), device="cpu", severity=True)
    record = model.predict(leaves[0])[0]
    assert record["severity"] is not None and record["severity_class"] is not None
    assert agripatch.load(tmp_path / "m.pt", device="cpu").predict(leaves[0])[0]["severity"] is None


def test_onnx_runtime_gives_the_same_severity_and_symptom_prior_cells(prior_model, leaves, tmp_path):
    """The export of a model with a symptom map and the symptom prior: ONNX Runtime measures the same severity and
    picks the same cells as PyTorch."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from agripatch.export.build import ExportOptions, export_model
    from agripatch.runtime.predictor import OnnxPredictor

    export_model(ExportOptions(model=prior_model, format="onnx", out=tmp_path / "export"))
    torch_p, onnx_p = Predictor.from_file(prior_model, device="cpu"), OnnxPredictor(tmp_path / "export", threads=1)
    reference, ours = torch_p.predict(leaves), onnx_p.predict(leaves)
    for a, b in zip(ours, reference):
        assert a["severity"] == pytest.approx(b["severity"], abs=0.011)
        assert (a["severity_class"], a["severity_macs"], a["label"]) == (b["severity_class"], b["severity_macs"], b["label"])
    ref_runs = torch_p.run([torch_p.item(p, i) for i, p in enumerate(leaves)])
    for a, b in zip(onnx_p.run([onnx_p.item(p, i) for i, p in enumerate(leaves)]), ref_runs):
        assert np.array_equal(a.cells, b.cells) and a.label == b.label
    with pytest.raises(ValueError, match="cannot run without severity"):  # its cells need the map
        OnnxPredictor(tmp_path / "export", severity=False)


def test_evaluate_scores_severity_against_the_datasets_severity_csv(leaves, tmp_path):
    import shutil

    from agripatch.engine.evaluate import EvaluateOptions, run_evaluation

    root = tmp_path / "data"
    for folder in sorted({p.parent for p in leaves}):
        for split in ("train", "val", "test"):
            shutil.copytree(folder, root / split / folder.name)
    classes = sorted(p.name for p in (root / "test").iterdir())
    model = make_model_file(tmp_path / "model.pt", classes=classes, severity_side=SIDE)
    records = {r["path"]: r for r in Predictor.from_file(model, device="cpu").predict(
        sorted((root / "test").rglob("*.jpg")))}
    tests = sorted(str(p.relative_to(root)) for p in (root / "test").rglob("*.jpg"))
    predicted = {path: records[str(root / path)]["severity_class"] for path in tests}
    names = ["healthy", "very_low", "low", "high", "very_high"]
    truth = {path: (names.index(predicted[path]) if i % 2 == 0 else (names.index(predicted[path]) + 1) % 5)
             for i, path in enumerate(tests)}  # every other photo's class made wrong
    flag = classes[1]
    lines = [f"path,severity,share,{flag}"] + [f"{p},{c},{records[str(root / p)]['severity'] + 1.0},1"
                                                 for p, c in truth.items()]
    (root / "severity.csv").write_text("\n".join(lines) + "\n")
    from agripatch.io.torchfile import load_object, save_object
    from agripatch.pipeline.bundle import MODEL_FORMAT

    obj = load_object(model, MODEL_FORMAT)
    obj["cascade"] = {**obj["cascade"], "findings_threshold": 0.01, "findings_exclude": []}
    save_object(obj, model)
    summary = run_evaluation(EvaluateOptions(model=model, data=root, out=tmp_path / "eval", device="cpu"))
    findings = summary["findings"]  # every class is above 1%, so every flagged stress is found
    assert findings["photos"] == len(tests) and findings["findings"]["per_stress"][flag]["recall"] == 1.0
    labelled = summary["severity"]["labelled"]
    assert labelled["photos"] == len(tests)
    assert labelled["accuracy"] == pytest.approx(sum(i % 2 == 0 for i in range(len(tests))) / len(tests))
    assert np.asarray(labelled["confusion"]).sum() == len(tests)
    assert labelled["share_mae"] == pytest.approx(1.0, abs=0.01)  # every true share is 1 point above the measured
    import csv

    with open(tmp_path / "eval" / "predictions.csv", newline="") as handle:  # each photo's severity, as predict's
        rows = {row["path"]: row for row in csv.DictReader(handle)}
    assert sorted(rows) == tests
    for path in tests:
        assert rows[path]["severity_class"] == predicted[path]
        assert float(rows[path]["severity"]) == pytest.approx(records[str(root / path)]["severity"], abs=0.0051)  # 2 decimals there
    (root / "severity.csv").write_text("path,severity\n" + f"{tests[0]},extreme\n")
    with pytest.raises(AgripatchError, match="line 2: severity 'extreme'"):
        run_evaluation(EvaluateOptions(model=model, data=root, out=tmp_path / "eval2", device="cpu"))


def test_symptom_outline_surrounds_the_symptom_cells_only():
    from agripatch.predict.overlays import outline_symptoms

    image = np.zeros((80, 160, 3), np.uint8)
    symptom = np.zeros((10, 20), np.float32)
    symptom[4:6, 10:14] = 0.9  # cells of 8 px: rows 32..48, columns 80..112 of the image
    out = outline_symptoms(image, symptom)
    drawn = np.argwhere(np.all(out == (255, 0, 255), axis=2))
    assert len(drawn) > 0
    (top, left), (bottom, right) = drawn.min(axis=0), drawn.max(axis=0)
    assert 30 <= top <= 40 and 40 <= bottom <= 50 and 76 <= left <= 88 and 104 <= right <= 116
    assert not np.any(outline_symptoms(image, np.zeros((10, 20), np.float32)))  # nothing above the level: no line


def test_review_page_shows_filters_and_sorts_by_severity(tmp_path):
    from agripatch.predict.review import render_index

    def record(path, confidence, share, name):
        return {"path": path, "label_index": 0, "label": "a", "decision": "a", "confidence": confidence, "stage": 1,
                "macs": 1e8, "boxes": [], "severity": share, "severity_class": name}

    several = {**record("z.jpg", 0.7, 13.0, "high"), "findings": [{"class": "a", "index": 0, "prob": 0.7},
                                                                   {"class": "b", "index": 1, "prob": 0.3}]}
    page = render_index([record("x.jpg", 0.9, 12.5, "high"), record("y.jpg", 0.6, 0.4, "healthy"), several],
                        ["a", "b"], tmp_path, tmp_path)
    assert "also b 30%" in page  # a second stress the findings name
    assert 'data-severity="12.50" data-sev="high"' in page and "severity 12.5% (high)" in page
    assert 'data-filter="sev:high">severity: high (2)' in page and 'data-filter="sev:healthy"' in page
    assert 'id="sort-severity"' in page
    plain = render_index([{**record("x.jpg", 0.9, None, None)}], ["a", "b"], tmp_path, tmp_path)
    assert 'id="sort-severity"' not in plain and "data-severity=" not in plain


def test_symptom_prior_moves_the_patches_onto_symptoms(prior_model, leaves):
    """cell_prior 'symptom': the top cell is one of the photo's most symptomatic (per the map); ONNX Runtime's
    cells: test_onnx_runtime_gives_the_same_severity_and_symptom_prior_cells."""
    from agripatch.pipeline.bundle import load_model_file
    from agripatch.pipeline.cells import cell_symptom_shares

    bundle = load_model_file(prior_model)
    predictor = Predictor(bundle)
    results = predictor.run([predictor.item(p, i) for i, p in enumerate(leaves)])
    cfg = bundle.pipeline.config
    cell_boxes = bundle.pipeline.glance_scorer().cell_boxes.numpy()
    for result in results:
        shares = cell_symptom_shares(cell_boxes, cfg.glance_size, result.severity.symptom)
        assert shares[result.cells[0]] >= cfg.symptom_min_share * shares.max()
    with pytest.raises(ValueError, match="cannot run without severity"):
        bundle.pipeline.with_severity(None)


def test_one_pass_scores_the_exits_and_the_severity(severity_model, leaves):
    """exit_probabilities (evaluate's and calibration's pass) carries each photo's severity from the same single run
    of the map that the symptom prior reads, equal to what predict measures."""
    predictor = Predictor.from_file(severity_model, device="cpu")
    items = [predictor.item(p, i) for i, p in enumerate(leaves)]
    calls = []
    hook = predictor.pipeline.symptom_map.register_forward_hook(lambda *args: calls.append(1))
    try:
        outputs = predictor.exit_probabilities(items)
    finally:
        hook.remove()
    assert len(calls) == 1  # every synthetic leaf has one size: one batch through the map, once
    assert [s.share for s in outputs.severities] == [r.severity.share for r in predictor.run(items)]
