"""train + evaluate end to end on synthetic leaves: outputs, resume after SIGKILL, bad inputs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from agripatch.data.folder import scan_image_folder
from agripatch.data.photos import PhotoDataset
from agripatch.data.splits import make_splits, write_splits_csv
from agripatch.data.synth import generate_synthetic
from agripatch.engine.evaluate import EvaluateOptions, evaluate_bundle
from agripatch.engine.scoring import baseline_probabilities
from agripatch.engine.train import run_training
from agripatch.errors import AgripatchError, DatasetError
from agripatch.io.torchfile import load_object
from agripatch.pipeline.bundle import load_model_file
from agripatch.pipeline.exits import simulate_exits

# Tiny but real: ImageNet-initialised lite0 AnchorNet + lite0 classifier, 96-px glance, 48-px patches.
FAST = [
    "cascade.glance_size=96", "cascade.patch_size=48", "data.baseline_size=96", "data.workers=0",
    "stages.anchornet.batch_size=8", "stages.patches.batch_size=8", "stages.baseline.batch_size=8",
]


@pytest.fixture(scope="module")
def leaves(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("leaves") / "data"
    generate_synthetic(root, classes=3, per_class=8, size=128, seed=0)
    write_splits_csv(make_splits(scan_image_folder(root), val=0.25, test=0.25, seed=0), root / "splits.csv")
    return root


@pytest.fixture(scope="module")
def trained(leaves, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "run"
    run_training("smoke", leaves, out, epochs=1, device="cpu", overrides=FAST, quiet=True)
    return out


def _state_dicts(model_file: Path) -> dict[str, dict[str, torch.Tensor]]:
    obj = load_object(model_file)
    return {part: obj[part]["state_dict"] for part in ("anchornet", "classifier") if obj.get(part)}


def test_run_folder_has_every_output(trained):
    for name in ("recipe.yaml", "class_map.json", "splits.csv", "metrics.csv", "model.pt", "val_outputs.npz"):
        assert (trained / name).is_file(), name
    for stage in ("anchornet", "patches", "baseline"):
        assert (trained / "checkpoints" / stage / "last.pt").is_file()
        assert (trained / "checkpoints" / stage / "best.pt").is_file()
    rows = (trained / "metrics.csv").read_text().strip().splitlines()
    assert rows[0].startswith("stage,epoch,train_loss")
    assert [row.split(",")[0] for row in rows[1:]] == ["anchornet", "patches", "baseline"]
    assert json.loads((trained / "class_map.json").read_text())["classes"] == ["healthy", "leaf_spot", "rust"]


def test_model_file_is_self_describing(trained):
    bundle = load_model_file(trained / "model.pt")
    assert bundle.classes == ["healthy", "leaf_spot", "rust"]
    assert bundle.pipeline.config.k == 2
    assert len(bundle.pipeline.config.thresholds) == 3
    assert bundle.meta["anchornet"]["arch"] == "anchornet_lite0_s8"
    assert bundle.meta["anchornet"]["mean"] == [0.5, 0.5, 0.5]
    assert bundle.baseline is not None and bundle.baseline_spec["input_size"] == 96
    assert "name: smoke" in bundle.meta["recipe"]
    # The refusal rule: class means from the 12 training photos, thresholds from the 6 validation photos.
    assert bundle.refusal is not None and bundle.refusal.class_means.shape == (3, 384)
    assert bundle.refusal.fitted["train_photos"] == 12 and bundle.refusal.fitted["val_photos"] == 6


def test_training_tempers_each_exit_and_floors_the_thresholds(trained):
    """The model file's temperatures are the ones that fit its validation photos best, and its thresholds are
    the recipe's (smoke fixes them), raised to the unsure confidence on every exit but the last."""
    from agripatch.pipeline.calibration import fit_temperatures
    from agripatch.pipeline.exits import floor_thresholds

    config = load_model_file(trained / "model.pt").pipeline.config
    val = np.load(trained / "val_outputs.npz")
    assert val["probs"].shape == (6, 3, 3) and val["features"].shape == (6, 384)
    assert config.temperatures == fit_temperatures(val["probs"], val["labels"])
    refusal = load_model_file(trained / "model.pt").refusal
    assert config.thresholds == floor_thresholds([0.9, 0.9, 0.0], refusal.confidence_threshold)


