"""Process-group helpers for DDP under `torchrun` (env vars WORLD_SIZE, RANK, LOCAL_RANK).

One process per device; with WORLD_SIZE unset or 1 everything here is a no-op, so the Trainer
code path is the same for one process and many.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torch.distributed job (rank, world size, local rank); world_size 1 = single
    process.
    """
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # True when init_distributed created the group (so it destroys it)

    @property
    def enabled(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on rank 0 (the one that writes files and logs)."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def init_distributed(device_type: str) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, NCCL on CUDA); no-op for 1 process."""
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    _env_int("RANK", 0)  # validated here; the process group reads it
    local_rank = _env_int("LOCAL_RANK", 0)
    owns = False
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        if device_type == "cuda":
            torch.cuda.set_device(local_rank)
            dist.init_process_group(backend, device_id=torch.device("cuda", local_rank))
        else:
            dist.init_process_group(backend)
        owns = True
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, owns_group=owns)


def cleanup(info: DistInfo, sync: bool = True) -> None:
    """Leave the process group. With sync, ranks first meet at a barrier so none tears gloo down
    while another still talks to it (seen: 'terminate called without an active exception', exit -6).
    No barrier on error paths: a rank that died would make it wait for the timeout."""
    if info.owns_group and dist.is_initialized():
        if sync:
            dist.barrier()
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def all_reduce_(t: torch.Tensor, info: DistInfo, op: str = "sum") -> torch.Tensor:
    """In-place all-reduce (sum / max / min); identity for one process."""
    if info.enabled:
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        dist.all_reduce(t, op=ops[op])
    return t


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj`, in rank order (a list of one for one process)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, info: DistInfo, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
