"""Lesion masks teach AnchorNet where the disease is: mask files, aligned augmentation, the loss, training."""

from __future__ import annotations

import csv
from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from agripatch.data.folder import scan_image_folder
from agripatch.data.lesion_masks import LesionMasks
from agripatch.data.splits import make_splits, write_splits_csv
from agripatch.data.synth import generate_synthetic
from agripatch.engine.data import ReportingDataset, TensorTransform, collate_tensors
from agripatch.engine.forwards import LesionForward
from agripatch.engine.lesion_focus import lesion_cells, lesion_focus_loss
from agripatch.engine.lesions import boxes_mask
from agripatch.engine.train import run_training
from agripatch.errors import DatasetError, RecipeError
from agripatch.models import create_anchornet
from agripatch.recipes import load_recipe

# ---------------------------------------------------------------------------------------------- the loss


def test_lesion_cells_use_the_one_percent_rule():
    masks = torch.zeros(1, 20, 20)
    masks[0, 0, 0] = 1  # one pixel: 1% of a 10x10 box, 4% of a 5x5 one, 1/121 of an 11x11 one
    boxes = torch.tensor([[0, 0, 10, 10], [0, 0, 5, 5], [5, 5, 10, 10], [0, 0, 11, 11]], dtype=torch.float32)
    assert lesion_cells(masks, boxes).tolist() == [[True, True, False, False]]


def test_loss_is_minus_log_of_the_mass_on_lesion_cells():
    scores = torch.zeros(2, 2, 3)
    scores[0, 1] = torch.tensor([0.0, np.log(3.0), 0.0])  # class 1: lesion cell 1 holds 3 / 5 of the mass
    lesions = torch.tensor([[False, True, False], [False, False, False]])  # photo 1 has no lesion cell
    loss = lesion_focus_loss(scores, torch.tensor([1, 0]), lesions)
    assert loss.item() == pytest.approx(-np.log(3 / 5))
    none = lesion_focus_loss(scores.requires_grad_(), torch.tensor([1, 0]), torch.zeros(2, 3, dtype=torch.bool))
    assert none.item() == 0.0 and none.requires_grad


def test_loss_gradient_is_exact():
    scores = torch.randn(3, 2, 5, dtype=torch.float64, requires_grad=True)
    lesions = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool)
    assert torch.autograd.gradcheck(lambda s: lesion_focus_loss(s, torch.tensor([0, 1, 1]), lesions), (scores,))


def test_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="cell_scores"):
        lesion_focus_loss(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long), torch.zeros(2, 5, dtype=torch.bool))


# ------------------------------------------------------------------------------------------ mask files


def _write_mask(path: Path, mask: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), mask.astype(np.uint8))
    return path


def test_masks_are_found_mirrored_or_flat_and_thresholded(tmp_path):
    coded = np.zeros((40, 80), np.uint8)
    coded[:, :40] = 1  # leaf
    coded[10:12, 20:22] = 2  # a 2 x 2 lesion
    _write_mask(tmp_path / "m" / "rust" / "a.png", coded)
    _write_mask(tmp_path / "m" / "b.png", coded)
    masks = LesionMasks(tmp_path / "m", min_value=2)
    assert masks.find("rust/a.jpg") == tmp_path / "m" / "rust" / "a.png"
    assert masks.find("rust/b.jpg") == tmp_path / "m" / "b.png"
    assert masks.find("rust/c.jpg") is None and masks.read("rust/c.jpg", 40, 80) is None
    assert masks.count(["rust/a.jpg", "rust/b.jpg", "rust/c.jpg"]) == 2
    full = masks.read("rust/a.jpg", 40, 80)
    assert full.dtype == np.uint8 and full.sum() == 4 and full[10, 20] == 1  # the leaf (1) is not lesion
    small = masks.read("rust/a.jpg", 10, 20)  # a 4x reduced decode: the 2-pixel lesion survives
    assert small.shape == (10, 20) and small[2:4, 5].any()
    assert LesionMasks(tmp_path / "m", min_value=1).read("rust/a.jpg", 40, 80).sum() == 40 * 40


