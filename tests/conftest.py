"""Test-wide settings: offline, quiet libraries, few threads, deterministic seeds."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")
# One thread: tests are tiny, and two OpenMP threads stall badly whenever anything else shares the two cores.
# Subprocesses (CLI, torchrun, resume-after-kill) inherit it, so their arithmetic matches in-process runs.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# float32 on every CPU, AMX or not, so pinned numbers are the same on every machine; bf16 tests ask for it themselves.
os.environ.setdefault("AGRIPATCH_CPU_BF16", "0")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


@pytest.fixture(autouse=True)
def _seed_and_threads():
    """Seed torch and use one intra-op thread: on this 2-core machine, shared with other jobs, 2 OpenMP threads
    made the tiny models 20-100x slower (threads waiting at barriers for a descheduled partner)."""
    import torch

    previous = torch.get_num_threads()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def shared_data() -> Path:
    """Path to ../shared/data, skipping the test when it is absent (a user's fresh clone)."""
    data = SHARED / "data"
    if not data.is_dir():
        pytest.skip("../shared/data is not present beside this checkout")
    return data
