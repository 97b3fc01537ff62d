from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from agripatch.pipeline.cascade import (
    PatchPipeline,
    PatchPrediction,
    make_glance,
    to_chw,
)
from agripatch.pipeline.config import CascadeConfig
from agripatch.pipeline.exits import (
    NEVER_EXIT,
    ExitOutputs,
    accuracy_preserving_thresholds,
    answer_probabilities,
    simulate_exits,
    sweep_thresholds,
    thresholds_for_budget,
)
from agripatch.pipeline.macs import count_macs

K, GLANCE, PATCH = 3, 32, 16
CLS_MEAN = (0.485, 0.456, 0.406)
CLS_STD = (0.229, 0.224, 0.225)


def make_pipeline(anchornet, classifier, full_image=None, **overrides) -> PatchPipeline:
    config = CascadeConfig(**{"k": K, "glance_size": GLANCE, "patch_size": PATCH, **overrides})
    return PatchPipeline(anchornet, classifier, config, classifier_mean=CLS_MEAN, classifier_std=CLS_STD,
                         full_image=full_image)


def costs(anchornet, classifier, glance: str, patch: int = PATCH) -> tuple[int, int]:
    """(cost of stage 0, cost of each further patch) from first principles."""
    anchor = count_macs(anchornet, (1, 3, GLANCE, GLANCE), method="forward_cam")
    per_patch = count_macs(classifier, (1, 3, patch, patch))
    if glance == "anchornet":
        return anchor, per_patch
    return count_macs(classifier, (1, 3, GLANCE, GLANCE)), per_patch


# ------------------------------------------------------------------ configuration


class TestConfig:
    def test_defaults(self):
        cfg = CascadeConfig()
        # Uncalibrated: no thresholds stored, predictions exit at 0.9.
        assert cfg.k == 3 and cfg.thresholds is None and cfg.aggregate == "mean_logits"
        assert cfg.exit_thresholds() == [0.9] * 4 and cfg.glance_size == 160 and cfg.patch_size == 128

    @pytest.mark.parametrize(
        "kwargs",
        [
            {"k": 0},
            {"thresholds": [0.5, 0.5]},
            {"glance": "patch"},
            {"aggregate": "vote"},
            {"iou_threshold": 2.0},
            {"thresholds": [0.5, float("nan"), 0.5, 0.5]},
        ],
    )
    def test_invalid(self, kwargs):
        with pytest.raises(ValueError):
            CascadeConfig(**kwargs)

    def test_normalisation_required(self, anchornet, classifier):
        with pytest.raises(ValueError, match="classifier_mean"):
            PatchPipeline(anchornet, classifier, CascadeConfig())

    def test_normalisation_from_cfg(self, anchornet, classifier):
        classifier.pretrained_cfg = {"mean": CLS_MEAN, "std": CLS_STD}  # what timm models carry
        pipe = PatchPipeline(anchornet, classifier)
        assert pipe.anchornet_mean == anchornet.cfg["mean"] and pipe.classifier_std == CLS_STD


def test_to_chw_and_glance():
    hwc = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    chw = to_chw(hwc)
    assert chw.shape == (3, 2, 3) and chw.dtype == torch.uint8 and int(chw[1, 0, 2]) == int(hwc[0, 2, 1])
    with pytest.raises(ValueError):
        to_chw(np.zeros((4, 4), np.uint8))
    with pytest.raises(ValueError):
        to_chw(torch.zeros(4, 4, 3))
    # Same size: the glance is the photo; 2x: a 2 x 2 box average (the area filter, see tests/io/test_glance.py).
    photo = torch.rand(3, 8, 8)
    torch.testing.assert_close(make_glance([photo], 8)[0], photo)
    big = photo.repeat_interleave(2, 1).repeat_interleave(2, 2)
    torch.testing.assert_close(make_glance([big, photo], 8), torch.stack([photo, photo]))
    torch.testing.assert_close(make_glance([big.double()], 8)[0], photo)  # any float dtype
    assert make_glance([(photo * 255).round().to(torch.uint8)], 8).dtype == torch.float32


# ------------------------------------------------------------------ predict


