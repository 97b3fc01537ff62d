"""Distillation: the soft-target loss, its forward wrapper, the teacher's saved targets, and training with a teacher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agripatch.data.folder import scan_image_folder
from agripatch.data.splits import load_splits, make_splits, write_splits_csv
from agripatch.data.synth import generate_synthetic
from agripatch.engine.distill import DistilledForward, TeacherTargets, distill_loss
from agripatch.engine.scoring import baseline_probabilities
from agripatch.engine.train import run_training
from agripatch.errors import CheckpointError, DatasetError, RecipeError
from agripatch.pipeline.bundle import load_model_file
from agripatch.recipes import load_recipe

# ---------------------------------------------------------------------------------------------- the loss


def test_loss_is_t_squared_kl_of_softened_distributions():
    teacher = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    logits = torch.tensor([[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]])
    t = 2.0
    soft_teacher = teacher.numpy() ** (1 / t)
    soft_teacher /= soft_teacher.sum(1, keepdims=True)
    soft_student = np.exp(logits.numpy() / t)
    soft_student /= soft_student.sum(1, keepdims=True)
    expected = t * t * np.mean(np.sum(soft_teacher * np.log(soft_teacher / soft_student), axis=1))
    assert distill_loss(logits, teacher, t).item() == pytest.approx(expected, rel=1e-5)


def test_loss_is_zero_when_the_student_agrees_at_any_temperature():
    teacher = torch.softmax(torch.randn(4, 5), dim=1)
    for t in (1.0, 2.0, 4.0):
        assert distill_loss(torch.log(teacher), teacher, t).item() == pytest.approx(0.0, abs=1e-6)


def test_loss_gradient_is_exact():
    logits = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    teacher = torch.softmax(torch.randn(3, 4, dtype=torch.float64), dim=1)
    assert torch.autograd.gradcheck(lambda x: distill_loss(x, teacher, 3.0), (logits,))


def test_loss_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        distill_loss(torch.zeros(2, 3), torch.zeros(2, 4), 2.0)
    with pytest.raises(ValueError, match="temperature"):
        distill_loss(torch.zeros(2, 3), torch.full((2, 3), 1 / 3), 0.0)


# ------------------------------------------------------------------------------------------- the forward


def _patch_like(model, batch, mixup=None):
    """An inner forward that reads K = 3 'patches' per photo (rows grouped by photo, as PatchForward gives)."""
    x = batch["image"].repeat_interleave(3, dim=0)
    return model(x), batch["label"].repeat_interleave(3)


def test_each_patch_gets_its_photos_teacher_targets():
    model = torch.nn.Linear(4, 3)
    batch = {"image": torch.randn(2, 4), "label": torch.tensor([0, 2]),
             "teacher": torch.tensor([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])}
    logits, targets, extra = DistilledForward(_patch_like, weight=0.5, temperature=2.0)(model, batch)
    expected = 0.5 * distill_loss(logits, batch["teacher"].repeat_interleave(3, dim=0), 2.0)
    assert logits.shape == (6, 3) and targets.tolist() == [0, 0, 0, 2, 2, 2]
    assert extra.item() == pytest.approx(expected.item())
    model.eval()  # validation: the wrapped forward, nothing added
    assert len(DistilledForward(_patch_like, 0.5, 2.0)(model, batch)) == 2


def test_training_on_the_term_moves_the_student_to_the_teacher():
    torch.manual_seed(0)
    model = torch.nn.Linear(8, 3)  # one-hot photos: the student can match every teacher row
    batch = {"image": torch.eye(8), "label": torch.zeros(8, dtype=torch.long),
             "teacher": torch.softmax(torch.randn(8, 3) * 3, dim=1)}
    forward = DistilledForward(lambda m, b, mixup=None: (m(b["image"]), b["label"]), weight=1.0, temperature=1.0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(50):
        _, _, extra = forward(model, batch)
        optimizer.zero_grad()
        extra.backward()
        optimizer.step()
        losses.append(extra.item())
    assert losses[-1] < 0.2 * losses[0]


# -------------------------------------------------------------------------------------- saved targets


def test_saved_targets_are_reused_only_for_the_same_teacher_and_photos(tmp_path):
    paths = ["a/1.jpg", "b/2.jpg"]
    targets = TeacherTargets(paths, np.array([[0.9, 0.1], [0.3, 0.7]]))
    targets.save(tmp_path / "t.npz", "sha256:abc")
    again = TeacherTargets.load(tmp_path / "t.npz", "sha256:abc", [Path(p) for p in paths])
    assert again is not None and again[Path("b/2.jpg")].tolist() == pytest.approx([0.3, 0.7])
    assert TeacherTargets.load(tmp_path / "t.npz", "sha256:other", paths) is None
    assert TeacherTargets.load(tmp_path / "t.npz", "sha256:abc", paths[:1]) is None
    assert TeacherTargets.load(tmp_path / "missing.npz", "sha256:abc", paths) is None


# -------------------------------------------------------------------------------------------- training

FAST = ["cascade.glance_size=96", "cascade.patch_size=48", "data.workers=0", "stages.anchornet.batch_size=4",
        "stages.patches.batch_size=4", "stages.baseline.batch_size=4"]


@pytest.fixture(scope="module")
def leaves_and_teacher(tmp_path_factory) -> tuple[Path, Path]:
    """Synthetic leaves and a tiny teacher run (its full-image baseline at 128 px)."""
    root = tmp_path_factory.mktemp("distil") / "data"
    generate_synthetic(root, classes=3, per_class=6, size=128, seed=1)
    write_splits_csv(make_splits(scan_image_folder(root), val=0.25, test=0.25, seed=0), root / "splits.csv")
    teacher = run_training("smoke", root, root.parent / "teacher", epochs=1, device="cpu", quiet=True,
                           overrides=[*FAST, "stages.baseline.enabled=true", "data.baseline_size=128"])
    return root, teacher


@pytest.mark.slow
def test_train_with_a_teacher_keeps_its_targets(leaves_and_teacher, tmp_path):
    root, teacher = leaves_and_teacher
    out = tmp_path / "run"
    model = run_training("smoke", root, out, epochs=1, device="cpu", quiet=True, teacher=teacher,
                         overrides=[*FAST, "stages.baseline.enabled=false"])
    assert model.is_file()
    assert load_recipe(out / "recipe.yaml").distill.teacher == str(teacher.resolve())
    saved = np.load(out / "teacher_probs.npz")
    train = [Path(row.path).as_posix() for row in load_splits(root) if row.split == "train"]
    assert len(train) > 0 and sorted(saved["paths"].tolist()) == sorted(train)
    expected = baseline_probabilities(load_model_file(teacher), [root / p for p in saved["paths"]])
    np.testing.assert_allclose(saved["probs"], expected, atol=1e-5)
    assert (out / "metrics.csv").read_text().splitlines()[1].startswith("anchornet,1,")


def test_a_wrong_teacher_is_refused_before_anything_is_written(leaves_and_teacher, tmp_path):
    root, teacher = leaves_and_teacher
    no_baseline = run_training("smoke", root, tmp_path / "plain", epochs=1, device="cpu", quiet=True,
                               overrides=[*FAST, "stages.baseline.enabled=false"])
    with pytest.raises(CheckpointError, match="no full-image baseline"):
        run_training("smoke", root, tmp_path / "run", epochs=1, device="cpu", quiet=True, teacher=no_baseline)
    with pytest.raises(CheckpointError, match="does not exist"):
        run_training("smoke", root, tmp_path / "run", epochs=1, device="cpu", quiet=True, teacher=tmp_path / "x.pt")
    other = root.parent / "two_classes"
    generate_synthetic(other, classes=2, per_class=6, size=128, seed=2)
    with pytest.raises(DatasetError, match="classes"):
        run_training("smoke", other, tmp_path / "run", epochs=1, device="cpu", quiet=True, teacher=teacher)
    assert not (tmp_path / "run").exists()


def test_distillation_with_mixup_is_a_recipe_error():
    with pytest.raises(RecipeError, match="mixup"):
        load_recipe("smoke", ["distill.teacher=/x.pt", "stages.patches.mixup_alpha=0.2"])
    load_recipe("smoke", ["distill.teacher=/x.pt", "stages.patches.mixup_alpha=0.2", "distill.stages=[anchornet]"])
