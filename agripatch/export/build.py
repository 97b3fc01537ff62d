"""`agripatch export`: a model file -> a folder of graphs + cascade.json that runs without PyTorch.

Steps (:func:`export_model`): check the options (format, output folder, calibration photos, packages) ->
load the model file -> build everything in a hidden temporary folder beside OUT -> rename it to OUT at the
end. A failure at any step leaves nothing behind: not OUT, not the temporary folder, not the parent folders
this run created.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agripatch.errors import AgripatchError
from agripatch.export.errors import ExportError
from agripatch.io.sources import file_sha256
from agripatch.runtime.errors import require
from agripatch.runtime.manifest import MANIFEST_NAME

__all__ = ["FORMATS", "ExportOptions", "ExportResult", "export_beside", "export_model"]

FORMATS = ("onnx", "tflite")


@dataclass
class ExportOptions:
    """What `agripatch export` is asked (the CLI flags, one field each)."""

    model: Path
    format: str
    out: Path
    int8: bool = False
    calibration: Path | None = None
    calibration_count: int = 300
    seed: int = 0

    def check(self) -> None:
        """Refuse impossible options before anything is read or written (one-line errors)."""
        if self.format not in FORMATS:
            raise ExportError(f"unsupported export format {self.format!r}: use one of {', '.join(FORMATS)}")
        out = Path(self.out).expanduser()
        if out.exists() or out.is_symlink():
            raise ExportError(f"--out {str(self.out)!r} already exists; choose a new folder (nothing was written)")
        if not Path(self.model).expanduser().is_file():
            raise ExportError(f"model file {str(self.model)!r} does not exist")
        if self.int8:
            if self.format != "onnx":
                raise ExportError("--int8 is for --format onnx (ONNX Runtime static quantization)")
            if self.calibration is None:
                raise ExportError("--int8 needs --calibration PHOTOS_DIR (a dataset root: its train split is used)")
            if not Path(self.calibration).expanduser().is_dir():
                raise ExportError(f"--calibration {str(self.calibration)!r} is not a folder")
            if self.calibration_count < 1:
                raise ExportError(f"--calibration-count must be >= 1, got {self.calibration_count}")


@dataclass
class ExportResult:
    """What an export wrote: the folder, its files (name -> bytes) and the cascade.json document."""

    out: Path
    files: dict[str, int]
    manifest: dict[str, Any] = field(repr=False)


def _require_packages(options: ExportOptions) -> None:
    if options.format == "onnx":
        for module in ("onnx", "onnxscript", "onnxruntime"):
            require(module, "agripatch export --format onnx")
    else:
        from agripatch.export.tflite import require_litert

        require_litert()


def _load(model: Path):
    """The model file, or a one-line :class:`ExportError` for anything that is not an agripatch model."""
    from agripatch.pipeline.bundle import load_model_file

    try:
        return load_model_file(model)
    except AgripatchError as error:
        first = str(error).strip().splitlines()[0]
        raise ExportError(f"{str(model)!r} is not a usable agripatch model file: {first}") from None


def _graph_entry(path: Path, spec, **extra: Any) -> dict[str, Any]:
    entry = {"file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size, "input": spec.input,
             "outputs": list(spec.outputs), "batch": "dynamic"}
    entry.update(extra)
    return entry


def _write_graphs(options: ExportOptions, bundle, work: Path, log: Callable[[str], None]) -> tuple[dict, dict | None]:
    """Every graph file into ``work``; returns cascade.json's ``graphs`` and ``calibration`` entries."""
    from agripatch.export.graphs import check_onnx, export_onnx, graph_specs

    specs = graph_specs(bundle.pipeline)
    graphs: dict[str, dict[str, Any]] = {}
    if options.format == "tflite":
        from agripatch.export.tflite import convert_tflite

        graphs["tflite"] = {}
        for spec in specs:
            log(f"converting the {spec.name} graph to TFLite (litert-torch)")
            path = work / f"{spec.name}.tflite"
            details = convert_tflite(spec, path)
            entry = _graph_entry(path, spec, **details)
            graphs["tflite"][spec.name] = entry
        return graphs, None
    graphs["onnx"] = {}
    for spec in specs:
        log(f"exporting the {spec.name} graph to ONNX")
        path = work / f"{spec.name}.onnx"
        export_onnx(spec, path)
        graphs["onnx"][spec.name] = _graph_entry(path, spec, max_abs_diff_vs_torch=check_onnx(spec, path))
    if not options.int8:
        return graphs, None
    from agripatch.export.calibration import calibration_photos, calibration_set
    from agripatch.export.quantize import quantize_graph

    photos = calibration_photos(options.calibration, options.calibration_count, options.seed)
    log(f"calibrating int8 on {len(photos)} photos (the float cascade's own glances and patches)")
    data = calibration_set(bundle.pipeline, photos)
    graphs["onnx_int8"] = {}
    details = {}
    for spec in specs:
        if spec.name == "symptom_map":  # no int8 calibration set for it: the int8 set runs the float map
            graphs["onnx_int8"][spec.name] = graphs["onnx"][spec.name]
            continue
        log(f"quantizing the {spec.name} graph to int8")
        path = work / f"{spec.name}.int8.onnx"
        details[spec.name] = quantize_graph(work / f"{spec.name}.onnx", path, spec.input, data.inputs[spec.name])
        graphs["onnx_int8"][spec.name] = _graph_entry(path, spec)
    calibration = {"source": str(Path(options.calibration).expanduser().resolve()), "photos": data.photos,
                   "unreadable": data.unreadable, "requested": options.calibration_count, "seed": options.seed,
                   "graphs": details}
    return graphs, calibration


