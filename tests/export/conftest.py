"""Fixtures for export and the ONNX runtime: the tiny model files, a dozen synthetic photos, exports made once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "predict"))  # predict_helpers: the tiny model

from export_helpers import needs_onnx  # noqa: E402,F401 - fixtures below use it
from predict_helpers import make_model_file, write_synthetic  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The tiny model file (AnchorNet glance; every photo reads two patches and exits at stage 2)."""
    return make_model_file(tmp_path_factory.mktemp("export-model") / "model.pt")


@pytest.fixture(scope="session")
def photo_dir(tmp_path_factory) -> Path:
    """A dozen synthetic leaves (4 per class, 256 px) in ``<class>/`` folders."""
    root = tmp_path_factory.mktemp("export-photos") / "photos"
    write_synthetic(root, per_class=4)
    return root


@pytest.fixture(scope="session")
def photos(photo_dir) -> list[Path]:
    """The synthetic photos plus an odd-sized one (non-square, upscaled glance), sorted."""
    import numpy as np
    from PIL import Image

    odd = photo_dir / "odd"
    odd.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (100, 173, 3), dtype=np.uint8)).save(odd / "small.png")
    Image.fromarray(rng.integers(0, 256, (301, 437, 3), dtype=np.uint8)).save(odd / "wide.png")
    return sorted(p for p in photo_dir.rglob("*") if p.suffix in (".jpg", ".png"))


@pytest.fixture(scope="session")
def exported(tmp_path_factory, tiny_model, photo_dir) -> Path:
    """The tiny model exported to ONNX, fp32 and int8 (calibrated on the synthetic photos)."""
    needs_onnx()
    from agripatch.export.build import ExportOptions, export_model

    out = tmp_path_factory.mktemp("export") / "tiny"
    export_model(ExportOptions(model=tiny_model, format="onnx", out=out, int8=True, calibration=photo_dir,
                               calibration_count=12))
    return out
