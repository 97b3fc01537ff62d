"""Bad input to `agripatch export` is a one-line error and writes nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from export_helpers import needs_onnx

from agripatch.errors import AgripatchError
from agripatch.export.build import ExportOptions, export_model
from agripatch.export.errors import ExportError

ENV = {**os.environ, "COLUMNS": "300", "NO_ALBUMENTATIONS_UPDATE": "1"}


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else b"/")
            for p in sorted(folder.rglob("*"))}


def _fails(tmp_path: Path, **options) -> str:
    before = _tree(tmp_path)
    with pytest.raises(AgripatchError) as info:
        export_model(ExportOptions(**options))
    assert _tree(tmp_path) == before  # nothing written, nothing removed
    message = str(info.value)
    assert "\n" not in message
    return message


def test_an_unsupported_format_is_refused(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"x")
    message = _fails(tmp_path, model=tmp_path / "model.pt", format="coreml", out=tmp_path / "a" / "b")
    assert "coreml" in message and "onnx, tflite" in message


def test_an_existing_output_folder_is_left_alone(tmp_path, tiny_model):
    out = tmp_path / "export"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "already exists" in _fails(tmp_path, model=tiny_model, format="onnx", out=out)


def test_a_file_that_is_not_a_model_is_refused(tmp_path):
    needs_onnx()
    (tmp_path / "notes.pt").write_text("these are field notes\n")
    message = _fails(tmp_path, model=tmp_path / "notes.pt", format="onnx", out=tmp_path / "new" / "deeper")
    assert "not a usable agripatch model file" in message


def test_int8_options_are_checked_before_anything_is_written(tmp_path, tiny_model):
    assert "--calibration" in _fails(tmp_path, model=tiny_model, format="onnx", out=tmp_path / "x", int8=True)
    assert "--format onnx" in _fails(tmp_path, model=tiny_model, format="tflite", out=tmp_path / "x", int8=True,
                                     calibration=tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    needs_onnx()
    assert "no photos" in _fails(tmp_path, model=tiny_model, format="onnx", out=tmp_path / "x", int8=True,
                                 calibration=empty)


def test_a_failure_while_building_leaves_no_folder_behind(tmp_path, tiny_model, monkeypatch):
    needs_onnx()
    import agripatch.export.graphs as graphs

    def broken(*args, **kwargs):
        raise ExportError("simulated disagreement")

    monkeypatch.setattr(graphs, "check_onnx", broken)
    assert "simulated" in _fails(tmp_path, model=tiny_model, format="onnx", out=tmp_path / "new" / "export")


def test_the_cli_prints_one_red_line_and_exits_1(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"x")
    done = subprocess.run([sys.executable, "-m", "agripatch", "export", str(tmp_path / "model.pt"), "--format",
                           "tflite2", "--out", str(tmp_path / "out")], capture_output=True, text=True, env=ENV,
                          timeout=120)
    assert done.returncode == 1
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        "error: unsupported export format 'tflite2': use one of onnx, tflite"]
    assert not (tmp_path / "out").exists()
