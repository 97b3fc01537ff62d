"""The cascade's networks as TFLite (LiteRT) files, through litert-torch, checked with the LiteRT interpreter.

litert-torch (Google's maintained PyTorch -> LiteRT converter, formerly ai-edge-torch) converts both graphs,
but only with a FIXED batch: with a dynamic batch dimension (``dynamic_shapes``) version 0.10 fails on both
(glance: ``AssertionError float32[-9223372036854775808,128,128,3]``; classifier: ``TypeError Shapes must be 1D
sequences of concrete values``), and a batch-1 file cannot be resized afterwards (XNNPack "failed to
reshape"). The files are therefore batch 1, the usual on-device shape; cascade.json records ``"batch": 1``.

It is not an agripatch extra: ``pip install litert-torch`` keeps torch 2.14.1 but downgrades pydantic
(2.14 -> 2.11) and typing_extensions (4.16 -> 4.12), because its dependency xdsl 0.28 pins
typing-extensions < 4.13. Install it in a separate environment to export TFLite.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from agripatch.export.errors import ExportError
from agripatch.export.graphs import GraphSpec
from agripatch.runtime.errors import require

__all__ = ["TFLITE_INSTALL", "convert_tflite", "require_litert"]

TFLITE_INSTALL = ("install it in a separate virtualenv, as it downgrades pydantic and typing_extensions: "
                  "pip install litert-torch ai-edge-litert, then pip install -e <agripatch checkout>")


def require_litert() -> None:
    """Fail early, with the install hint, when the converter or the interpreter is missing."""
    require("litert_torch", "agripatch export --format tflite (converter litert-torch)", TFLITE_INSTALL)
    require("ai_edge_litert.interpreter", "agripatch export --format tflite (interpreter ai-edge-litert)",
            TFLITE_INSTALL)


def convert_tflite(spec: GraphSpec, path: Path, tolerance: float = 1e-3) -> dict:
    """Convert ``spec`` at batch 1 to ``path`` and check it against PyTorch with the LiteRT interpreter; returns
    the cascade.json entry details (signature names, batch, max |diff|)."""
    litert_torch = require("litert_torch", "agripatch export --format tflite", TFLITE_INSTALL)
    interpreter_mod = require("ai_edge_litert.interpreter", "agripatch export --format tflite", TFLITE_INSTALL)
    example = spec.example[:1].contiguous()
    chatter = io.StringIO()
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(chatter), \
                contextlib.redirect_stderr(chatter):
            warnings.simplefilter("ignore")
            edge = litert_torch.convert(spec.module.eval(), (example,))
            edge.export(str(path))
    except Exception as error:  # noqa: BLE001 - the converter raises many types; report one line
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise ExportError(f"litert-torch could not convert the {spec.name} graph: "
                          f"{type(error).__name__}: {first}") from None
    interpreter = interpreter_mod.Interpreter(model_path=str(path), num_threads=1)
    signature = interpreter.get_signature_list()
    key = next(iter(signature))
    runner = interpreter.get_signature_runner(key)
    input_name = signature[key]["inputs"][0]
    output_names = sorted(signature[key]["outputs"])
    x = torch.rand(example.shape, generator=torch.Generator().manual_seed(1))
    got = runner(**{input_name: x.numpy()})
    with torch.no_grad():
        ref = spec.module(x)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    worst = 0.0
    for name, out_name, b in zip(spec.outputs, output_names, ref):
        a, b = np.asarray(got[out_name]), b.float().numpy()
        if a.shape != b.shape:
            raise ExportError(f"the TFLite {spec.name} graph gives {name} of shape {a.shape}, PyTorch {b.shape}")
        diff = float(np.abs(a - b).max())
        if diff > tolerance * max(1.0, float(np.abs(b).max())):
            raise ExportError(f"the TFLite {spec.name} graph disagrees with PyTorch ({name}: max |diff| {diff:.3g})")
        worst = max(worst, diff)
    return {"input": input_name, "signature": key, "signature_outputs": output_names, "batch": 1,
            "max_abs_diff_vs_torch": worst}
