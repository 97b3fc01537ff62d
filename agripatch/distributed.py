"""torch.distributed plumbing for `torchrun ... -m agripatch train` and `torchrun ... -m agripatch predict folder`.

torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; we join the process group (NCCL on GPUs, gloo on CPU).
`train` shards the training set with DistributedSampler and lets only rank 0 log and write files;
`predict folder` shards the photo list and merges the parts on rank 0 (``agripatch.predict.shards``).
This module sits on the lowest floor (beside ``device.py``) so that both can use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from agripatch.device import resolve_device


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job: its rank, the world size and its device."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Only the main process logs, checkpoints and writes outputs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process trains together."""
        return self.world_size > 1


def launched_world_size() -> int:
    """How many processes torchrun launched for this job (1 when it did not): read before joining the group, so
    code that must not race other ranks (e.g. writing one shared file) can refuse early."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_name: str = "auto") -> DistContext:
    """Join the torchrun process group when launched by torchrun; otherwise a single-process context."""
    world_size = launched_world_size()
    device = resolve_device(device_name)
    if world_size <= 1:
        return DistContext(rank=0, world_size=1, local_rank=0, device=device)
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op in a single process)."""
    if ctx.distributed:
        dist.barrier()


def all_reduce_sum(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Sum a small tensor of counters across processes."""
    if ctx.distributed:
        values = values.to(ctx.device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values.cpu()


def broadcast_buffers(ctx: DistContext, module: torch.nn.Module) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so all ranks hold one model."""
    if not ctx.distributed:
        return
    for buffer in module.buffers():
        data = buffer.data.to(ctx.device)
        dist.broadcast(data, src=0)
        buffer.data.copy_(data)


def object_group(ctx: DistContext, timeout: timedelta = timedelta(days=7)) -> Any:
    """A gloo group of every rank for exchanging small Python objects, with a long timeout (None in one process).

    Collective call: every rank must call it, in the same order. Gloo runs on the CPU whatever the default
    backend, and its long timeout lets a rank that finished its share wait for the slowest one (NCCL's
    default of 10 minutes would fail a fast rank waiting at the end of a long run).
    """
    if not ctx.distributed:
        return None
    return dist.new_group(backend="gloo", timeout=timeout)


def all_gather_objects(ctx: DistContext, value: Any, group: Any = None) -> list[Any]:
    """Every rank's ``value`` (picklable), indexed by rank, on every rank; ``[value]`` in one process."""
    if not ctx.distributed:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value, group=group)
    return gathered


def broadcast_object(ctx: DistContext, value: Any, src: int = 0, group: Any = None) -> Any:
    """Rank ``src``'s ``value`` (picklable) on every rank; ``value`` itself in one process."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src, group=group)
    return box[0]


#: How long a gloo rank waits at :func:`shutdown` for the others before leaving anyway.
SHUTDOWN_WAIT = timedelta(seconds=60)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group cleanly.

    On gloo (CPU) every rank first meets the others: a rank that destroyed its group while another still used the
    pairs to it could abort at exit ("terminate called without an active exception", seen once in the CI's
    two-rank test). ``monitored_barrier`` gives up after :data:`SHUTDOWN_WAIT`, so a rank whose peer crashed
    still leaves instead of hanging."""
    if not (ctx.distributed and dist.is_initialized()):
        return
    if dist.get_backend() == "gloo":
        try:
            dist.monitored_barrier(timeout=SHUTDOWN_WAIT)
        except RuntimeError:
            pass  # a peer is gone (it failed): nothing left to wait for
    dist.destroy_process_group()
