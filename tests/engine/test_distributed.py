"""DistributedDataParallel on CPU with gloo: two ranks train in lockstep and end with identical weights."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from agripatch.device import resolve_device
from agripatch.distributed import init_distributed
from agripatch.errors import AgripatchError

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    import torch.nn as nn

    from agripatch.distributed import init_distributed, shutdown
    from agripatch.engine.loop import Stage, StageRunner
    from agripatch.engine.forwards import ImageForward
    from agripatch.recipes import RuntimeConfig, StageConfig

    out = Path(sys.argv[1])
    ctx = init_distributed("cpu")
    torch.set_num_threads(1)


    class Blobs(torch.utils.data.Dataset):
        def __init__(self, n):
            g = torch.Generator().manual_seed(0)
            self.labels = torch.arange(n) % 2
            self.images = torch.randn(n, 3, 16, 16, generator=g) + self.labels.view(-1, 1, 1, 1).float()

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"image": self.images[i], "label": int(self.labels[i])}


    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    initial = {k: v.clone() for k, v in model.state_dict().items()}
    data = Blobs(32)
    stage = Stage("anchornet", 0, model, data, Blobs(8), ImageForward(ctx.device, False), data.labels.tolist(), 2)
    config = StageConfig(epochs=2, batch_size=4, optimizer={"opt": "sgd", "lr": 0.1}, scheduler={"sched": "none"})
    runner = StageRunner(stage, config, RuntimeConfig(channels_last=False), ctx=ctx, seed=0, workers=0,
                         class_balance="none", checkpoint_dir=out / "checkpoints", log=lambda *a: None)
    runner.run()
    changed = any(not torch.equal(initial[k], v) for k, v in model.state_dict().items())
    torch.save({"state": model.state_dict(), "changed": changed, "world": ctx.world_size}, out / f"rank{ctx.rank}.pt")
    shutdown(ctx)
    """
)


@pytest.mark.slow
def test_two_gloo_ranks_end_with_identical_weights(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert rank0["world"] == rank1["world"] == 2
    assert rank0["changed"] and rank1["changed"]
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][key]), key
    # Only rank 0 writes checkpoints.
    assert (tmp_path / "checkpoints" / "last.pt").is_file()


def test_single_process_context_and_device_errors(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = init_distributed("cpu")
    assert (ctx.rank, ctx.world_size, ctx.is_main, ctx.distributed) == (0, 1, True, False)
    assert resolve_device("cpu").type == "cpu"
    import pytest

    with pytest.raises(AgripatchError, match="unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(AgripatchError, match="no CUDA GPU"):
            resolve_device("cuda")


@pytest.mark.slow
def test_torchrun_launches_the_cli_train(tmp_path):
    from agripatch.data.synth import generate_synthetic

    data = tmp_path / "data"
    generate_synthetic(data, classes=2, per_class=6, size=128, seed=0)
    out = tmp_path / "run"
    overrides = ["cascade.glance_size=96", "cascade.patch_size=48", "data.workers=0", "data.val_fraction=0.0",
                 "data.test_fraction=0.0", "stages.patches.enabled=false", "stages.baseline.enabled=false",
                 "stages.anchornet.batch_size=4"]
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "agripatch",
         "train", "--recipe", "smoke", "--data", str(data), "--out", str(out), "--device", "cpu", "--epochs", "1",
         *overrides],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert (out / "model.pt").is_file()
    assert "2 processes" in result.stderr
    assert (out / "metrics.csv").read_text().count("\nanchornet,") == 1