@pytest.mark.parametrize("glance", ["anchornet", "classifier"])
def test_all_exit_at_glance(anchornet, classifier, photos, glance):
    pipe = make_pipeline(anchornet, classifier, glance=glance, thresholds=[0.0] * (K + 1))
    preds = pipe.predict(photos)
    first, _ = costs(anchornet, classifier, glance)
    assert len(preds) == len(photos) and all(isinstance(p, PatchPrediction) for p in preds)
    for p in preds:
        assert p.stage == 0 and p.macs == first
        assert p.patch_logits.shape == (0, 4)
        assert p.probs.shape == (4,) and p.label == int(p.probs.argmax())
        if glance == "anchornet":  # the CAM came for free: boxes for overlays anyway
            assert p.boxes.shape == (K, 4) and p.cam.shape == (7, 7)
        else:  # AnchorNet never ran
            assert p.boxes.shape == (0, 4) and p.cam is None


@pytest.mark.parametrize("glance", ["anchornet", "classifier"])
@pytest.mark.parametrize("threshold", [1.01, NEVER_EXIT])
def test_never_exit_reads_every_patch(anchornet, classifier, photos, glance, threshold):
    pipe = make_pipeline(anchornet, classifier, glance=glance, thresholds=[threshold] * (K + 1))
    preds = pipe.predict(photos)
    first, per_patch = costs(anchornet, classifier, glance)
    anchor_extra = 0 if glance == "anchornet" else count_macs(anchornet, (1, 3, GLANCE, GLANCE), method="forward_cam")
    for p in preds:
        assert p.stage == K
        assert p.macs == first + anchor_extra + K * per_patch
        assert p.patch_logits.shape == (K, 4) and p.boxes.shape == (K, 4) and p.box_scores.shape == (K,)


@pytest.mark.parametrize("glance", ["anchornet", "classifier"])
def test_stage_macs_monotone(anchornet, classifier, photos, glance):
    pipe = make_pipeline(anchornet, classifier, glance=glance)
    exit_macs = pipe.exit_macs()
    assert exit_macs.shape == (K + 1,) and (np.diff(exit_macs) > 0).all()
    rng = np.random.default_rng(1)
    preds = pipe.predict(photos, thresholds=list(rng.uniform(0.25, 0.4, K + 1)))
    for p in preds:
        assert p.macs == exit_macs[p.stage]
        assert p.patch_logits.shape == (p.stage, 4)
    by_stage = sorted(preds, key=lambda p: p.stage)
    assert all(a.macs <= b.macs for a, b in zip(by_stage, by_stage[1:]))


