"""Which torch device to run on: one rule for train, evaluate and predict."""

from __future__ import annotations

import torch

from agripatch.errors import AgripatchError


def resolve_device(name: str) -> torch.device:
    """'auto' picks CUDA when present, else CPU; 'cuda' without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise AgripatchError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto")
    if name not in {"cpu"} and not name.startswith("cuda"):
        raise AgripatchError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device(name)


def _forced_cpu_bf16() -> bool | None:
    """``AGRIPATCH_CPU_BF16=1`` / ``=0``: bf16 on the CPU forced on or off (for measuring new hardware), else None."""
    import os

    forced = os.environ.get("AGRIPATCH_CPU_BF16")
    return forced == "1" if forced in ("0", "1") else None


def cpu_bf16_is_faster() -> bool:
    """True on CPUs where networks with bf16 weights infer faster than float32 ones: those with AMX tiles.

    Measured on a 2-core Xeon with AMX: every shipped network 1.7-2.8x faster, the cascade 1.47-1.51x
    (``benchmarks/bf16_inference.py``). ``AGRIPATCH_CPU_BF16=1`` / ``=0`` forces it either way.
    """
    forced = _forced_cpu_bf16()
    if forced is not None:
        return forced
    return bool(getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)())


def amp_dtype(device: torch.device, enabled: bool, prefer: str = "auto") -> torch.dtype | None:
    """The autocast dtype training and its validation run in on ``device`` when mixed precision is ``enabled``.

    CUDA: bf16 where the GPU supports it, else fp16 (which needs a gradient scaler in training). ``prefer``
    ("bfloat16" or "float16") picks the CUDA dtype instead of "auto". CPU: None (float32) unless
    ``AGRIPATCH_CPU_BF16=1``: bf16 autocast trained the `ibean` recipe no faster on either CPU measured (2-core AMD
    EPYC without AMX: 8.19 against 7.54 min; 2-core Xeon with AMX: 15.87 against 14.66 min; `benchmarks/README.md`,
    "Training time"). Autocast casts the float32 weights at every call; inference instead holds bf16 weights
    (:func:`inference_dtype`), which is what pays on AMX.
    """
    if not enabled:
        return None
    if device.type == "cuda":
        if prefer in ("bfloat16", "float16"):
            return getattr(torch, prefer)
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and _forced_cpu_bf16():
        return torch.bfloat16
    return None


#: the precisions ``predict`` and ``evaluate`` accept (``--precision``)
PRECISIONS = ("auto", "float32", "bfloat16")


def _known_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise AgripatchError(f"--precision {precision!r}: use one of {', '.join(PRECISIONS)}")


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype ``predict`` and ``evaluate`` run the networks in (weights and activations, not autocast).

    ``auto``: bf16 on CPUs where :func:`cpu_bf16_is_faster` (AMX tiles), else float32. On a 2-core Xeon with AMX
    every shipped network ran 1.7-2.8x faster with bf16 weights than in float32 (``benchmarks/bf16_inference.py``),
    and one answer changed on 566 test photos of three models; autocast over float32 weights gained
    less (0.9-1.7x), as it casts every weight at every call. CUDA stays float32 (not measured).
    ``float32`` / ``bfloat16`` force it; bf16 on a CPU without bf16 units runs, slowly.
    """
    _known_precision(precision)
    if precision == "auto":
        return torch.bfloat16 if device.type == "cpu" and cpu_bf16_is_faster() else torch.float32
    return getattr(torch, precision)


def check_precision(precision: str, backend: str) -> None:
    """Refuse an unknown ``--precision``, and one other than ``auto`` with ONNX Runtime (its graphs are float32, or
    int8 with ``--int8``)."""
    _known_precision(precision)
    if precision != "auto" and backend != "torch":
        raise AgripatchError(f"--precision {precision} sets the PyTorch networks' dtype; ONNX Runtime runs the "
                             "exported graphs (float32, or int8 with --int8): leave --precision out")


def autocast(device: torch.device, enabled: bool, prefer: str = "auto"):
    """``torch.autocast`` in :func:`amp_dtype`'s dtype, or a no-op context when there is none."""
    import contextlib

    dtype = amp_dtype(device, enabled, prefer)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def share_cores(workers: int) -> int | None:
    """Give torch only the cores that ``workers`` decoding processes leave free; returns the new thread count.

    torch starts one thread per core, so with DataLoader workers decoding beside it the cores are
    oversubscribed and torch's threads wait for each other at every barrier. Measured with `predict folder`
    on 2 cores and 1 worker (1,000 iBean photos, `benchmarks/predict_speed.py`): 1 torch thread instead of
    2 took the cascade from 135 to 195 photos/s without review images and from 98 to 122 with them. Leaves
    the count alone when the user set ``OMP_NUM_THREADS`` (torchrun sets it too) or nothing decodes beside.
    """
    import os

    if workers <= 0 or os.environ.get("OMP_NUM_THREADS"):
        return None
    threads = max(1, usable_cores() - workers)
    if threads >= torch.get_num_threads():
        return None
    torch.set_num_threads(threads)
    return threads


#: On a CPU with at most this many cores `predict folder` decodes in its own process by default.
FEW_CORES = 2


def decoding_workers(on_gpu: bool) -> int:
    """How many DataLoader processes decode photos for `predict folder` when ``--workers`` is not given.

    On a CPU with few cores none: the photos are decoded between batches in the main process, which then gives
    torch every core. Decoding beside the model on 2 cores made both wait for each other: 600 iBean photos, a
    2-core AMD EPYC (AVX2), 5 interleaved runs, median photos/s without review images 102.1 with none against
    72.7 with 2 workers and 76.4 with 1; with review images 73.0 against 66.9 and 66.3
    (benchmarks/README.md, "Decoding workers"). Elsewhere 2, as before (not measured on more cores here).
    """
    if not on_gpu and usable_cores() <= FEW_CORES:
        return 0
    return 2


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and taskset narrow)."""
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def one_thread_per_worker() -> None:
    """Run a freshly spawned helper process (a review-image writer) on one OpenCV thread.

    OpenCV starts a pool of one thread per core in every process; writers are already one per core, so
    their resizes and colour conversions would otherwise crowd the cores the model and the other helpers
    need. Only for spawned processes: in a forked one (a DataLoader worker) the parent's OpenCV pool state is
    inherited, and ``cv2.setNumThreads`` there can wait forever on a copied lock (it hung a test run).
    """
    import cv2

    cv2.setNumThreads(1)


def evidence_writers(on_gpu: bool, workers: int) -> int:
    """How many photos' review images (crops, overlays) to encode at once while the model reads the next batch.

    On CPU the model needs the cores, so one. On a GPU the model leaves the CPU idle: every core that
    neither the decoding workers nor the main process use (split among the processes torchrun starts on
    this machine), at most 8. Measured on an H200 with 16 cores and 8 workers (`benchmarks/gpu_check.sh`):
    one writer kept up with 103 photos/s while the cascade alone ran 355 photos/s.
    """
    import os

    if not on_gpu:
        return 1
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(8, usable_cores() // local_processes - workers - 1))
