"""The runtime never imports torch, and a missing [onnx] extra is a one-line message saying what to install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from export_helpers import needs_onnx

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "COLUMNS": "300", "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}


def _python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, cwd=REPO,
                          timeout=timeout)


@pytest.mark.slow  # the session's export fixture takes ~10 s; the import-only check below is fast
def test_the_whole_cascade_runs_without_importing_torch(exported, photos):
    needs_onnx()
    code = f"""
import json, sys
from agripatch.runtime import load
records = []
for int8 in (False, True):
    predictor = load({str(exported)!r}, int8=int8, threads=1)
    records += predictor.predict({[str(p) for p in photos[:5]]!r}, batch_size=3)
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "timm"))
print(json.dumps({{"heavy": heavy, "stages": [r["stage"] for r in records], "errors": [r.get("error") for r in records]}}))
"""
    done = _python(code)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert result["errors"] == [None] * 10 and set(result["stages"]) <= {0, 1, 2, 3}


def _poisoned_cli(module: str, *args: str) -> subprocess.CompletedProcess:
    """The CLI in a process where ``import module`` fails, as if the package were not installed."""
    code = (f"import sys; sys.modules[{module!r}] = None; sys.argv = ['agripatch', *{list(args)!r}]; "
            "from agripatch.cli import main; main()")
    return _python(code)


def test_backend_onnxruntime_without_onnxruntime_says_which_pip_install(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    done = _poisoned_cli("onnxruntime", "predict", "folder", str(photos), "--model", str(tmp_path / "export"),
                         "--out", str(tmp_path / "out"), "--backend", "onnxruntime")
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'agripatch[onnx]'" in lines[0] and "onnxruntime" in lines[0]
    assert not (tmp_path / "out").exists()


def test_export_without_onnxscript_says_which_pip_install(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"not checked yet")
    done = _poisoned_cli("onnxscript", "export", str(tmp_path / "model.pt"), "--format", "onnx",
                         "--out", str(tmp_path / "export"))
    assert done.returncode == 1 and "pip install 'agripatch[onnx]'" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("module", ["agripatch.runtime", "agripatch.runtime.predictor", "agripatch.runtime.cascade"])
def test_runtime_modules_import_without_torch_or_onnxruntime(module):
    done = _python(f"import sys; import {module}; "
                   "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'onnxruntime')))")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
