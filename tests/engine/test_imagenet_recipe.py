"""The imagenet recipe (anchornet_paper from scratch, SGD Nesterov schedule) runs on an ImageNet-layout fixture."""

from __future__ import annotations

import numpy as np
from PIL import Image

from agripatch.data.prepare import prepare_dataset
from agripatch.engine.train import run_training
from agripatch.io.torchfile import load_object
from agripatch.recipes import load_recipe


def test_imagenet_recipe_is_the_papers_schedule():
    recipe = load_recipe("imagenet")
    stage = recipe.stages.anchornet
    assert recipe.models.anchornet.arch == "anchornet_paper" and recipe.models.anchornet.pretrained is False
    assert (stage.optimizer.opt, stage.optimizer.lr, stage.epochs) == ("sgd", 0.1, 100)
    assert (stage.scheduler.sched, stage.scheduler.decay_milestones, stage.scheduler.decay_rate) == ("multistep", [30, 60, 90], 0.1)
    assert not recipe.stages.patches.enabled and not recipe.stages.baseline.enabled


def test_imagenet_recipe_trains_one_step_on_a_tiny_imagenet_layout(tmp_path):
    rng = np.random.default_rng(0)
    src = tmp_path / "ILSVRC"
    for split, count in (("train", 4), ("val", 1)):
        for wnid in ("n01440764", "n01443537"):
            folder = src / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(folder / f"{wnid}_{i}.JPEG")
    (src / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\nn01443537 goldfish, Carassius auratus\n")
    data = tmp_path / "imagenet"
    prepare_dataset("imagenet", src, data)
    out = tmp_path / "run"
    run_training("imagenet", data, out, epochs=1, device="cpu", quiet=True,
                 overrides=["stages.anchornet.batch_size=8", "cascade.glance_size=104", "cascade.patch_size=32",
                            "data.workers=0"])
    state = load_object(out / "checkpoints" / "anchornet" / "last.pt")
    assert state["epoch"] == 1 and len(state["history"]) == 1
    assert state["optimizer"]["param_groups"][0]["nesterov"] is True
    assert not (out / "checkpoints" / "patches").exists()
    assert (out / "model.pt").is_file()
