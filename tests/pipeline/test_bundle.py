"""The model file: round trip, and clear errors for corrupt, foreign or mismatched files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agripatch.errors import CheckpointError
from agripatch.io.torchfile import load_object, save_object
from agripatch.models import create_anchornet, create_classifier
from agripatch.pipeline.bundle import ModelSpec, load_model_file, save_model_file

CLASSES = ["healthy", "rust", "spot"]
CASCADE = {"k": 2, "glance_size": 96, "patch_size": 32, "iou_threshold": 0.25, "glance": "anchornet",
           "score_mode": "predicted", "thresholds": [0.9, 0.9, 0.0]}


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    torch.manual_seed(0)
    anchornet = create_anchornet("anchornet_lite0_s8", num_classes=3, pretrained=False)
    classifier, cfg = create_classifier("test_efficientnet", 3, pretrained=False)
    path = tmp_path_factory.mktemp("bundle") / "model.pt"
    save_model_file(path, classes=CLASSES,
                    anchornet=ModelSpec.from_module("anchornet_lite0_s8", anchornet, (0.5,) * 3, (0.5,) * 3, 96),
                    classifier=ModelSpec.from_module("test_efficientnet", classifier, cfg["mean"], cfg["std"], 32),
                    cascade=CASCADE, recipe_yaml="name: test\n")
    return path, anchornet, classifier


def test_round_trip_rebuilds_the_same_cascade(model_file):
    path, anchornet, classifier = model_file
    exact = load_model_file(path, fold=False)
    for key, value in anchornet.state_dict().items():
        assert torch.equal(value, exact.pipeline.anchornet.state_dict()[key])
    bundle = load_model_file(path)  # BatchNorm folded for inference: no norm layer left, the same function
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bundle.pipeline.anchornet.modules())
    x = torch.rand(2, 3, 96, 96)
    for a, b in zip(exact.pipeline.anchornet.forward_cam(x), bundle.pipeline.anchornet.forward_cam(x)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert bundle.classes == CLASSES and bundle.baseline is None
    assert bundle.pipeline.config.thresholds == [0.9, 0.9, 0.0]
    photo = np.random.default_rng(0).integers(0, 255, (200, 150, 3), dtype=np.uint8)
    (result,) = bundle.pipeline.predict([photo])
    assert result.boxes.shape == (2, 4)
    assert (result.boxes[:, 2] <= 150).all() and (result.boxes[:, 3] <= 200).all()


def test_corrupt_file_names_the_file(model_file, tmp_path):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(model_file[0].read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="broken.pt"):
        load_model_file(bad)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_model_file(tmp_path / "missing.pt")


def test_foreign_file_is_refused(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="format"):
        load_model_file(other)


def test_weights_of_another_architecture_are_refused(model_file, tmp_path):
    obj = load_object(model_file[0])
    obj["anchornet"]["arch"] = "anchornet_mbv2_s8"
    swapped = tmp_path / "swapped.pt"
    save_object(obj, swapped)
    with pytest.raises(CheckpointError, match="does not fit this architecture"):
        load_model_file(swapped)


def test_a_pickled_object_is_never_executed(tmp_path):
    class Boom:
        def __reduce__(self):
            return (exec, ("raise SystemExit('executed')",))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "agripatch-model/1", "payload": Boom()}, evil)
    with pytest.raises(CheckpointError):
        load_model_file(evil)


def test_placed_in_bf16_every_network_runs_in_bf16_and_the_cascade_answers_as_in_float32(tmp_path):
    """``place(precision="bfloat16")`` (the default on CPUs with AMX units) casts AnchorNet, the patch classifier,
    the full-image exit's model and the symptom map; the cascade's probabilities stay float32, within bf16 rounding
    of float32's, its MACs the same."""
    torch.manual_seed(0)
    anchornet = create_anchornet("anchornet_lite0_s8", num_classes=3, pretrained=False)
    classifier, cfg = create_classifier("test_efficientnet", 3, pretrained=False)
    baseline, _ = create_classifier("test_efficientnet", 3, pretrained=False)
    path = tmp_path / "model.pt"
    save_model_file(path, classes=CLASSES,
                    anchornet=ModelSpec.from_module("anchornet_lite0_s8", anchornet, (0.5,) * 3, (0.5,) * 3, 96),
                    classifier=ModelSpec.from_module("test_efficientnet", classifier, cfg["mean"], cfg["std"], 32),
                    baseline=ModelSpec.from_module("test_efficientnet", baseline, cfg["mean"], cfg["std"], 48),
                    cascade={**CASCADE, "full_image_exit": True, "thresholds": [0.9, 0.9, 0.9, 0.0]},
                    recipe_yaml="name: test\n")
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, (int(h), int(w), 3), dtype=np.uint8) for h, w in [(200, 150), (96, 96), (300, 410)]]
    placed = {}
    for precision in ("float32", "bfloat16"):
        bundle = load_model_file(path)
        bundle.pipeline = bundle.pipeline.measuring_severity(True)
        assert bundle.place(torch.device("cpu"), precision) == getattr(torch, precision)
        assert bundle.precision == precision
        placed[precision] = bundle
    bf16 = placed["bfloat16"].pipeline
    for network in (bf16.anchornet, bf16.classifier, bf16.full_image, bf16.symptom_map, placed["bfloat16"].baseline):
        assert {p.dtype for p in network.parameters()} == {torch.bfloat16}
    exact, rounded = (placed[p].pipeline.exit_probabilities(photos) for p in ("float32", "bfloat16"))
    assert rounded.probs.dtype == exact.probs.dtype and rounded.probs.shape == exact.probs.shape == (3, 4, 3)
    np.testing.assert_allclose(rounded.probs, exact.probs, atol=0.03)
    assert not np.allclose(rounded.probs, exact.probs, atol=1e-6)  # bf16 did run
    shares = [[s.share for s in outputs.severities] for outputs in (exact, rounded)]
    np.testing.assert_allclose(shares[1], shares[0], atol=3.0)  # percent of the leaf
    assert np.array_equal(placed["bfloat16"].pipeline.exit_macs(), placed["float32"].pipeline.exit_macs())
    for a, b in zip(placed["float32"].pipeline.predict(photos), bf16.predict(photos)):
        assert a.boxes.shape == b.boxes.shape
