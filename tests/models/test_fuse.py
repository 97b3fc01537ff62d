"""Inference layout: BatchNorm folded into convolutions and activations fused into them; same function, same MACs,
no norm layers, geometry intact."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agripatch.models import create_anchornet, create_classifier
from agripatch.models.fuse import (
    ConvActivation,
    fold_batchnorm,
    fuse_activations,
    inference_model,
)
from agripatch.pipeline.macs import count_macs


def _randomise_norms(model: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(3)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.weight.data.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
            module.bias.data.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
    return model.eval()


@pytest.mark.parametrize("name", ["anchornet_mbv2_s8", "anchornet_lite0_s8", "anchornet_paper"])
def test_folded_anchornet_computes_the_same_cam(name):
    model = _randomise_norms(create_anchornet(name, num_classes=3))
    folded = fold_batchnorm(model, method="forward_cam")
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert folded.receptive_field == model.receptive_field
    x = torch.rand(2, 3, 128, 128)
    with torch.no_grad():
        for a, b in zip(model.forward_cam(x), folded.forward_cam(x)):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_folded_timm_classifier_keeps_its_activations():
    model, _ = create_classifier("mobilenetv2_100", 4, pretrained=False)
    model = _randomise_norms(model)
    folded = fold_batchnorm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(model(x), folded(x), rtol=1e-4, atol=1e-4)


class _NormFirst(nn.Module):
    """A norm registered after a conv but applied BEFORE it: folding would change the function."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.bn = nn.BatchNorm2d(3)

    def forward(self, x):
        return self.conv(self.bn(x))


def test_misread_structure_returns_the_unfolded_model():
    model = _randomise_norms(_NormFirst())
    out = fold_batchnorm(model)
    assert isinstance(out.bn, nn.BatchNorm2d)  # the probe caught the mismatch
    x = torch.rand(1, 3, 8, 8)
    torch.testing.assert_close(out(x), model(x))


def test_the_original_is_left_untouched():
    model = _randomise_norms(create_anchornet("anchornet_mbv2_s8", num_classes=3))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fold_batchnorm(model, method="forward_cam")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- activations fused into their convolutions (oneDNN) ----------------------------------------------------------

needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="PyTorch built without oneDNN")


@needs_onednn
@pytest.mark.parametrize("name, method", [("mobilenetv2_100", "forward"), ("anchornet_lite0_s8", "forward_cam"),
                                          ("anchornet_paper", "forward_cam")])
def test_fused_activations_compute_the_same_function(name, method):
    model = (create_classifier(name, 4, pretrained=False)[0] if name == "mobilenetv2_100"
             else create_anchornet(name, num_classes=4))
    folded = fold_batchnorm(_randomise_norms(model), method=method)
    fused = fuse_activations(folded, method=method)
    pairs = [m for m in fused.modules() if isinstance(m, ConvActivation)]
    assert pairs, "no convolution + activation pair was fused"
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        before = getattr(folded, method)(x)
        after = getattr(fused, method)(x)
    # The same function up to float32 rounding: bit-equal on an AVX-512 Xeon, while on an AVX2-only AMD EPYC oneDNN's
    # fused kernel sums in another order and MobileNetV2's logits (about 12 here) moved by 2.3e-5 of their size. A
    # missing or wrong activation moves them by whole units.
    for a, b in zip(before if isinstance(before, tuple) else (before,), after if isinstance(after, tuple) else (after,)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_onednn
def test_fused_convolutions_keep_their_macs():
    model, _ = create_classifier("mobilenetv2_100", 3, pretrained=False)
    folded = fold_batchnorm(model.eval())
    assert count_macs(inference_model(model.eval()), (1, 3, 96, 96)) == count_macs(folded, (1, 3, 96, 96)) > 0


@needs_onednn
def test_fused_pair_falls_back_where_gradients_flow():
    pair = ConvActivation(nn.Conv2d(3, 5, 3), nn.ReLU6())
    reference = nn.Sequential(pair.conv, pair.activation)
    x = (torch.randn(2, 3, 9, 9, dtype=torch.float64) * 4).requires_grad_()
    pair.double()
    assert torch.autograd.gradcheck(pair, (x,))  # float64 with a gradient: the two modules, differentiable
    xf = torch.randn(1, 3, 9, 9) * 4
    pair.float()
    with torch.no_grad():
        torch.testing.assert_close(pair(xf), reference(xf), rtol=1e-5, atol=1e-5)
        assert float(pair(xf).max()) <= 6.0 and float(pair(xf).min()) >= 0.0


@needs_onednn
def test_a_fused_pair_runs_in_bf16_when_its_weights_are_bf16():
    """``ModelBundle.place`` casts the networks to bf16 on AMX CPUs: the fused pair then computes in bf16 (oneDNN's
    kernel where the CPU has bf16 units, the two modules elsewhere), what the two modules compute in bf16."""
    torch.manual_seed(0)
    pair = ConvActivation(nn.Conv2d(8, 16, 3), nn.ReLU6()).bfloat16()
    reference = nn.Sequential(pair.conv, pair.activation)
    x = (torch.randn(2, 8, 12, 12) * 2).bfloat16()
    with torch.no_grad():
        out = pair(x)
        assert out.dtype == torch.bfloat16
        torch.testing.assert_close(out.float(), reference(x).float(), rtol=2e-2, atol=2e-2)
        assert float(out.max()) <= 6.0 and float(out.min()) >= 0.0