def _missing_parents(path: Path) -> list[Path]:
    """Ancestors of ``path`` that do not exist yet, deepest first (to remove them again after a failure)."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def export_model(options: ExportOptions, log: Callable[[str], None] | None = None) -> ExportResult:
    """Export ``options.model`` to ``options.out`` in ``options.format`` (see the module docstring).

    Raises :class:`ExportError` (or another AgripatchError, e.g. a missing package) with a one-line message;
    in that case nothing was written.
    """
    log = log or (lambda message: None)
    options.check()
    _require_packages(options)
    model = Path(options.model).expanduser().resolve()
    out = Path(options.out).expanduser().absolute()
    bundle = _load(model)
    if options.int8:
        from agripatch.export.calibration import calibration_photos

        calibration_photos(options.calibration, options.calibration_count, options.seed)  # fail before writing
    created = _missing_parents(out)
    work = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        try:
            work.mkdir(parents=True)
        except OSError as error:
            raise ExportError(f"cannot create a folder beside --out {str(options.out)!r}: {error}") from None
        from agripatch.export.graphs import OPSET
        from agripatch.export.manifest import build_manifest

        graphs, calibration = _write_graphs(options, bundle, work, log)
        manifest = build_manifest(bundle, model, file_sha256(model), graphs,
                                  opset=OPSET if options.format == "onnx" else None, calibration=calibration)
        (work / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists():
            raise ExportError(f"--out {str(options.out)!r} appeared while exporting; nothing was written")
        os.rename(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        for parent in created:  # deepest first
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise
    files = {p.name: p.stat().st_size for p in sorted(out.iterdir())}
    return ExportResult(out, files, manifest)


def export_beside(model: str | Path, log: Callable[[str], None] | None = None) -> Path:
    """The fp32 ONNX export of a model file, made once beside it (``MODEL.onnx-<sha256 prefix>/``) and reused while
    the file is unchanged: what `predict folder` and `evaluate` run with ``--backend onnxruntime`` when given a model
    file, so the faster backend needs no separate export step. Another model file, or a retrained one, gets its own
    folder. Under torchrun the ranks would race to write it, so there it must be exported first."""
    model = Path(model).expanduser().resolve()
    if not model.is_file():
        raise ExportError(f"model file {str(model)!r} does not exist; train one with `agripatch train`")
    folder = model.parent / f"{model.stem}.onnx-{file_sha256(model)[:16]}"
    if (folder / MANIFEST_NAME).is_file():
        return folder
    from agripatch.distributed import launched_world_size  # torch, only on this path

    if launched_world_size() > 1:
        raise ExportError(f"--backend onnxruntime under torchrun needs an export folder: run `agripatch export "
                          f"{model} --format onnx --out DIR` once, then pass DIR as the model")
    if not os.access(model.parent, os.W_OK):
        raise ExportError(f"cannot write the ONNX export beside {str(model)!r} (read-only folder): run `agripatch "
                          f"export {model} --format onnx --out DIR` and pass DIR as the model")
    (log or (lambda message: None))(f"exporting {model.name} to ONNX once, beside it: {folder.name}")
    return export_model(ExportOptions(model=model, format="onnx", out=folder), log).out
