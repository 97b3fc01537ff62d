"""CUDA: mixed-precision training steps, channels_last, torch.compile, model files and `predict folder` on a GPU.

Every test is marked ``cuda`` and skipped, with the reason, where ``torch.cuda.is_available()`` is False;
``benchmarks/gpu_check.sh`` runs them (``pytest -m cuda tests/gpu``) when a GPU machine is lent.

Tolerances (fp32 with TF32 switched off for every comparison, see the ``exact_fp32`` fixture):
* compiled vs eager, channels_last vs contiguous: ``rtol = atol = 1e-3`` on logits and maps;
* `predict folder` and ``agripatch.load`` on CUDA vs CPU: the same top-1 label, exit stage and boxes
  (within 0.05 px), every probability within ``1e-3``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "predict"))  # the tiny model file of the predict tests

from predict_helpers import (  # noqa: E402
    CLASSES,
    GLANCE,
    PATCH,
    make_model_file,
    predict_folder,
    write_synthetic,
)

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False"),
]

RTOL = ATOL = 1e-3
PROB_TOL = 1e-3
BOX_TOL = 0.05


@pytest.fixture
def exact_fp32():
    """fp32 comparisons without TF32 (which rounds matmul/conv inputs to 10 mantissa bits)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.set_float32_matmul_precision(saved[2])


# -------------------------------------------------------------------------------- training steps


class Blobs(torch.utils.data.Dataset):
    """Two classes of 16-px noise images that differ in mean: learnable in a few steps."""

    def __init__(self, n: int):
        g = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % 2
        self.images = torch.randn(n, 3, 16, 16, generator=g) + self.labels.view(-1, 1, 1, 1).float()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": int(self.labels[i])}


class AutocastSpy:
    """A stage forward that records, for every training call, the autocast state and the logits' dtype."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[tuple[bool, torch.dtype, torch.dtype]] = []

    def __call__(self, model, batch, mixup=None):
        logits, targets = self.inner(model, batch, mixup=mixup)
        if model.training:
            self.calls.append((torch.is_autocast_enabled("cuda"), torch.get_autocast_dtype("cuda"), logits.dtype))
        return logits, targets


def _train_tiny_stage(tmp_path: Path, *, clip_grad: float | None = None):
    """Two epochs of the project's StageRunner on a tiny conv net on cuda:0, AMP and channels_last on."""
    from agripatch.distributed import DistContext
    from agripatch.engine.forwards import ImageForward
    from agripatch.engine.loop import Stage, StageRunner
    from agripatch.recipes import RuntimeConfig, StageConfig

    device = torch.device("cuda", 0)
    ctx = DistContext(rank=0, world_size=1, local_rank=0, device=device)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2))
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    data = Blobs(32)
    spy = AutocastSpy(ImageForward(device, True))
    stage = Stage("anchornet", 0, model, data, Blobs(8), spy, data.labels.tolist(), 2)
    config = StageConfig(epochs=2, batch_size=4, optimizer={"opt": "sgd", "lr": 0.05}, scheduler={"sched": "none"},
                         clip_grad=clip_grad)
    runner = StageRunner(stage, config, RuntimeConfig(amp=True, channels_last=True, compile=False), ctx=ctx, seed=0,
                         workers=0, class_balance="none", checkpoint_dir=tmp_path / "checkpoints", log=lambda *a: None)
    result = runner.run()
    return model, initial, spy, result


def _assert_trained(model: nn.Module, initial: dict, result: dict) -> None:
    state = model.state_dict()
    assert all(torch.isfinite(v.float()).all() for v in state.values())
    assert any(not torch.equal(initial[k].cpu(), v.cpu()) for k, v in state.items())
    losses = [row["train_loss"] for row in result["history"]]
    assert all(loss == loss and loss < 10 for loss in losses), losses


def test_stage_runner_bf16_autocast_and_channels_last(tmp_path):
    if not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    model, initial, spy, result = _train_tiny_stage(tmp_path)
    _assert_trained(model, initial, result)
    assert len(spy.calls) == 2 * 8  # 32 images / batch 4 = 8 training steps per epoch
    assert all(enabled and dtype == torch.bfloat16 for enabled, dtype, _ in spy.calls), set(spy.calls)
    assert all(logits == torch.bfloat16 for _, _, logits in spy.calls)  # the Linear ran in bf16
    conv = model[0].weight
    assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)


