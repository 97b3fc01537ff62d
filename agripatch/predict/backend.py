"""Which engine runs the cascade in `predict folder`: PyTorch on a model file, or ONNX Runtime on an export folder.

`run_predict_folder` asks this module three things, so that the backend choice stays out of its steps:
:func:`check_model` (is ``--model`` the right kind of thing), :func:`model_identity` (the sha256 a resumed run
must match: the model file's, or for an export folder its cascade.json's, which lists every graph's sha256) and
:func:`make_predictor` (a :class:`~agripatch.predict.predictor.Predictor` or an
:class:`~agripatch.runtime.predictor.OnnxPredictor`; both have the same interface).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from agripatch.errors import AgripatchError

__all__ = ["BACKENDS", "check_backend", "check_model", "make_predictor", "model_identity"]

BACKENDS = ("torch", "onnxruntime")


def check_backend(backend: str, int8: bool) -> None:
    """Refuse an unknown ``--backend`` and ``--int8`` without onnxruntime (one-line errors naming the flag)."""
    if backend not in BACKENDS:
        raise AgripatchError(f"--backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if int8 and backend != "onnxruntime":
        raise AgripatchError("--int8 runs the int8 graphs of an export folder: use it with --backend onnxruntime")
    if backend == "onnxruntime":
        from agripatch.runtime.errors import require

        require("onnxruntime", "--backend onnxruntime")  # says which pip install to run


def check_model(backend: str, model_path: Path, given: Any) -> None:
    """``--model`` must be a model file for torch and an export folder (with cascade.json) for onnxruntime."""
    if backend == "onnxruntime":
        from agripatch.runtime.manifest import MANIFEST_NAME

        if not (model_path / MANIFEST_NAME).is_file():
            raise AgripatchError(f"--backend onnxruntime: --model {str(given)!r} must be an export folder with "
                                 f"{MANIFEST_NAME}; make one with `agripatch export MODEL.pt --format onnx --out DIR`")
    elif not model_path.is_file():
        raise AgripatchError(f"model file {str(given)!r} does not exist; train one with `agripatch train`")


def model_identity(model_path: Path, int8: bool = False) -> str:
    """The sha256 that identifies the model a run used: a model file's own; an export folder's cascade.json's
    (its graphs' sha256 are inside), marked for the int8 graphs so fp32 and int8 runs never mix on resume."""
    from agripatch.io.sources import file_sha256
    from agripatch.runtime.manifest import manifest_sha256

    if not model_path.is_dir():
        return file_sha256(model_path)
    digest = manifest_sha256(model_path)
    return hashlib.sha256(f"{digest}:int8".encode()).hexdigest() if int8 else digest


def make_predictor(options: Any, model_path: Path, *, torch_device: str) -> Any:
    """The predictor ``options`` ask for (``backend``, ``device``, ``topk``, ``int8`` of PredictOptions): PyTorch on
    ``torch_device`` (the process's device, e.g. a torchrun rank's), or ONNX Runtime with the providers of
    ``options.device`` (auto: CUDA when this onnxruntime has it, else CPU; threads follow ``OMP_NUM_THREADS``)."""
    if options.backend == "onnxruntime":
        from agripatch.runtime.predictor import OnnxPredictor

        return OnnxPredictor(model_path, topk=options.topk, int8=options.int8, device=options.device,
                             severity=getattr(options, "severity", None))
    from agripatch.predict.predictor import Predictor

    return Predictor.from_file(model_path, device=torch_device, topk=options.topk,
                               severity=getattr(options, "severity", None), precision=getattr(options, "precision", "auto"))