def test_mask_errors_name_the_file_and_the_fix(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        LesionMasks(tmp_path / "missing")
    _write_mask(tmp_path / "m" / "a.png", np.zeros((40, 40)))
    (tmp_path / "m" / "bad.png").write_bytes(b"not a png")
    masks = LesionMasks(tmp_path / "m")
    with pytest.raises(DatasetError, match=r"a\.png.*aspect ratio"):
        masks.read("rust/a.jpg", 40, 80)
    with pytest.raises(DatasetError, match=r"bad\.png"):
        masks.read("x/bad.jpg", 40, 40)


def test_augmentation_keeps_mask_and_pixels_aligned(tmp_path):
    image = np.full((120, 160, 3), 90, np.uint8)
    image[30:50, 100:130] = (250, 0, 0)  # the "lesion" is the only red patch
    (tmp_path / "rust").mkdir()
    cv2.imwrite(str(tmp_path / "rust" / "a.png"), image[..., ::-1])
    mask = np.zeros((120, 160), np.uint8)
    mask[30:50, 100:130] = 255
    _write_mask(tmp_path / "masks" / "rust" / "a.png", mask)
    pipeline = A.Compose([A.RandomResizedCrop(size=(64, 64), scale=(0.5, 1.0), interpolation=cv2.INTER_AREA),
                          A.HorizontalFlip(p=1.0), A.VerticalFlip(p=0.5)])
    dataset = ReportingDataset(tmp_path, [("rust/a.png", 0)], TensorTransform(pipeline, (0, 0, 0), (1, 1, 1)),
                               lesion_masks=LesionMasks(tmp_path / "masks"))
    for seed in range(6):
        dataset.transform.set_seed(seed)
        item = dataset[0]
        red = (item["image"][0] > 0.8) & (item["image"][1] < 0.2)
        assert item["mask"].dtype == torch.uint8 and item["mask"].shape == (64, 64)
        inside = item["mask"].bool()
        if inside.any():  # the red pixels are exactly the masked ones (away from the resized borders)
            assert red[inside].float().mean() > 0.8 and red[~inside].float().mean() < 0.02
    batch = collate_tensors([dataset[0], dataset[0]])
    assert batch["mask"].shape == (2, 64, 64) and batch["mask"].flatten(1).any(1).tolist() == [True, True]
    (tmp_path / "masks" / "rust" / "a.png").unlink()  # a photo without a mask file: an empty mask, no lesion cell
    unmasked = ReportingDataset(tmp_path, [("rust/a.png", 0)], TensorTransform(pipeline, (0, 0, 0), (1, 1, 1)),
                                lesion_masks=LesionMasks(tmp_path / "masks"))[0]
    assert unmasked["mask"].shape == (64, 64) and not unmasked["mask"].any()


# ---------------------------------------------------------------------------------------------- training


def test_lesion_forward_moves_the_class_map_onto_the_lesion():
    torch.manual_seed(0)
    model = create_anchornet("anchornet_lite0_s8", num_classes=2, pretrained=False)
    images = torch.randn(2, 3, 96, 96)
    masks = torch.zeros(2, 96, 96, dtype=torch.uint8)
    masks[0, 70:96, 70:96] = 1  # bottom-right corner; photo 1 has no mask file, so an empty mask
    batch = {"image": images, "label": torch.tensor([1, 1]), "mask": masks}
    forward = LesionForward(torch.device("cpu"), channels_last=False, weight=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    model.train()
    losses = []
    for _ in range(8):
        logits, labels, aux = forward(model, batch)
        assert logits.shape == (2, 2) and labels.tolist() == [1, 1]
        optimizer.zero_grad()
        aux.backward()
        optimizer.step()
        losses.append(aux.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    assert len(forward(model, batch)) == 2  # validation is the plain image forward


@pytest.fixture(scope="module")
def masked_leaves(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("masked") / "data"
    generate_synthetic(root, classes=3, per_class=6, size=128, seed=1)
    write_splits_csv(make_splits(scan_image_folder(root), val=0.25, test=0.25, seed=0), root / "splits.csv")
    masks = root.parent / "masks"
    boxes: dict[str, list] = {}
    with open(root / "boxes.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            boxes.setdefault(row["path"], []).append([int(row[k]) for k in ("x0", "y0", "x1", "y1")])
    for rel, rel_boxes in boxes.items():
        _write_mask((masks / rel).with_suffix(".png"), boxes_mask(128, 128, rel_boxes) * 255)
    return root, masks


def test_train_with_lesion_masks_records_them(masked_leaves, tmp_path):
    root, masks = masked_leaves
    fast = ["cascade.glance_size=96", "cascade.patch_size=48", "data.workers=0", "stages.baseline.enabled=false",
            "stages.anchornet.batch_size=4", "stages.patches.batch_size=4"]
    out = run_training("smoke", root, tmp_path / "run", epochs=1, device="cpu", overrides=fast, quiet=True,
                       lesion_masks=masks)
    assert out.is_file()
    recipe = load_recipe(tmp_path / "run" / "recipe.yaml")
    assert recipe.lesions.masks == str(masks.resolve())
    rows = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    assert rows[1].startswith("anchornet,1,")


def test_masks_that_match_no_photo_are_refused(masked_leaves, tmp_path):
    root, _ = masked_leaves
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no training photo"):
        run_training("smoke", root, tmp_path / "run", epochs=1, device="cpu", quiet=True,
                     lesion_masks=tmp_path / "empty")
    with pytest.raises(DatasetError, match="does not exist"):
        run_training("smoke", root, tmp_path / "run", epochs=1, device="cpu", quiet=True,
                     lesion_masks=tmp_path / "missing")
    assert not (tmp_path / "run").exists()  # nothing written: the same command works once the masks are fixed


def test_masks_with_mixup_are_a_recipe_error(tmp_path):
    with pytest.raises(RecipeError, match="mixup"):
        load_recipe("smoke", ["lesions.masks=/x", "stages.anchornet.mixup_alpha=0.2"])


def test_lesion_targets_keep_the_shipped_split_outside_the_lesions():
    from agripatch.engine.symptom_tuning import lesion_targets

    lesion = np.zeros((16, 16), np.uint8)
    lesion[:8, :4] = 1  # half of cell (0, 0)'s 8 x 8 block
    reference = np.zeros((3, 2, 2), np.float32)
    reference[:, :, :] = np.array([0.2, 0.6, 0.2], np.float32)[:, None, None]
    targets = lesion_targets(lesion, reference, 8)
    np.testing.assert_allclose(targets[:, 0, 0], [0.125, 0.375, 0.5], rtol=1e-6)
    np.testing.assert_allclose(targets[:, 1, 1], [0.25, 0.75, 0.0], rtol=1e-6)
    np.testing.assert_allclose(targets.sum(axis=0), 1.0, rtol=1e-6)


def test_train_with_masks_and_severity_tunes_the_symptom_map_and_keeps_it(masked_leaves, tmp_path):
    """With lesion masks and cascade.severity the shipped map is fine-tuned on the masked photos first: model.pt
    holds the tuned weights (not the shipped ones), predict loads them, and a resumed run reuses the tuning."""
    from agripatch.models.symptom_map import shipped_symptom_map
    from agripatch.pipeline.bundle import load_model_file
    from agripatch.io.torchfile import load_object

    root, masks = masked_leaves
    fast = ["cascade.glance_size=96", "cascade.patch_size=48", "data.workers=0", "stages.baseline.enabled=false",
            "stages.anchornet.batch_size=4", "stages.patches.batch_size=4", "cascade.severity.side=64",
            "cascade.severity.cuts=[1, 5, 10, 15]", "lesions.map_epochs=2", "lesions.map_lr=0.001"]
    out = run_training("smoke", root, tmp_path / "run", epochs=1, device="cpu", overrides=fast, quiet=True,
                       lesion_masks=masks)
    checkpoint = load_object(tmp_path / "run" / "checkpoints" / "symptom_map" / "map.pt")
    assert len(checkpoint["history"]) == 2 and checkpoint["train_photos"] > 0
    stored = load_object(out)["symptom_map"]["state_dict"]
    shipped = shipped_symptom_map().state_dict()
    assert stored.keys() == shipped.keys()
    assert any(not torch.equal(stored[k], shipped[k]) for k in stored if stored[k].is_floating_point())
    for k in stored:
        torch.testing.assert_close(stored[k], checkpoint["state_dict"][k])
    bundle = load_model_file(out)
    assert bundle.pipeline.config.severity is not None and bundle.pipeline.symptoms is not None
    stamp = (tmp_path / "run" / "checkpoints" / "symptom_map" / "map.pt").stat().st_mtime_ns
    run_training("smoke", root, tmp_path / "run", epochs=1, device="cpu", overrides=fast, quiet=True,
                 lesion_masks=masks, resume=True)
    assert (tmp_path / "run" / "checkpoints" / "symptom_map" / "map.pt").stat().st_mtime_ns == stamp


def test_masks_that_mark_the_leaf_give_exact_levels_and_plain_masks_none(tmp_path):
    coded = np.zeros((16, 32), np.uint8)
    coded[:, 8:24] = 1    # leaf
    coded[:8, 8:12] = 2   # lesion
    _write_mask(tmp_path / "coded" / "a.png", coded)
    _write_mask(tmp_path / "plain" / "a.png", (coded == 2).astype(np.uint8) * 255)
    levels = LesionMasks(tmp_path / "coded", min_value=2).read_levels("x/a.jpg", 8, 16)
    assert levels.shape == (3, 8, 16)
    np.testing.assert_allclose(levels.sum(axis=0), 1.0, rtol=1e-6)
    np.testing.assert_allclose(levels.mean(axis=(1, 2)), [0.5, 0.4375, 0.0625], rtol=1e-6)
    assert LesionMasks(tmp_path / "plain", min_value=1).read_levels("x/a.jpg", 8, 16) is None
    assert LesionMasks(tmp_path / "coded", min_value=2).read_levels("x/b.jpg", 8, 16) is None


def test_read_targets_reads_a_mask_once_as_levels_or_as_lesions(tmp_path):
    coded = np.zeros((16, 32), np.uint8)
    coded[:, 8:24] = 1
    coded[:8, 8:12] = 2
    _write_mask(tmp_path / "coded" / "a.png", coded)
    _write_mask(tmp_path / "plain" / "a.png", (coded == 2).astype(np.uint8) * 255)
    with_leaf, plain = LesionMasks(tmp_path / "coded", min_value=2), LesionMasks(tmp_path / "plain", min_value=1)
    levels, lesion = with_leaf.read_targets("x/a.jpg", 8, 16)
    assert lesion is None
    np.testing.assert_array_equal(levels, with_leaf.read_levels("x/a.jpg", 8, 16))
    levels, lesion = plain.read_targets("x/a.jpg", 8, 16)
    assert levels is None and lesion.sum() == 4 * 2
    np.testing.assert_array_equal(lesion, plain.read("x/a.jpg", 8, 16))
    assert with_leaf.read_targets("x/b.jpg", 8, 16) == (None, None)
