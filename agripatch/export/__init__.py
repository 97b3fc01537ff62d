"""agripatch.export: take a trained model off PyTorch.

`agripatch export RUN/model.pt --format onnx|tflite --out DIR [--int8 --calibration PHOTOS_DIR]` writes the
glance graph, the patch classifier graph (both with a dynamic batch for ONNX) and ``cascade.json``, everything
:mod:`agripatch.runtime` needs to run the whole cascade without torch.

* :mod:`.build`: the command (checks, temporary folder, rename into place);
* :mod:`.graphs`: torch.onnx.export and the check against PyTorch;
* :mod:`.calibration` / :mod:`.quantize`: int8 static quantization on the cascade's own glances and patches;
* :mod:`.tflite`: LiteRT files through litert-torch (when installed);
* :mod:`.manifest`: the cascade.json document.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ExportOptions", "export_model"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from agripatch.export import build

        return getattr(build, name)
    raise AttributeError(name)
