"""The patch stage selects through the cascade's own path; which CAM ranks its cells: label, predicted or random."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agripatch.engine.forwards import PatchForward
from agripatch.models import create_anchornet, create_classifier
from agripatch.pipeline.cascade import PatchPipeline
from agripatch.pipeline.config import CascadeConfig

NORM = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _pipeline() -> PatchPipeline:
    torch.manual_seed(0)
    anchornet = create_anchornet("anchornet_lite0_s8", num_classes=4, pretrained=False)
    classifier, cfg = create_classifier("test_efficientnet", 4, pretrained=False)
    return PatchPipeline(anchornet, classifier, CascadeConfig(k=2, glance_size=96, patch_size=32),
                         classifier_mean=cfg["mean"], classifier_std=cfg["std"])


def _forward(train_selection: str) -> PatchForward:
    return PatchForward(_pipeline(), 4, torch.device("cpu"), False, train_selection=train_selection)


def _photos(n: int = 6) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randint(0, 256, (3, 120 + 7 * i, 100), dtype=torch.uint8, generator=generator) for i in range(n)]


def test_unknown_train_selection_is_refused():
    with pytest.raises(ValueError, match="train_selection"):
        _forward("oracle")


@pytest.mark.parametrize("mode", ["label", "predicted", "random"])
def test_evaluation_always_ranks_like_inference(mode):
    assert _forward(mode).ranking_classes(None) is None


def test_label_mode_ranks_by_the_true_class():
    labels = torch.tensor([3, 0, 2])
    assert torch.equal(_forward("label").ranking_classes(labels), labels)


def test_random_mode_draws_every_class_reproducibly():
    forward = _forward("random")
    labels = torch.zeros(400, dtype=torch.long)
    torch.manual_seed(5)
    first = forward.ranking_classes(labels)
    torch.manual_seed(5)
    again = forward.ranking_classes(labels)
    assert torch.equal(first, again)
    assert first.shape == (400,) and set(first.tolist()) == {0, 1, 2, 3}


def test_predicted_mode_selects_the_boxes_inference_would():
    forward = _forward("predicted")
    photos, labels = _photos(), torch.tensor([0, 1, 2, 3, 0, 1])
    training_boxes = forward.select(photos, labels).boxes
    assert training_boxes.shape == (6, 2, 4)
    np.testing.assert_array_equal(training_boxes, forward.select(photos, None).boxes)
    # ... and those are the boxes predict() reports for each photo.
    predicted = forward.pipeline.predict(photos, thresholds=[2.0, 2.0, 0.0])
    for boxes, result in zip(training_boxes, predicted):
        np.testing.assert_array_equal(boxes, result.boxes)


def test_label_mode_follows_the_label_not_the_prediction():
    forward = _forward("label")
    photos = _photos()
    per_class = [forward.select(photos, torch.full((6,), c)).boxes for c in range(4)]
    # Different classes' maps pick different cells somewhere in the batch.
    assert any(not np.array_equal(per_class[0], other) for other in per_class[1:])


def test_training_batch_reads_k_patches_per_photo_and_validation_scores_the_cascade():
    forward = _forward("random")
    model = forward.pipeline.classifier
    batch = {"image": _photos(4), "label": torch.tensor([0, 1, 2, 3])}
    model.train()
    logits, targets = forward(model, batch)
    assert logits.shape == (8, 4) and targets.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    model.eval()
    scores, labels = forward(model, batch)
    expected = forward.pipeline.exit_probabilities(batch["image"]).probs[:, -1]
    np.testing.assert_array_equal(scores.numpy(), expected)
    assert torch.equal(labels, batch["label"])
