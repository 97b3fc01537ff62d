"""`--format tflite`: LiteRT files through litert-torch when it is installed, else a message saying how to get it.

litert-torch is not an agripatch extra (it downgrades pydantic and typing_extensions), so in the project's venv
the first test runs and the second skips; run the second in an environment that has litert-torch.
"""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from agripatch.export.build import ExportOptions, export_model
from agripatch.runtime.errors import MissingDependencyError


@pytest.mark.skipif(importlib.util.find_spec("litert_torch") is not None, reason="litert-torch is installed here")
def test_tflite_without_litert_torch_says_how_to_install_it(tmp_path, tiny_model):
    with pytest.raises(MissingDependencyError) as info:
        export_model(ExportOptions(model=tiny_model, format="tflite", out=tmp_path / "tfl"))
    assert "litert-torch" in str(info.value) and "pip install litert-torch ai-edge-litert" in str(info.value)
    assert "\n" not in str(info.value) and not (tmp_path / "tfl").exists()


@pytest.mark.slow
def test_tflite_export_is_checked_with_the_litert_interpreter(tmp_path, tiny_model):
    pytest.importorskip("litert_torch", reason="litert-torch not installed (see agripatch/export/tflite.py)")
    interpreter_mod = pytest.importorskip("ai_edge_litert.interpreter")
    from agripatch.pipeline.bundle import load_model_file

    out = tmp_path / "tfl"
    export_model(ExportOptions(model=tiny_model, format="tflite", out=out))
    data = json.loads((out / "cascade.json").read_text())
    assert sorted(data["graphs"]) == ["tflite"] and sorted(p.name for p in out.iterdir()) == [
        "cascade.json", "classifier.tflite", "glance.tflite"]
    pipe = load_model_file(tiny_model).pipeline
    glance = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(5))
    entry = data["graphs"]["tflite"]["glance"]
    assert entry["batch"] == 1 and entry["max_abs_diff_vs_torch"] < 1e-4
    interpreter = interpreter_mod.Interpreter(model_path=str(out / "glance.tflite"))
    runner = interpreter.get_signature_runner(entry["signature"])
    got = runner(**{entry["input"]: glance.numpy()})
    with torch.no_grad():
        logits, cam = pipe.glance_scorer()(glance)[:2]
    outs = [got[name] for name in entry["signature_outputs"]]
    assert np.abs(outs[0] - logits.numpy()).max() < 1e-4 and np.abs(outs[1] - cam.numpy()).max() < 1e-4
