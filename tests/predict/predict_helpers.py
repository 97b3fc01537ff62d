"""Helpers for the `predict folder` tests: a tiny REAL model file, test photos, a headless browser.

The model is an untrained AnchorNet (anchornet_lite0_s8 at a 128-px glance) and timm's tiny
``test_efficientnet`` reading 64-px patches. The classifier's bias favours class 1, whose name holds
``/`` and ``..`` (it would escape OUT if written unsanitised into a file name), so every photo reads two
patches and exits at stage 2: with glance logits ~0 and patch logits ~(0, 5, 0), the mean-logit
probability is 0.86 after one patch (< 0.9) and 0.93 after two.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

CLASSES = ["healthy", "rust/../../../../evil", "leaf <b>spot</b> & \"blight\""]
GLANCE, PATCH = 128, 64
FIELD_PHOTOS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "field_photos"

# Files of the mixed folder that must be listed in errors.csv, and the tricky but readable ones.
BAD = ["bad/truncated.jpg", "bad/empty.jpg", "bad/text_renamed.jpg", "bad/line\nbreak.jpg"]
ODD_NAMES = ["names/leaf photo 1.jpg", "names/it's \"quoted\".jpg", "names/<img src=x onerror=alert(1)>.jpg",
             "names/feuille_été_叶.jpg"]


def make_model_file(path: Path, *, bias: float = 5.0, glance: str = "anchornet", metrics: dict | None = None,
                    refusal=None, classes: list[str] | None = None, full_image: bool = False,
                    severity_side: int | None = None, baseline_size: int = 40) -> Path:
    """Build and save a small real model file (untrained weights, biased classifier head); without ``refusal``
    it is like a file from before refusal existed. ``classes`` default to :data:`CLASSES` (names that test escaping).
    ``full_image`` adds a baseline (another tiny network read at ``baseline_size`` px) and the full-image exit after
    the patches;
    ``severity_side`` the shipped symptom map, reading photos at that long side."""
    classes = list(CLASSES if classes is None else classes)
    from agripatch.models import create_anchornet, create_classifier
    from agripatch.pipeline.bundle import ModelSpec, save_model_file

    torch.manual_seed(0)
    anchornet = create_anchornet("anchornet_lite0_s8", num_classes=len(classes), pretrained=False,
                                 class_names=classes, input_size=GLANCE)
    classifier, cfg = create_classifier("test_efficientnet", len(classes), pretrained=False)
    with torch.no_grad():
        head = classifier.get_classifier()
        head.bias.zero_()
        head.bias[1] = bias
    baseline = None
    if full_image:
        whole, whole_cfg = create_classifier("test_efficientnet", len(classes), pretrained=False)
        baseline = ModelSpec.from_module("test_efficientnet", whole, whole_cfg["mean"], whole_cfg["std"], baseline_size)
    cascade = {"k": 3, "glance_size": GLANCE, "patch_size": PATCH, "iou_threshold": 0.25, "glance": glance,
               "score_mode": "predicted", "full_image_exit": full_image,
               "thresholds": [0.9, 0.9, 0.9, 0.9, 0.0] if full_image else [0.9, 0.9, 0.9, 0.0]}
    if severity_side is not None:
        from agripatch.pipeline.bundle import shipped_symptom_map_spec
        from agripatch.pipeline.cascade import SymptomReader
        from agripatch.pipeline.config import CascadeConfig
        from agripatch.pipeline.severity import SeverityConfig

        reader = SymptomReader.shipped("symptom_map_lite0_s8")
        cascade["severity"] = reader.severity_config(SeverityConfig(side=severity_side)).model_dump()
        symptom_map = shipped_symptom_map_spec(CascadeConfig(**cascade))
    return save_model_file(
        path, classes=classes,
        anchornet=ModelSpec.from_module("anchornet_lite0_s8", anchornet, anchornet.cfg["mean"], anchornet.cfg["std"], GLANCE),
        classifier=ModelSpec.from_module("test_efficientnet", classifier, cfg["mean"], cfg["std"], PATCH),
        baseline=baseline,
        cascade=cascade,
        metrics=metrics,
        refusal=refusal,
        symptom_map=symptom_map if severity_side is not None else None,
    )


def predict_folder(input, model, out, **options):
    """`predict folder` with keyword options, as the CLI would call it."""
    from agripatch.predict.folder import PredictOptions, run_predict_folder

    return run_predict_folder(PredictOptions(input=input, model=model, out=out, **options))


def upright_pattern(height: int, width: int) -> np.ndarray:
    """Smooth, asymmetric RGB: red ramps left->right, green top->bottom, blue is a diagonal ramp.

    Any sub-window's mean colour tells where it was cut from and which way up it is.
    """
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    red = 20 + 215 * x / (width - 1)
    green = 20 + 215 * y / (height - 1)
    blue = 128 + 100 * np.sin((x + 2 * y) / 40.0)
    return np.clip(np.stack([red, green, blue], axis=2) + 0.5, 0, 255).astype(np.uint8)

def jpeg_bytes(array: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(array, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()

def write_synthetic(folder: Path, per_class: int = 2) -> list[str]:
    """Synthetic leaves (256 px) in ``folder/<class>/``; returns their paths relative to ``folder``."""
    from agripatch.data.synth import generate_synthetic

    generate_synthetic(folder, classes=3, per_class=per_class, size=256)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))

def tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` -> (size, mtime_ns), to prove a run wrote nothing outside OUT."""
    return {p.relative_to(folder).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def chromium_dom(page: Path, profile: Path, fragment: str = "") -> tuple[str, list[str]]:
    """Load ``page`` (file://) in headless Chromium; return the DOM after scripts ran and the console lines.

    Skips the test when no Chromium is installed. Console messages (``console.*`` calls and uncaught
    exceptions) appear on stderr as ``...:CONSOLE:...`` lines with ``--enable-logging=stderr``.
    """
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (apt-get install chromium) to check the page in a browser")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", "--dump-dom", page.resolve().as_uri() + fragment]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line or "Uncaught" in line]
    return done.stdout, console