def test_stage_runner_fp16_autocast_uses_a_grad_scaler(tmp_path, monkeypatch):
    """A GPU without bf16 trains in fp16, which needs loss scaling: the loop must create an enabled
    ``torch.amp.GradScaler`` and scale / unscale (for clip_grad) / step through it."""
    made: list = []

    class SpyScaler(torch.amp.GradScaler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.calls = {"scale": 0, "unscale_": 0, "step": 0, "update": 0}
            made.append(self)

        def scale(self, outputs):
            self.calls["scale"] += 1
            return super().scale(outputs)

        def unscale_(self, optimizer):
            self.calls["unscale_"] += 1
            return super().unscale_(optimizer)

        def step(self, optimizer, *args, **kwargs):
            self.calls["step"] += 1
            return super().step(optimizer, *args, **kwargs)

        def update(self, new_scale=None):
            self.calls["update"] += 1
            return super().update(new_scale)

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # as on a pre-Ampere GPU
    monkeypatch.setattr(torch.amp, "GradScaler", SpyScaler)
    model, initial, spy, result = _train_tiny_stage(tmp_path, clip_grad=1.0)
    assert len(spy.calls) == 2 * 8
    assert all(enabled and dtype == torch.float16 for enabled, dtype, _ in spy.calls), set(spy.calls)
    enabled = [s for s in made if s.is_enabled()]
    assert enabled, "engine/loop.py trains in fp16 autocast without an enabled torch.amp.GradScaler"
    calls = enabled[0].calls
    assert calls["scale"] == calls["step"] == calls["update"] == 16 and calls["unscale_"] == 16, calls
    assert enabled[0].get_scale() > 0
    _assert_trained(model, initial, result)


def test_fp16_grad_scaler_step_on_anchornet(exact_fp32):
    """One fp16-autocast training step of an AnchorNet with a GradScaler: finite, scaled, weights move."""
    from agripatch.models import create_anchornet

    torch.manual_seed(0)
    model = create_anchornet("anchornet_mbv2_s8", num_classes=3).cuda().train()
    model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cuda")
    images = torch.rand(4, 3, 160, 160, device="cuda").contiguous(memory_format=torch.channels_last)
    labels = torch.tensor([0, 1, 2, 0], device="cuda")
    before = model.classifier.weight.detach().clone()
    with torch.autocast("cuda", dtype=torch.float16):
        logits = model(images)
        loss = nn.functional.cross_entropy(logits.float(), labels)
    assert logits.dtype == torch.float16
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    scaler.step(optimizer)
    scaler.update()
    assert torch.isfinite(loss) and scaler.get_scale() > 0
    assert not torch.equal(before, model.classifier.weight)
    assert all(torch.isfinite(p).all() for p in model.parameters())


# ----------------------------------------------------------------------- channels_last and compile


def _anchornet():
    from agripatch.models import create_anchornet

    torch.manual_seed(0)
    return create_anchornet("anchornet_mbv2_s8", num_classes=3).cuda().eval()


def _timm_classifier():
    from agripatch.models import create_classifier

    torch.manual_seed(0)
    model, _ = create_classifier("mobilenetv2_100", 3, pretrained=False)
    return model.cuda().eval()


def test_channels_last_matches_contiguous(exact_fp32):
    model = _anchornet()
    x = torch.rand(2, 3, 160, 160, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    with torch.no_grad():
        logits, cam = model.forward_cam(x)
        model = model.to(memory_format=torch.channels_last)
        logits_cl, cam_cl = model.forward_cam(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(logits_cl, logits, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(cam_cl, cam, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("build,size", [(_anchornet, 160), (_timm_classifier, 128)],
                         ids=["anchornet_mbv2_s8", "mobilenetv2_100"])
def test_torch_compile_matches_eager(build, size, exact_fp32):
    torch._dynamo.reset()
    model = build()
    x = torch.rand(4, 3, size, size, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    compiled = torch.compile(model)
    with torch.no_grad():
        eager = model(x)
        first = compiled(x)
        second = compiled(x)  # the cached graph
    torch.testing.assert_close(first, eager, rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(second, first, rtol=0, atol=0)


# ----------------------------------------------------------------------------- model file, predict


def _assert_records_match(cuda_records: list[dict], cpu_records: list[dict]) -> None:
    assert [r["path"] for r in cuda_records] == [r["path"] for r in cpu_records]
    for gpu, cpu in zip(cuda_records, cpu_records):
        assert gpu["label"] == cpu["label"] and gpu["stage"] == cpu["stage"], gpu["path"]
        assert abs(gpu["confidence"] - cpu["confidence"]) <= PROB_TOL, gpu["path"]
        probs = {t["class"]: t["prob"] for t in cpu["topk"]}
        assert [t["class"] for t in gpu["topk"]][:1] == [t["class"] for t in cpu["topk"]][:1]
        for entry in gpu["topk"]:
            if entry["class"] in probs:
                assert abs(entry["prob"] - probs[entry["class"]]) <= PROB_TOL, gpu["path"]
        assert len(gpu["boxes"]) == len(cpu["boxes"])
        for a, b in zip(gpu["boxes"], cpu["boxes"]):
            assert max(abs(u - v) for u, v in zip(a["box"], b["box"])) <= BOX_TOL, gpu["path"]
            assert a["read"] == b["read"] and a["label"] == b["label"]


def _spread_model_file(path: Path, spread: float = 100.0) -> Path:
    """The tiny model of ``make_model_file`` without its bias and with both classifier heads scaled by
    ``spread``: labels then differ between photos, with top-1 margins of 0.05..0.45 and cell scores
    0.005 or more apart on the synthetic leaves (every photo reads all 3 patches)."""
    from agripatch.models import create_anchornet, create_classifier
    from agripatch.pipeline.bundle import ModelSpec, save_model_file

    torch.manual_seed(0)
    anchornet = create_anchornet("anchornet_lite0_s8", num_classes=len(CLASSES), pretrained=False,
                                 class_names=CLASSES, input_size=GLANCE)
    classifier, cfg = create_classifier("test_efficientnet", len(CLASSES), pretrained=False)
    with torch.no_grad():
        anchornet.classifier.weight.mul_(spread)
        head = classifier.get_classifier()
        head.weight.mul_(spread)
        head.bias.zero_()
    return save_model_file(
        path, classes=CLASSES,
        anchornet=ModelSpec.from_module("anchornet_lite0_s8", anchornet, anchornet.cfg["mean"], anchornet.cfg["std"],
                                        GLANCE),
        classifier=ModelSpec.from_module("test_efficientnet", classifier, cfg["mean"], cfg["std"], PATCH),
        cascade={"k": 3, "glance_size": GLANCE, "patch_size": PATCH, "iou_threshold": 0.25, "glance": "anchornet",
                 "score_mode": "predicted", "thresholds": [0.9, 0.9, 0.9, 0.0]},
    )


MODELS = {"biased": lambda path: make_model_file(path), "spread": _spread_model_file}


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cuda") / "photos"
    write_synthetic(folder, per_class=4)  # 12 synthetic leaves, 256 px
    return folder


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_load_model_file_onto_cuda(kind, photos, tmp_path, exact_fp32):
    import agripatch

    path = MODELS[kind](tmp_path / "model.pt")
    gpu = agripatch.load(path, device="cuda")
    cpu = agripatch.load(path, device="cpu")
    assert all(p.is_cuda for p in gpu._predictor.pipeline.anchornet.parameters())
    files = sorted(str(p) for p in photos.rglob("*.jpg"))
    _assert_records_match(gpu.predict(files, batch_size=4), cpu.predict(files, batch_size=4))


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_predict_folder_on_cuda_matches_cpu(kind, photos, tmp_path, exact_fp32):
    """The biased model exits after 2 patches with label 1 everywhere; the spread one reads all 3 patches
    and its label depends on the photo: labels, exit stages, boxes and probabilities are all compared."""
    model = MODELS[kind](tmp_path / "model.pt")
    runs = {}
    for device in ("cpu", "cuda"):
        out = tmp_path / device
        summary = predict_folder(photos, model, out, recursive=True, batch_size=4, workers=0, device=device,
                                 quiet=True)
        assert summary.photos == 12 and summary.errors == 0
        assert json.loads((out / "summary.json").read_text())["device"].startswith(device)
        runs[device] = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    if kind == "spread":
        assert len({r["label"] for r in runs["cpu"]}) > 1  # the labels say something about the photos
    _assert_records_match(runs["cuda"], runs["cpu"])
