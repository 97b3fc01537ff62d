"""Device rules: torch threads and review-image writers share the cores with decoding workers."""

from __future__ import annotations

import os

import pytest
import torch

from agripatch.device import FEW_CORES, decoding_workers, evidence_writers, share_cores, usable_cores


@pytest.fixture
def all_cores(monkeypatch):
    """torch on every core, OMP_NUM_THREADS unset (as a user's shell usually has it)."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(cores)
    return cores


def test_workers_take_cores_from_torch(all_cores):
    expected = max(1, all_cores - 1)
    assert share_cores(1) == (expected if expected < all_cores else None)
    assert torch.get_num_threads() == expected


def test_at_least_one_thread_however_many_workers(all_cores):
    share_cores(all_cores + 8)
    assert torch.get_num_threads() == 1


def test_no_workers_or_a_user_setting_leaves_threads_alone(all_cores, monkeypatch):
    assert share_cores(0) is None and torch.get_num_threads() == all_cores
    monkeypatch.setenv("OMP_NUM_THREADS", str(all_cores))
    assert share_cores(1) is None and torch.get_num_threads() == all_cores


def test_one_writer_on_cpu_the_free_cores_on_a_gpu(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert evidence_writers(False, 0) == 1 and evidence_writers(False, 8) == 1
    assert evidence_writers(True, 0) == max(1, min(8, usable_cores() - 1))
    assert evidence_writers(True, usable_cores() + 4) == 1  # never none, however many workers


def test_writers_split_the_cores_among_torchrun_processes(monkeypatch):
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    alone = evidence_writers(True, 0)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(usable_cores()))
    assert evidence_writers(True, 0) == 1 <= alone


def test_few_cpu_cores_decode_in_the_main_process():
    assert decoding_workers(True) == 2  # a GPU leaves the cores to decoding
    assert decoding_workers(False) == (0 if usable_cores() <= FEW_CORES else 2)
    if not hasattr(os, "sched_setaffinity"):
        return
    cores = os.sched_getaffinity(0)
    try:
        os.sched_setaffinity(0, {min(cores)})  # a one-core container, as taskset would make it
        assert usable_cores() == 1 and decoding_workers(False) == 0
    finally:
        os.sched_setaffinity(0, cores)


def test_inference_runs_in_bf16_only_where_amx_units_make_it_faster(monkeypatch):
    from agripatch.device import check_precision, inference_dtype
    from agripatch.errors import AgripatchError

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setenv("AGRIPATCH_CPU_BF16", "0")  # a CPU without AMX
    assert inference_dtype(cpu) == torch.float32 and inference_dtype(cpu, "bfloat16") == torch.bfloat16
    monkeypatch.setenv("AGRIPATCH_CPU_BF16", "1")  # a CPU with AMX
    assert inference_dtype(cpu) == torch.bfloat16 and inference_dtype(cpu, "float32") == torch.float32
    assert inference_dtype(cuda) == torch.float32  # not measured on GPUs: float32
    with pytest.raises(AgripatchError, match="--precision 'fp16'"):
        inference_dtype(cpu, "fp16")
    check_precision("auto", "onnxruntime")
    with pytest.raises(AgripatchError, match="ONNX Runtime runs the exported graphs"):
        check_precision("bfloat16", "onnxruntime")


def test_cpu_training_autocasts_to_bf16_only_when_asked(monkeypatch):
    """bf16 autocast trained no faster on either CPU measured, AMX or not: float32 unless AGRIPATCH_CPU_BF16=1, while
    inference on an AMX CPU holds bf16 weights (the previous test)."""
    from agripatch.device import amp_dtype

    cpu = torch.device("cpu")
    monkeypatch.delenv("AGRIPATCH_CPU_BF16", raising=False)
    assert amp_dtype(cpu, True) is None and amp_dtype(cpu, False) is None
    monkeypatch.setenv("AGRIPATCH_CPU_BF16", "1")
    assert amp_dtype(cpu, True) == torch.bfloat16 and amp_dtype(cpu, False) is None
    monkeypatch.setenv("AGRIPATCH_CPU_BF16", "0")
    assert amp_dtype(cpu, True) is None