def saved_features_match(folder: Path, bundle) -> bool:
    """stage_probs.npz holds the test photos' glance features, from which the refusal rule's distances follow."""
    saved = np.load(folder / "stage_probs.npz")
    return saved["features"].shape == (6, bundle.refusal.class_means.shape[1])


def test_evaluate_writes_reports_and_replays_exits(trained, leaves, tmp_path):
    bundle = load_model_file(trained / "model.pt")
    options = EvaluateOptions(model=trained / "model.pt", data=leaves, out=tmp_path, split="test")
    summary = evaluate_bundle(bundle, options, log=lambda *a, **k: None)
    for name in ("report.txt", "report.json", "confusion_matrix.csv", "confusion_matrix.png", "sweep.csv",
                 "budget_sweep.png", "misclassified.csv", "predictions.csv", "summary.json", "stage_probs.npz",
                 "reliability.png", "what_you_get.csv"):
        assert (tmp_path / name).is_file(), name
    assert summary["num_images"] == 6
    # The replayed exits are what predict() decides on the same photos.
    rows = (tmp_path / "predictions.csv").read_text().strip().splitlines()[1:]
    paths = [row.split(",")[0] for row in rows]
    photos = PhotoDataset(leaves, paths, min_side=bundle.pipeline.decode_min_side())
    live = bundle.pipeline.predict([photos[i]["image"] for i in range(len(paths))], thresholds=summary["thresholds"])
    assert [bundle.classes[r.label] for r in live] == [row.split(",")[2] for row in rows]
    assert [r.stage for r in live] == [int(row.split(",")[4]) for row in rows]
    saved = np.load(tmp_path / "stage_probs.npz")
    assert saved["probs"].shape == (6, 3, 3) and saved["labels"].shape == (6,)
    pred, _, macs = simulate_exits(saved["probs"], saved["stage_macs"], summary["thresholds"])
    assert float((pred == saved["labels"]).mean()) == summary["top1"]
    assert float(macs.mean()) == summary["mean_macs"]
    assert 0 < summary["mean_gmacs"] <= summary["stage_gmacs"][-1] + 1e-9
    assert set(summary["per_class_recall"]) == {"healthy", "leaf_spot", "rust"}
    assert "baseline" in summary
    # Calibration of the answers' confidence, and the one table of what a user gets.
    calibration = summary["calibration"]
    assert calibration["photos"] == 6 and len(calibration["bins"]) == 15 and 0 <= calibration["ece"] <= 1
    assert sum(b["photos"] for b in calibration["bins"]) == 6
    perfect = calibration["ece_if_calibrated"]
    assert 0 <= perfect["mean"] <= perfect["p95"] <= 1 and 0 <= perfect["p_value"] <= 1
    table = {row["model"].split(" (")[0]: row for row in summary["what_you_get"]}
    assert set(table) == {"cascade", "all patches", "glance only", "full image tf_efficientnet_lite0@96"}
    assert table["cascade"]["top1"] == summary["top1"] and table["all patches"]["top1"] == summary["all_patches_top1"]
    assert table["full image tf_efficientnet_lite0@96"]["vs_baseline"] == 0.0
    assert saved_features_match(tmp_path, bundle)
    # The baseline's inputs made in the decoding workers are the ones its training's evaluation makes from the file.
    files = [leaves / path for path in paths]
    assert [bundle.classes[i] for i in baseline_probabilities(bundle, files).argmax(1)] == [row.split(",")[5] for row in rows]
    refused = summary["refusal"]
    assert 0 <= refused["refused_fraction"] <= 1 and refused["not_a_leaf"] + refused["unsure"] <= 6
    per_class = refused["per_class"]
    assert set(per_class) == {"healthy", "leaf_spot", "rust"} and sum(c["photos"] for c in per_class.values()) == 6
    assert sum(c["not_a_leaf"] + c["unsure"] for c in per_class.values()) == refused["not_a_leaf"] + refused["unsure"]
    # smoke trains on quarter turns and meters its photos' exposure: the photos judged on their glance's views paid
    # AnchorNet four more times (three turns and the re-exposed glance)
    assert bundle.refusal.view_turns == (1, 2, 3) and 0 < bundle.refusal.view_exposure < 1
    assert refused["mean_view_gmacs"] == pytest.approx(
        refused["judged_on_views"] * 4 * summary["stage_gmacs"][0] / 6)
    matrix = (tmp_path / "confusion_matrix.csv").read_text().splitlines()
    assert matrix[0] == "true \\ predicted,healthy,leaf_spot,rust"
    assert sum(int(v) for line in matrix[1:] for v in line.split(",")[1:]) == 6