def test_aggregation_is_mean_of_logits(anchornet, classifier, photos):
    """Final probabilities = softmax(mean(glance logits, patch logits)), recomputed by hand."""
    pipe = make_pipeline(anchornet, classifier, thresholds=[NEVER_EXIT] * (K + 1))
    preds = pipe.predict(photos)
    glance = make_glance([to_chw(p) for p in photos], GLANCE)
    mean = torch.tensor(anchornet.cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(anchornet.cfg["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        glance_logits = anchornet((glance - mean) / std)
    for i, p in enumerate(preds):
        stacked = torch.cat([glance_logits[i : i + 1], torch.from_numpy(p.patch_logits)])
        torch.testing.assert_close(torch.from_numpy(p.probs), torch.softmax(stacked.mean(0), 0))


def test_boxes_in_original_pixels(anchornet, classifier, photos):
    pipe = make_pipeline(anchornet, classifier, thresholds=[NEVER_EXIT] * (K + 1))
    preds = pipe.predict(photos)
    cell_boxes = anchornet.cell_boxes(GLANCE, GLANCE)
    for photo, p in zip(photos, preds):
        h, w = to_chw(photo).shape[1:]
        glance_boxes = cell_boxes[torch.from_numpy(p.cells)]
        expected = glance_boxes * torch.tensor([w / GLANCE, h / GLANCE, w / GLANCE, h / GLANCE])
        torch.testing.assert_close(torch.from_numpy(p.boxes), expected, rtol=0, atol=1e-5)
        assert (p.boxes[:, :2] >= 0).all() and (p.boxes[:, 2] <= w).all() and (p.boxes[:, 3] <= h).all()
        assert (np.diff(p.box_scores[:2]) <= 0).all()
    # The 128 x 128 photo is 4x the glance: its 7 px cells became exact 28 px boxes.
    big = preds[1]
    assert (big.boxes % 4 == 0).all() and ((big.boxes[:, 2:] - big.boxes[:, :2]) == 28).all()


def test_patches_cut_from_full_resolution(anchornet, classifier, photos):
    """Patch logits equal the classifier on the photo's own pixels inside the box (no glance)."""
    pipe = make_pipeline(anchornet, classifier, patch_size=28, thresholds=[NEVER_EXIT] * (K + 1))
    p = pipe.predict([photos[1]])[0]  # 128 x 128: boxes are 28 x 28 at integer positions
    image = torch.from_numpy(photos[1]).permute(2, 0, 1).float() / 255
    mean, std = torch.tensor(CLS_MEAN).view(3, 1, 1), torch.tensor(CLS_STD).view(3, 1, 1)
    for box, logits in zip(p.boxes.astype(int), p.patch_logits):
        x0, y0, x1, y1 = box.tolist()
        with torch.no_grad():
            expected = classifier(((image[:, y0:y1, x0:x1] - mean) / std)[None])[0]
        torch.testing.assert_close(torch.from_numpy(logits), expected, rtol=1e-5, atol=1e-5)


def test_glance_batch_equals_internal_resize(anchornet, classifier, photos):
    pipe = make_pipeline(anchornet, classifier, thresholds=[0.3] * (K + 1))
    glance = make_glance([to_chw(p) for p in photos], GLANCE)
    for a, b in zip(pipe.predict(photos), pipe.predict(photos, glance_batch=glance)):
        assert (a.label, a.stage, a.macs) == (b.label, b.stage, b.macs)
        np.testing.assert_array_equal(a.boxes, b.boxes)
    with pytest.raises(ValueError):
        pipe.predict(photos, glance_batch=glance[:2])


def test_predict_keeps_training_flags(anchornet, classifier, photos):
    pipe = make_pipeline(anchornet, classifier)
    classifier.train()
    pipe.predict(photos[:2])
    assert classifier.training and not anchornet.training
    assert pipe.predict([]) == []


# ------------------------------------------------------------------ offline replay


def _replays_predict(pipe, photos, outputs, *, seed: int, rounds: int) -> set[int]:
    """Thresholds drawn inside the observed confidence range (so the exits really vary): the offline replay of
    ``outputs`` decides what ``predict`` decides, label, exit, MACs and probabilities. Returns the exits seen."""
    conf = outputs.probs.max(-1)
    rng = np.random.default_rng(seed)
    seen = set()
    for _ in range(rounds):
        thresholds = list(rng.uniform(conf.min(), conf.max(), outputs.probs.shape[1]))
        pred, exit_taken, macs = simulate_exits(outputs.probs, outputs.exit_macs, thresholds)
        preds = pipe.predict(photos, thresholds=thresholds)
        assert [p.label for p in preds] == pred.tolist() and [p.stage for p in preds] == exit_taken.tolist()
        assert [p.macs for p in preds] == macs.tolist()
        np.testing.assert_allclose(answer_probabilities(outputs.probs, exit_taken), np.stack([p.probs for p in preds]),
                                   rtol=1e-6, atol=1e-7)
        seen |= set(exit_taken.tolist())
    return seen


@pytest.mark.parametrize("glance", ["anchornet", "classifier"])
@pytest.mark.parametrize("aggregate", ["mean_logits", "mean_probs"])
def test_simulate_exits_reproduces_predict(anchornet, classifier, photos, glance, aggregate):
    pipe = make_pipeline(anchornet, classifier, glance=glance, aggregate=aggregate)
    outputs = pipe.exit_probabilities(photos)
    assert outputs.probs.shape == (len(photos), K + 1, 4) and outputs.probs.dtype == np.float32
    np.testing.assert_array_equal(outputs.exit_macs, pipe.exit_macs())
    np.testing.assert_allclose(outputs.probs.sum(-1), 1.0, rtol=1e-5)
    seen_stages = _replays_predict(pipe, photos, outputs, seed=7, rounds=4)
    assert len(seen_stages) >= 2


@pytest.mark.parametrize("glance", ["anchornet", "classifier"])
def test_predictions_equal_the_roi_align_cascade(anchornet, classifier, photos, glance):
    """The speed work (patches cut lazily per exit, by two matrix products) changes no prediction: the same cascade
    with torchvision's roi_align cutting all K patches up front gives the same labels, exits, boxes and MACs, and
    probabilities to float32 rounding."""
    import math

    from torchvision.ops import roi_align

    from agripatch.pipeline.cascade import _TorchNetworks
    from agripatch.pipeline.core import CascadeCore

    class RoiAlignNetworks(_TorchNetworks):
        def crop(self, images, boxes, slot):
            cfg, out = self.pipeline.config, []
            for image, photo_boxes in zip(images, np.asarray(boxes, np.float32)):
                grid = max(1, math.ceil(float((photo_boxes[:, 2:] - photo_boxes[:, :2]).max()) / cfg.patch_size))
                chw = to_chw(image)
                x = (chw.float() / 255.0 if chw.dtype == torch.uint8 else chw.float())[None]
                every = roi_align(x, [torch.from_numpy(photo_boxes)], output_size=(cfg.patch_size, cfg.patch_size),
                                  spatial_scale=1.0, sampling_ratio=grid, aligned=True)
                out.append(every[slot])
            mean = torch.tensor(self.pipeline.classifier_mean).view(1, 3, 1, 1)
            std = torch.tensor(self.pipeline.classifier_std).view(1, 3, 1, 1)
            return (torch.stack(out) - mean) / std

    pipe = make_pipeline(anchornet, classifier, glance=glance)
    conf = pipe.exit_probabilities(photos).probs.max(-1)
    thresholds = list(np.quantile(conf, 0.5, axis=0))  # about half the photos stop at each exit
    ours = pipe.predict(photos, thresholds=thresholds)
    with torch.no_grad():
        images, glance_batch, hw = pipe._prepare(photos, None)
        scorer = pipe.glance_scorer()
        reference = CascadeCore(pipe.config, RoiAlignNetworks(pipe, scorer), scorer.cell_boxes.numpy(),
                                pipe.exit_macs()).predict(images, glance_batch, hw, thresholds)
    assert len({p.stage for p in ours}) >= 2
    for a, b in zip(ours, reference):
        assert (a.label, a.stage, a.macs) == (b.label, b.stage, b.macs)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_allclose(a.probs, b.probs, rtol=0, atol=1e-5)
        np.testing.assert_allclose(a.patch_logits, b.patch_logits, rtol=0, atol=1e-4)


def test_stage_outputs_concat():
    a = ExitOutputs(np.zeros((2, 3, 4), np.float32), np.array([1, 2, 3]))
    b = ExitOutputs(np.ones((1, 3, 4), np.float32), np.array([1, 2, 3]))
    joined = ExitOutputs.concat([a, b])
    assert joined.probs.shape == (3, 3, 4) and joined.exit_macs.tolist() == [1, 2, 3]
    with pytest.raises(ValueError):
        ExitOutputs.concat([a, dataclasses.replace(b, exit_macs=np.array([1, 2, 4]))])


def toy_stages() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """3 photos, 3 stages (glance + 2 patches), 2 classes; costs 10, 30, 50."""
    probs = np.array(
        [
            [[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]],  # confident and right from the start
            [[0.4, 0.6], [0.7, 0.3], [0.9, 0.1]],  # glance wrong, patch 1 right (label 0)
            [[0.55, 0.45], [0.2, 0.8], [0.2, 0.8]],  # glance wrong (label 1), patch 1 right
        ],
        dtype=np.float32,
    )
    return probs, np.array([10, 30, 50]), np.array([0, 0, 1])


class TestReplay:
    def test_simulate_exact(self):
        probs, exit_macs, _ = toy_stages()
        pred, exit_stage, macs = simulate_exits(probs, exit_macs, [0.85, 0.75, 0.0])
        assert exit_stage.tolist() == [0, 2, 1] and pred.tolist() == [0, 0, 1] and macs.tolist() == [10, 50, 30]
        pred, exit_stage, _ = simulate_exits(probs, exit_macs, 0.0)
        assert exit_stage.tolist() == [0, 0, 0] and pred.tolist() == [0, 1, 0]
        _, exit_stage, macs = simulate_exits(probs, exit_macs, NEVER_EXIT)
        assert exit_stage.tolist() == [2, 2, 2] and macs.tolist() == [50, 50, 50]
        per_image = np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
        assert simulate_exits(probs, per_image, [0.85, 0.75, 0.0])[2].tolist() == [1, 6, 8]

    def test_compares_in_float32_like_torch(self):
        probs = np.array([[[0.7, 0.3], [0.5, 0.5]]], dtype=np.float32)  # float32(0.7) < 0.7 in float64
        torch_exit = bool(torch.tensor(probs[0, 0]).max() >= torch.tensor([0.7], dtype=torch.float32)[0])
        assert torch_exit
        assert simulate_exits(probs, np.array([1, 2]), [0.7, 0.0])[1].tolist() == [0]

    def test_simulate_exceptions(self):
        probs, exit_macs, _ = toy_stages()
        with pytest.raises(ValueError):
            simulate_exits(probs, exit_macs, [0.5, 0.5])
        with pytest.raises(ValueError):
            simulate_exits(probs, exit_macs[:2], 0.5)
        with pytest.raises(ValueError):
            simulate_exits(probs[0], exit_macs, 0.5)

    def test_sweep(self):
        probs, exit_macs, labels = toy_stages()
        rows = sweep_thresholds(probs, exit_macs, labels, grid=[0.0, 0.6, 0.65, 0.85, NEVER_EXIT])
        assert [r["mean_macs"] for r in rows] == pytest.approx([10.0, 50 / 3, 70 / 3, 110 / 3, 50.0])
        assert [r["exit_histogram"] for r in rows] == [[3, 0, 0], [2, 1, 0], [1, 2, 0], [1, 0, 2], [0, 0, 3]]
        assert [r["accuracy"] for r in rows] == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0, 1.0])
        assert [r["threshold"] for r in rows] == [0.0, 0.6, 0.65, 0.85, NEVER_EXIT]
        default = sweep_thresholds(probs, exit_macs, labels)
        assert len(default) == 22 and all(sum(r["exit_histogram"]) == 3 for r in default)
        means = [r["mean_macs"] for r in default]
        assert means == sorted(means)

    def test_budget_with_labels(self):
        probs, exit_macs, labels = toy_stages()
        choice = thresholds_for_budget(probs, exit_macs, 35.0, labels)
        # 0.7 (photos 1 and 2 read patch 1) is the cheapest threshold reaching accuracy 1;
        # 0.8 is as accurate but costs 30, 0.9 is over budget.
        assert choice.threshold == float(np.float32(0.7))
        assert choice.accuracy == 1.0 and choice.mean_macs == pytest.approx(70 / 3)
        assert choice.thresholds == [choice.threshold] * 3 and choice.exit_histogram == [1, 2, 0]
        pred, _, macs = simulate_exits(probs, exit_macs, choice.thresholds)
        assert (pred == labels).mean() == 1.0 and macs.mean() == choice.mean_macs
        # A tight budget trades accuracy for cost.
        assert thresholds_for_budget(probs, exit_macs, 20.0, labels).accuracy == pytest.approx(2 / 3)

    def test_budget_without_labels_spends_it(self):
        probs, exit_macs, _ = toy_stages()
        assert thresholds_for_budget(probs, exit_macs, 1000.0).threshold == NEVER_EXIT
        choice = thresholds_for_budget(probs, exit_macs, 10.0)
        assert choice.mean_macs == 10.0 and choice.exit_histogram == [3, 0, 0] and choice.accuracy is None
        choice = thresholds_for_budget(probs, exit_macs, 40.0)
        assert choice.mean_macs == pytest.approx(110 / 3)  # the most spent within 40 (t = 0.9)
        with pytest.raises(ValueError, match="below the cheapest possible prediction"):
            thresholds_for_budget(probs, exit_macs, 9.0)


def _two_stage_case() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two confident right glances; two unsure wrong glances that the patch stage puts right."""
    probs = np.array([
        [[0.95, 0.05], [0.90, 0.10]],
        [[0.90, 0.10], [0.90, 0.10]],
        [[0.62, 0.38], [0.30, 0.70]],
        [[0.55, 0.45], [0.20, 0.80]],
    ], dtype=np.float32)
    return probs, np.array([10, 30], dtype=np.int64), np.array([0, 0, 1, 1])


def test_accuracy_preserving_thresholds_picks_the_cheapest_best():
    probs, macs, labels = _two_stage_case()
    choice = accuracy_preserving_thresholds(probs, macs, labels)
    assert choice.threshold == pytest.approx(0.65) and choice.thresholds == [choice.threshold] * 2
    assert choice.accuracy == 1.0 and choice.mean_macs == 20.0 and choice.exit_histogram == [2, 2]


def test_accuracy_preserving_thresholds_trades_within_the_tolerance():
    probs, macs, labels = _two_stage_case()
    choice = accuracy_preserving_thresholds(probs, macs, labels, tolerance=0.3)
    assert choice.threshold == pytest.approx(0.6) and choice.accuracy == 0.75 and choice.mean_macs == 15.0


def test_accuracy_preserving_thresholds_rejects_bad_input():
    probs, macs, labels = _two_stage_case()
    with pytest.raises(ValueError, match="non-empty"):
        accuracy_preserving_thresholds(probs[:0], macs, labels[:0])
    with pytest.raises(ValueError, match="tolerance"):
        accuracy_preserving_thresholds(probs, macs, labels, tolerance=-0.1)


# ------------------------------------------------------------------ the full-image exit


def _full_image_pipeline(anchornet, classifier, **overrides) -> PatchPipeline:
    from agripatch.pipeline.cascade import FullImage

    torch.manual_seed(5)
    whole = type(classifier)()  # another small network, read at its own size
    return make_pipeline(anchornet, classifier, full_image_exit=True, **overrides,
                         full_image=FullImage(whole.eval(), 24, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))


def test_full_image_exit_decodes_photos_large_enough_for_the_whole_photo(anchornet, classifier):
    from agripatch.models import create_anchornet
    from agripatch.pipeline.cascade import FullImage

    real = create_anchornet("anchornet_lite0_s8", num_classes=4, pretrained=False, input_size=96)  # has geometry
    plain = make_pipeline(real, classifier, glance_size=96)
    big = plain.with_full_image(FullImage(type(classifier)().eval(), 999, (0.5,) * 3, (0.25,) * 3))
    assert plain.decode_min_side() < 999 and big.decode_min_side() == 999


def test_full_image_exit_config_and_requirements(anchornet, classifier):
    cfg = CascadeConfig(k=2, full_image_exit=True)
    assert cfg.n_exits == 4 and cfg.exit_thresholds() == [0.9] * 4
    with pytest.raises(ValueError, match="need 4 thresholds"):
        CascadeConfig(k=2, full_image_exit=True, thresholds=[0.5, 0.5, 0.0])
    with pytest.raises(ValueError, match="full-image model"):
        PatchPipeline(anchornet, classifier, CascadeConfig(k=2, full_image_exit=True))


def test_full_image_exit_reads_the_whole_photo_for_the_photos_left_unsure(anchornet, classifier, photos):
    pipe = _full_image_pipeline(anchornet, classifier)
    macs = pipe.exit_macs()
    whole = pipe.full_image_spec
    assert len(macs) == K + 2 and macs[-1] == macs[K] + count_macs(whole.network, (1, 3, 24, 24))
    assert pipe.full_image_macs() == macs[-1] - macs[K]  # the target rule's ceiling (choose_thresholds)
    never = [2.0] * (K + 1) + [0.0]  # no exit stops before the full image
    preds = pipe.predict(photos, thresholds=never)
    x = make_glance([to_chw(p) for p in photos], 24)
    all_patches = pipe.predict(photos, thresholds=[2.0] * K + [0.0, 0.0])  # exit K: glance + K patches
    with torch.no_grad():
        whole_logits = whole.network((x - 0.5) / 0.25).numpy()
    for p, at_k, photo in zip(preds, all_patches, whole_logits):
        assert p.stage == K + 1 and p.macs == macs[-1] and p.patch_logits.shape[0] == K  # the patches were read
        patches = np.log(at_k.probs)  # mean logits of the K + 1 views, up to a constant (temperature 1)
        expected = torch.softmax(torch.from_numpy((patches - patches.max() + photo) / 2), dim=0).numpy()
        np.testing.assert_allclose(p.probs, expected, rtol=1e-4, atol=1e-6)  # half patches, half whole photo
    stop_at_k = [2.0] * K + [0.0, 0.0]
    at_k = pipe.predict(photos, thresholds=stop_at_k)
    assert {p.stage for p in at_k} == {K}
    from agripatch.pipeline.records import photo_record

    classes = ["a", "b", "c", "d"]
    hw = tuple(to_chw(photos[0]).shape[1:])
    assert photo_record("x.jpg", preds[0], classes, 2, hw, hw)["whole_photo"] is True
    assert photo_record("x.jpg", at_k[0], classes, 2, hw, hw)["whole_photo"] is False


def test_full_image_exit_is_replayed_exactly(anchornet, classifier, photos):
    pipe = _full_image_pipeline(anchornet, classifier, temperatures=[1.0, 0.8, 1.2, 1.5, 2.0])
    outputs = pipe.exit_probabilities(photos)
    assert outputs.probs.shape == (len(photos), K + 2, 4)
    seen = _replays_predict(pipe, photos, outputs, seed=3, rounds=5)
    assert K + 1 in seen


def test_full_image_exit_reads_a_file_as_its_network_was_trained_on(anchornet, classifier, tmp_path):
    """From a file, the whole photo is made as training made the baseline's input (the file decoded reduced for
    that size, then the area filter: read_glance), not shrunk from the cascade's larger decode."""
    import cv2

    from agripatch.data.photos import photo_item
    from agripatch.io.glance import read_glance
    from agripatch.io.sources import photo_files

    pipe = _full_image_pipeline(anchornet, classifier)
    whole = pipe.full_image_spec
    yy, xx = np.mgrid[0:200, 0:200]
    files = []
    for i in range(3):  # smooth stripes with fine texture: a DCT-reduced decode and an area shrink differ on them
        image = np.stack([(127 + 120 * np.sin((xx * (i + 1) + yy) / 3.0)),
                          (127 + 120 * np.cos(yy / (2.0 + i))), (xx + yy) % 256], axis=-1).astype(np.uint8)
        files.append(tmp_path / f"photo{i}.jpg")
        cv2.imwrite(str(files[-1]), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    items = [photo_item(f, glance_size=GLANCE) for f in files]  # decoded whole: 200 px, the reduced decode 25
    assert all(item["file"] == str(f) for item, f in zip(items, files))
    images, glances = [item["image"] for item in items], torch.stack([item["glance"] for item in items])
    never = [2.0] * (K + 1) + [0.0]
    from_files = pipe.exit_probabilities(images, glances, files=photo_files(items)).probs[:, -1]
    in_memory = pipe.exit_probabilities(images, glances).probs[:, -1]
    at_k = pipe.exit_probabilities(images, glances).probs[:, K]
    with torch.no_grad():
        trained_way = torch.from_numpy(np.stack([read_glance(f, whole.size) for f in files]))
        photo = whole.network((trained_way - 0.5) / 0.25).numpy()
    patches = np.log(at_k)
    expected = torch.softmax(torch.from_numpy((patches - patches.max(1, keepdims=True) + photo) / 2), dim=1).numpy()
    np.testing.assert_allclose(from_files, expected, rtol=1e-4, atol=1e-6)
    assert np.abs(in_memory - from_files).max() > 1e-4  # the larger decode shrunk would have given other answers
    preds = pipe.predict(images, glances, thresholds=never, files=photo_files(items))
    np.testing.assert_allclose(np.stack([p.probs for p in preds]), from_files, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="2 files for 3 photos"):
        pipe.predict(images, glances, thresholds=never, files=photo_files(items)[:2])


def test_deferred_photos_give_the_same_predictions_and_are_decoded_only_when_read(anchornet, classifier, tmp_path):
    """Items decoded for their glance only (``defer_full``) get every exit's answer the eager items get; a photo
    that stops at the glance is never decoded at the cascade's size, one that reads a patch is."""
    import cv2

    from agripatch.data.photos import photo_item
    from agripatch.io.deferred import DeferredPhoto
    from agripatch.io.sources import photo_files

    pipe = _full_image_pipeline(anchornet, classifier)
    files = []
    for i in range(4):
        image = np.random.default_rng(i).integers(0, 256, (200 + 16 * i, 180, 3), dtype=np.uint8)
        files.append(tmp_path / f"photo{i}.jpg")
        cv2.imwrite(str(files[-1]), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    min_side = 120  # the full decode; the 32-px glance reads a 1/4 one
    eager = [photo_item(f, min_side=min_side, glance_size=GLANCE) for f in files]

    def deferred():
        items = [photo_item(f, min_side=min_side, glance_size=GLANCE, defer_full=True) for f in files]
        assert all(isinstance(item["image"], DeferredPhoto) for item in items)
        return items, [item["image"] for item in items], torch.stack([item["glance"] for item in items])

    images, glances = [item["image"] for item in eager], torch.stack([item["glance"] for item in eager])
    for thresholds in ([0.0], [2.0] * (K + 1) + [0.0], [0.3, 0.5, 2.0, 2.0, 0.0]):
        ref = pipe.predict(images, glances, thresholds=thresholds, files=photo_files(eager))
        items, lazy, lazy_glances = deferred()
        got = pipe.predict(lazy, lazy_glances, thresholds=thresholds, files=photo_files(items))
        for a, b, photo in zip(got, ref, lazy):
            assert (a.label, a.stage, a.macs) == (b.label, b.stage, b.macs)
            np.testing.assert_array_equal(a.probs, b.probs)
            np.testing.assert_array_equal(a.boxes, b.boxes)
            assert photo.decoded == (b.stage > 0)
    items, lazy, lazy_glances = deferred()
    outputs = pipe.exit_probabilities(lazy, lazy_glances, files=photo_files(items))
    np.testing.assert_array_equal(outputs.probs, pipe.exit_probabilities(images, glances, files=photo_files(eager)).probs)
    items, lazy, _ = deferred()
    no_glances = pipe.predict(lazy, thresholds=[0.0])  # the glance made here needs every photo's pixels
    assert [p.label for p in no_glances] == [p.label for p in pipe.predict(images, thresholds=[0.0])]


def test_a_deferred_decode_is_timed_as_its_own_part_not_inside_the_crop(anchornet, classifier, tmp_path):
    """The profile (``PartTimes``) adds parts up: a photo decoded the first time a patch reads it counts under
    "deferred decode", and the crop's time is the crop's alone (it used to include the decode)."""
    import time

    import cv2

    from agripatch.io.deferred import DeferredPhoto
    from agripatch.pipeline.timing import PartTimes

    class SlowPhoto(DeferredPhoto):  # a file that takes 0.3 s to decode, as a huge photo would
        def array(self):
            if not self.decoded:
                time.sleep(0.3)
            return super().array()

    pipe = _full_image_pipeline(anchornet, classifier)
    path = tmp_path / "photo.jpg"
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 256, (120, 120, 3), dtype=np.uint8))
    photo = SlowPhoto(path, (120, 120), None)
    times = PartTimes()
    pipe.times = times  # what BasePredictor.profile attaches
    pipe.predict([photo], torch.rand(1, 3, GLANCE, GLANCE), thresholds=[2.0] * (K + 1) + [0.0])
    assert photo.decoded
    assert times.seconds["deferred decode"] >= 0.3 and times.calls["deferred decode"] == 1
    assert times.seconds["crop"] < 0.3 and times.seconds["full-image model"] < 0.3
