"""`agripatch predict folder --backend onnxruntime`: an export folder gives the torch run's records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from export_helpers import needs_onnx

from agripatch.errors import AgripatchError

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "COLUMNS": "300", "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agripatch", "predict", "folder", *args], capture_output=True,
                          text=True, env=ENV, cwd=REPO, timeout=300)


def _records(out: Path) -> dict[str, dict]:
    return {r["path"]: r for r in map(json.loads, (out / "predictions.jsonl").read_text().splitlines())}


@pytest.mark.slow
def test_cli_backend_onnxruntime_matches_the_torch_run_and_resumes(tmp_path, photo_dir, tiny_model, exported):
    from predict_helpers import predict_folder

    predict_folder(photo_dir, tiny_model, tmp_path / "torch", recursive=True, workers=0, device="cpu", quiet=True)
    done = _cli(str(photo_dir), "--recursive", "--model", str(exported), "--out", str(tmp_path / "onnx"),
                "--backend", "onnxruntime", "--workers", "0", "--quiet")
    assert done.returncode == 0, done.stderr[-2000:]
    ours, ref = _records(tmp_path / "onnx"), _records(tmp_path / "torch")
    assert sorted(ours) == sorted(ref) and len(ours) >= 12
    for path, a in ours.items():
        b = ref[path]
        assert (a["label"], a["stage"], a["macs"]) == (b["label"], b["stage"], b["macs"])
        assert [x["box"] for x in a["boxes"]] == [x["box"] for x in b["boxes"]]
        assert abs(a["confidence"] - b["confidence"]) <= 1e-4
        assert [x["crop"] for x in a["boxes"]] == [x["crop"] for x in b["boxes"]] and a["overlay"] == b["overlay"]
    summary = json.loads((tmp_path / "onnx" / "summary.json").read_text())
    assert summary["device"] == "onnxruntime:CPUExecutionProvider" and summary["photos"] == len(ours)

    from agripatch.runtime.manifest import manifest_sha256

    assert summary["model_sha256"] == manifest_sha256(exported)  # the resume check hashes cascade.json
    again = _cli(str(photo_dir), "--recursive", "--model", str(exported), "--out", str(tmp_path / "onnx"),
                 "--backend", "onnxruntime", "--workers", "0", "--quiet")
    assert again.returncode == 0 and json.loads((tmp_path / "onnx" / "summary.json").read_text())["new"] == 0
    mixed = _cli(str(photo_dir), "--recursive", "--model", str(exported), "--out", str(tmp_path / "onnx"),
                 "--backend", "onnxruntime", "--int8", "--workers", "0", "--quiet")
    assert mixed.returncode == 1 and "another model" in mixed.stderr  # int8 never resumes an fp32 run


@pytest.mark.slow
def test_int8_backend_runs_through_predict_folder(tmp_path, photo_dir, exported):
    from predict_helpers import predict_folder

    summary = predict_folder(photo_dir, exported, tmp_path / "int8", recursive=True, workers=0, quiet=True,
                             backend="onnxruntime", int8=True, crops=False, overlays=False)
    assert summary.photos >= 12 and summary.extra["device"].endswith("-int8")


def test_backend_options_are_checked_before_anything_is_written(tmp_path, photo_dir, tiny_model):
    from predict_helpers import predict_folder

    with pytest.raises(AgripatchError, match="--int8"):
        predict_folder(photo_dir, tiny_model, tmp_path / "a", int8=True)
    with pytest.raises(AgripatchError, match="--backend 'tensorrt'"):
        predict_folder(photo_dir, tiny_model, tmp_path / "a", backend="tensorrt")
    needs_onnx()
    with pytest.raises(AgripatchError, match="must be an export folder"):
        predict_folder(photo_dir, tiny_model, tmp_path / "a", backend="onnxruntime")
    assert not (tmp_path / "a").exists()


def test_cli_runs_a_model_file_on_onnxruntime_through_an_export_made_once_beside_it(tmp_path, photo_dir, tiny_model):
    import shutil

    needs_onnx()
    from agripatch.runtime.manifest import MANIFEST_NAME, manifest_sha256

    model = tmp_path / "models" / "model.pt"
    model.parent.mkdir()
    shutil.copyfile(tiny_model, model)
    refused = _cli(str(photo_dir), "--recursive", "--model", str(model), "--out", str(tmp_path / "int8"),
                   "--backend", "onnxruntime", "--int8", "--quiet")
    assert refused.returncode == 1 and "--int8" in refused.stderr and not (tmp_path / "int8").exists()
    first = _cli(str(photo_dir), "--recursive", "--model", str(model), "--out", str(tmp_path / "out"),
                 "--backend", "onnxruntime", "--workers", "0", "--quiet", "--no-crops", "--no-overlays")
    assert first.returncode == 0, first.stderr[-2000:]
    exports = [p for p in model.parent.iterdir() if p.is_dir()]
    assert len(exports) == 1 and exports[0].name.startswith("model.onnx-") and (exports[0] / MANIFEST_NAME).is_file()
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["device"] == "onnxruntime:CPUExecutionProvider" and summary["photos"] >= 12
    assert summary["model_sha256"] == manifest_sha256(exports[0])
    stamp = (exports[0] / MANIFEST_NAME).stat().st_mtime_ns
    again = _cli(str(photo_dir), "--recursive", "--model", str(model), "--out", str(tmp_path / "out"),
                 "--backend", "onnxruntime", "--workers", "0", "--quiet", "--no-crops", "--no-overlays")
    assert again.returncode == 0 and json.loads((tmp_path / "out" / "summary.json").read_text())["new"] == 0
    assert (exports[0] / MANIFEST_NAME).stat().st_mtime_ns == stamp  # reused, not exported again
    assert "exporting" in first.stderr and "exporting" not in again.stderr


def test_export_beside_refuses_to_write_under_torchrun_and_names_the_fix(tmp_path, tiny_model, monkeypatch):
    import shutil

    from agripatch.export.build import export_beside

    model = tmp_path / "model.pt"
    shutil.copyfile(tiny_model, model)
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets for every rank
    with pytest.raises(AgripatchError, match="agripatch export .* --format onnx --out DIR"):
        export_beside(model)
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # no rank started a half-written export