def test_existing_run_is_not_overwritten(trained, leaves):
    before = (trained / "model.pt").read_bytes()
    with pytest.raises(AgripatchError, match="already holds a run"):
        run_training("smoke", leaves, trained, epochs=1, device="cpu", overrides=FAST, quiet=True)
    assert (trained / "model.pt").read_bytes() == before


def test_completed_run_resumes_without_training(trained, leaves):
    before = _state_dicts(trained / "model.pt")
    run_training("smoke", leaves, trained, epochs=1, device="cpu", overrides=FAST, resume=True, quiet=True)
    after = _state_dicts(trained / "model.pt")
    for part in before:
        assert all(torch.equal(before[part][key], after[part][key]) for key in before[part])
    assert len((trained / "metrics.csv").read_text().strip().splitlines()) == 4  # no duplicated rows


def test_resume_with_other_classes_is_refused(trained, tmp_path):
    other = tmp_path / "other"
    generate_synthetic(other, classes=2, per_class=4, size=128, seed=0)
    with pytest.raises(DatasetError, match="class map"):
        run_training("smoke", other, trained, epochs=1, device="cpu", overrides=FAST, resume=True, quiet=True)


def test_one_class_dataset_is_a_clear_error(tmp_path):
    data = tmp_path / "one"
    generate_synthetic(data, classes=2, per_class=3, size=128, seed=0)
    for path in (data / "leaf_spot").iterdir():
        path.unlink()
    (data / "leaf_spot").rmdir()
    (data / "boxes.csv").unlink()
    with pytest.raises(DatasetError, match="at least 2"):
        run_training("smoke", data, tmp_path / "run", epochs=1, device="cpu", overrides=FAST, quiet=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_recipe_typo_fails_on_the_command_line_naming_the_key(leaves, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "agripatch", "train", "--recipe", "smoke", "--data", str(leaves), "--out",
         str(tmp_path / "run"), "stages.anchornet.epoch=1"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120,
    )
    assert result.returncode != 0
    assert "stages.anchornet.epoch" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_corrupt_training_image_is_skipped_and_reported_once(tmp_path):
    data = tmp_path / "data"
    generate_synthetic(data, classes=2, per_class=6, size=128, seed=0)
    bad = data / "healthy" / "zz_corrupt.jpg"
    bad.write_bytes((data / "healthy" / "healthy_0000.jpg").read_bytes()[:300])
    (data / "boxes.csv").unlink()
    out = tmp_path / "run"
    run_training("smoke", data, out, epochs=2, device="cpu", quiet=True,
                 overrides=FAST + ["stages.baseline.enabled=false", "data.val_fraction=0.0", "data.test_fraction=0.0"])
    assert (out / "model.pt").is_file()
    listed = (out / "skipped_images.txt").read_text().split()
    assert listed == [str(bad)]


def _kill_when(process: subprocess.Popen, condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if condition():
            process.send_signal(signal.SIGKILL)
            process.wait()
            return True
        time.sleep(0.05)
    return False


@pytest.mark.slow
def test_sigkill_then_resume_reaches_the_same_weights(leaves, tmp_path):
    overrides = FAST + ["stages.baseline.enabled=false", "stages.anchornet.epochs=3", "stages.patches.epochs=2"]
    reference = tmp_path / "reference"
    run_training("smoke", leaves, reference, device="cpu", overrides=overrides, quiet=True)

    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "agripatch", "train", "--recipe", "smoke", "--data", str(leaves),
               "--out", str(killed), "--device", "cpu", *overrides]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "anchornet" / "last.pt"

    def mid_anchornet_stage() -> bool:
        try:
            return last.is_file() and load_object(last)["epoch"] >= 1
        except Exception:
            return False

    assert _kill_when(process, mid_anchornet_stage, timeout=300), "the run ended before it could be killed"
    assert not (killed / "model.pt").exists()
    subprocess.run([*command, "--resume"], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=600)
    expected, got = _state_dicts(reference / "model.pt"), _state_dicts(killed / "model.pt")
    for part in expected:
        assert expected[part].keys() == got[part].keys()
        for key in expected[part]:
            assert torch.equal(expected[part][key], got[part][key]), f"{part}.{key} differs after resume"
    assert (killed / "metrics.csv").read_text() .count("\nanchornet,") == 3


def test_calibrate_refits_a_finished_model_without_retraining(trained, leaves, tmp_path):
    """`agripatch calibrate`: the networks are kept; temperatures, refusal and exits are refitted on val."""
    from typer.testing import CliRunner

    from agripatch.cli import app
    from agripatch.pipeline.calibration import fit_temperatures

    out = tmp_path / "recalibrated.pt"
    result = CliRunner().invoke(app, ["calibrate", str(trained / "model.pt"), "--data", str(leaves), "--out", str(out),
                                      "--target-confidence", "0.8"])
    assert result.exit_code == 0, result.output
    before, after = load_object(trained / "model.pt"), load_object(out)
    assert all(torch.equal(before["classifier"]["state_dict"][k], v) for k, v in after["classifier"]["state_dict"].items())
    val = np.load(trained / "val_outputs.npz")
    np.testing.assert_allclose(after["cascade"]["temperatures"], fit_temperatures(val["probs"], val["labels"]), rtol=0.1)
    floor = after["refusal"]["confidence_threshold"]
    assert after["cascade"]["thresholds"][:-1] == [max(0.8, floor)] * 2
    assert after["metrics"]["calibration"]["how"] == "calibrated confidence 0.8 on val"
    assert load_model_file(out).pipeline.config.temperatures == after["cascade"]["temperatures"]
    both = CliRunner().invoke(app, ["calibrate", str(out), "--data", str(leaves), "--budget", "1", "--target-confidence", "0.8"])
    assert both.exit_code != 0


def test_training_records_the_photos_orientation_and_calibrate_fits_an_old_files(trained, leaves, tmp_path):
    """Square training photos: the model reads photos as they come. A model file from before the rule, calibrated on
    data whose training photos are all landscape, reads photos landscape from then on."""
    import shutil

    from PIL import Image

    from agripatch.data.splits import load_splits
    from agripatch.engine.calibrate import run_calibration
    from agripatch.io.torchfile import save_object

    assert load_object(trained / "model.pt")["cascade"]["photo_orientation"] == "any"
    assert load_object(trained / "model.pt")["refusal"]["view_turns"] == [1, 2, 3]  # smoke trains on quarter turns
    data = tmp_path / "data"
    shutil.copytree(leaves, data)
    for row in load_splits(data):
        if row.split == "train":
            photo = Image.open(data / row.path)
            photo.resize((photo.width, photo.height * 3 // 4)).save(data / row.path)  # 128 x 96: landscape
    obj = load_object(trained / "model.pt")
    before_exposure_view = {k: v for k, v in obj["refusal"].items() if k != "view_exposure"}
    old = save_object({**obj, "cascade": {**obj["cascade"], "photo_orientation": None},
                       "refusal": before_exposure_view}, tmp_path / "old.pt")
    logged = []
    run_calibration(old, data, log=logged.append)
    assert load_object(old)["cascade"]["photo_orientation"] == "landscape"
    assert any("photos are read landscape" in line for line in logged)
    bundle = load_model_file(old)
    assert bundle.pipeline.config.photo_orientation == "landscape"
    # the file from before the exposure view gets the level its training photos are metered at, as training meters it
    from agripatch.engine.scoring import median_exposure, split_dataset

    metered = median_exposure(split_dataset(bundle, data, "train", glance_only=True))
    assert 0 < metered < 1 and bundle.refusal.view_exposure == pytest.approx(metered, rel=1e-4)
    assert any(f"re-exposed to {bundle.refusal.view_exposure:.3f}" in line for line in logged)


def test_calibrate_adds_a_full_image_exit_read_by_the_baseline(trained, leaves, tmp_path):
    """`agripatch calibrate --full-image-exit`: the file's baseline reads the photos the patches leave unsure;
    every exit is refitted (k + 2 of them) and evaluate reports them (the export of k + 2 exits: test_roundtrip)."""
    from typer.testing import CliRunner

    from agripatch.cli import app
    from agripatch.pipeline.macs import count_macs

    out = tmp_path / "full.pt"
    result = CliRunner().invoke(app, ["calibrate", str(trained / "model.pt"), "--data", str(leaves), "--out", str(out),
                                      "--full-image-exit"])
    assert result.exit_code == 0, result.output
    bundle = load_model_file(out)
    cfg, size = bundle.pipeline.config, int(bundle.baseline_spec["input_size"])
    assert cfg.full_image_exit and cfg.n_exits == cfg.k + 2
    assert len(cfg.thresholds) == len(cfg.temperatures) == cfg.k + 2
    macs = bundle.pipeline.exit_macs()
    assert macs[-1] == macs[cfg.k] + count_macs(bundle.baseline, (1, 3, size, size))
    summary = evaluate_bundle(bundle, EvaluateOptions(model=out, data=leaves, out=tmp_path / "eval", split="test"),
                              log=lambda *a, **k: None)
    assert len(summary["exit_histogram"]) == cfg.k + 2 and np.load(tmp_path / "eval" / "stage_probs.npz")["probs"].shape[1] == cfg.k + 2
    photos = PhotoDataset(leaves, ["healthy/" + p.name for p in sorted((leaves / "healthy").iterdir())[:3]],
                          min_side=bundle.pipeline.decode_min_side())
    live = bundle.pipeline.predict([photos[i]["image"] for i in range(3)], thresholds=[2.0] * (cfg.k + 1) + [0.0])
    assert [r.stage for r in live] == [cfg.k + 1] * 3 and all(r.macs == macs[-1] for r in live)
    off = CliRunner().invoke(app, ["calibrate", str(out), "--data", str(leaves), "--no-full-image-exit"])
    assert off.exit_code == 0, off.output
    assert load_model_file(out).pipeline.config.n_exits == cfg.k + 1



def test_calibrate_switches_a_model_to_the_symptom_prior_read_small(trained, leaves, tmp_path):
    """`agripatch calibrate --symptom-prior --map-side 64`: a file trained with another prior gets the package's map
    (stored in the file, so predict needs nothing else), ranks its cells by it read at 64 px, measures severity, and
    its exits are refitted on what the new ranking gives; --map-side alone is refused."""
    from typer.testing import CliRunner

    from agripatch.cli import app
    from agripatch.pipeline.severity import map_hw

    before = load_model_file(trained / "model.pt")
    assert before.pipeline.config.cell_prior != "symptom" and before.pipeline.config.severity is None
    out = tmp_path / "symptom.pt"
    result = CliRunner().invoke(app, ["calibrate", str(trained / "model.pt"), "--data", str(leaves), "--out", str(out),
                                      "--symptom-prior", "--map-side", "64"])
    assert result.exit_code == 0, result.output
    stored = load_object(out)
    assert stored["symptom_map"] is not None and stored["cascade"]["cell_prior"] == "symptom"
    bundle = load_model_file(out)
    cfg = bundle.pipeline.config
    assert cfg.severity.side == 64 and "read at 64 px" in cfg.severity.source
    photos = PhotoDataset(leaves, ["healthy/" + p.name for p in sorted((leaves / "healthy").iterdir())[:2]],
                          min_side=bundle.pipeline.decode_min_side())
    live = bundle.pipeline.predict([photos[i]["image"] for i in range(2)], thresholds=[2.0] * cfg.k + [0.0])
    h, w = photos[0]["decoded_hw"]
    assert all(r.severity is not None for r in live)
    assert live[0].severity.macs == cfg.severity.macs(*map_hw(h, w, 64, cfg.severity.stride))
    assert CliRunner().invoke(app, ["calibrate", str(out), "--data", str(leaves), "--map-side", "96"]).exit_code != 0

def test_training_with_a_full_image_exit(leaves, tmp_path):
    """A recipe with cascade.full_image_exit trains its baseline and calibrates k + 2 exits; without the baseline
    stage it is refused when the recipe is read."""
    out = tmp_path / "run"
    run_training("smoke", leaves, out, epochs=1, device="cpu", quiet=True,
                 overrides=FAST + ["cascade.full_image_exit=true", "cascade.thresholds=null"])
    config = load_model_file(out / "model.pt").pipeline.config
    assert config.full_image_exit and len(config.thresholds) == len(config.temperatures) == config.k + 2
    assert np.load(out / "val_outputs.npz")["probs"].shape[1] == config.k + 2
    with pytest.raises(AgripatchError, match="stages.baseline.enabled=true"):
        run_training("smoke", leaves, tmp_path / "no-baseline", epochs=1, device="cpu", quiet=True,
                     overrides=FAST + ["cascade.full_image_exit=true", "cascade.thresholds=null",
                                       "stages.baseline.enabled=false"])


def test_training_with_severity_writes_the_map_into_the_model_file(leaves, tmp_path):
    """A recipe with cascade.severity writes the shipped symptom map and its cost terms into model.pt, so predict
    needs nothing else; the diagnosis is calibrated as without it."""
    from agripatch.predict.predictor import Predictor

    out = tmp_path / "run"
    run_training("smoke", leaves, out, epochs=1, device="cpu", quiet=True,
                 overrides=FAST + ["cascade.severity.side=64", "cascade.severity.cuts=[1, 5, 10, 15]"])
    bundle = load_model_file(out / "model.pt")
    severity = bundle.pipeline.config.severity
    assert severity.side == 64 and severity.cuts == [1, 5, 10, 15] and severity.macs_terms[0] > 0
    record = Predictor(bundle).predict([next(iter(sorted(leaves.rglob("*.jpg"))))])[0]
    assert record["severity"] is not None and record["severity_macs"] == severity.macs(64, 64)


def test_training_with_the_symptom_prior_ranks_the_patch_stages_cells_by_the_map(leaves, tmp_path):
    """cell_prior 'symptom' is one rule for training's patch stage and predict: the stage's cascade carries the map
    (a recipe asking for the prior without severity is refused when read)."""
    out = tmp_path / "run"
    run_training("smoke", leaves, out, epochs=1, device="cpu", quiet=True,
                 overrides=FAST + ["cascade.severity.side=64", "cascade.cell_prior=symptom"])
    config = load_model_file(out / "model.pt").pipeline.config
    assert config.cell_prior == "symptom" and config.severity.side == 64
    with pytest.raises(AgripatchError, match="set cascade.severity"):
        run_training("smoke", leaves, tmp_path / "no-map", epochs=1, device="cpu", quiet=True,
                     overrides=FAST + ["cascade.cell_prior=symptom"])


def test_kept_weights_are_the_best_or_the_last_epoch(tmp_path):
    """``keep`` picks the file; the last epoch hands on its EMA when the stage kept one."""
    from agripatch.engine.loop import STATE_FORMAT, kept_weights
    from agripatch.io.torchfile import save_object

    w = {name: {"w": torch.full((2,), value)} for name, value in (("best", 1.0), ("last", 2.0), ("ema", 3.0))}
    save_object({"format": STATE_FORMAT, "stage": "patches", "epoch": 2, "model": w["best"], "val_acc": 0.9},
                tmp_path / "best.pt")
    last = {"format": STATE_FORMAT, "stage": "patches", "epoch": 3, "model": w["last"], "ema": None,
            "history": [{"val_acc": 0.5}, {"val_acc": 0.9}, {"val_acc": 0.7}]}
    save_object(last, tmp_path / "last.pt")
    weights, path, val_acc = kept_weights(tmp_path, "best")
    assert torch.equal(weights["w"], w["best"]["w"]) and path.name == "best.pt" and val_acc == 0.9
    weights, path, val_acc = kept_weights(tmp_path, "last")
    assert torch.equal(weights["w"], w["last"]["w"]) and path.name == "last.pt" and val_acc == 0.7
    save_object({**last, "ema": w["ema"]}, tmp_path / "last.pt")
    assert torch.equal(kept_weights(tmp_path, "last")[0]["w"], w["ema"]["w"])
    with pytest.raises(ValueError, match="keep must be"):
        kept_weights(tmp_path, "first")


def test_a_stage_keeping_its_last_epoch_hands_it_to_the_model_file(leaves, tmp_path):
    out = tmp_path / "run"
    run_training("smoke", leaves, out, epochs=3, device="cpu", quiet=True,
                 overrides=[*FAST, "stages.patches.keep=last", "stages.baseline.enabled=false"])
    classifier = _state_dicts(out / "model.pt")["classifier"]
    last = load_object(out / "checkpoints" / "patches" / "last.pt")["model"]
    assert all(torch.equal(classifier[k], last[k]) for k in classifier)
    best = load_object(out / "checkpoints" / "patches" / "best.pt")
    anchornet = _state_dicts(out / "model.pt")["anchornet"]  # AnchorNet keeps its best epoch (the default)
    best_anchornet = load_object(out / "checkpoints" / "anchornet" / "best.pt")["model"]
    assert all(torch.equal(anchornet[k], best_anchornet[k]) for k in anchornet)
    if best["epoch"] != 3:  # the best epoch was an earlier one: the model file must not hold it
        assert not all(torch.equal(classifier[k], best["model"][k]) for k in classifier)


def test_every_stage_trains_in_bf16_autocast_on_a_cpu_when_asked(leaves, tmp_path, monkeypatch):
    """With ``AGRIPATCH_CPU_BF16=1`` (and, until measured no faster, by default on CPUs with AMX units) the recipes
    train in bf16 autocast on a CPU (``runtime.amp``, ``device.amp_dtype``). Every stage, the calibration and the
    model file work there: the patch stage once failed at its first step, in the crop, on an AMX CPU."""
    monkeypatch.setenv("AGRIPATCH_CPU_BF16", "1")
    out = tmp_path / "run"
    run_training("smoke", leaves, out, epochs=1, device="cpu", quiet=True,
                 overrides=FAST + ["runtime.amp=true", "cascade.full_image_exit=true", "cascade.thresholds=null"])
    config = load_model_file(out / "model.pt").pipeline.config
    assert len(config.thresholds) == config.k + 2 and all(np.isfinite(config.temperatures))
    stages = {row.split(",")[0] for row in (out / "metrics.csv").read_text().splitlines()[1:]}
    assert {"anchornet", "patches", "baseline"} <= stages


def test_training_under_the_leaf_prior_stores_the_classes_whose_evidence_lies_off_the_leaf(leaves, tmp_path):
    """Once AnchorNet is trained, the run decides on its training photos which classes' own class map points off
    the green leaf (fruit, flowers); the model file keeps them, and `agripatch calibrate` refits the same ones."""
    from typer.testing import CliRunner

    from agripatch.cli import app
    from agripatch.data.splits import load_splits, samples_for
    from agripatch.engine.scoring import own_class_top_shares
    from agripatch.pipeline.cells import off_leaf_classes

    out = tmp_path / "run"
    run_training("smoke", leaves, out, epochs=1, device="cpu", quiet=True,
                 overrides=FAST + ["cascade.cell_prior=leaf", "cascade.leaf_min_share=0.9"])
    bundle = load_model_file(out / "model.pt")
    cfg = bundle.pipeline.config
    train = samples_for(load_splits(out), "train", bundle.classes)
    photos = PhotoDataset(leaves, [p for p, _ in train], labels=[label for _, label in train],
                          min_side=cfg.glance_size, glance_size=cfg.glance_size)
    shares, labels = own_class_top_shares(bundle.pipeline, photos)
    assert len(shares) == len(train) and sorted(set(labels.tolist())) == [0, 1, 2]
    assert cfg.off_leaf_classes == off_leaf_classes(shares, labels, 3, 0.9)
    result = CliRunner().invoke(app, ["calibrate", str(out / "model.pt"), "--data", str(leaves),
                                      "--out", str(tmp_path / "again.pt")])
    assert result.exit_code == 0, result.output
    assert "ranked by the class map alone" in result.output
    assert load_model_file(tmp_path / "again.pt").pipeline.config.off_leaf_classes == cfg.off_leaf_classes
