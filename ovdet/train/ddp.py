"""Data parallelism through torch's own DDP, when the command is launched with `torchrun`.

    torchrun --nproc-per-node 2 -m ovdet train DATA --model M --out DIR --batch-size 16

Each process takes its slice of every global batch (`Stream.batch`); DDP averages the
gradients, and the loss is normalised by the global number of boxes (all-reduced), so the
update equals one process's on the whole global batch. Backend: NCCL on CUDA, gloo on CPU.
Only rank 0 writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import OvdetError


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world() -> int:
    """The number of processes torchrun started (1 when run directly)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group torchrun set up (no-op for one process); on CUDA each process
    takes the GPU of its local rank."""
    world = launched_world()
    if world <= 1:
        return DistInfo(), device
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistInfo(rank, world, local), device


def check_batch(global_batch: int, info: DistInfo) -> None:
    if global_batch % info.world:
        raise OvdetError(f"--batch-size {global_batch} (the global batch) must be a multiple of the {info.world} "
                         "processes torchrun started")


def wrap(module: torch.nn.Module, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """`module` in DDP when several processes run (else as it is)."""
    if not info.enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)


def all_reduce_sum(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """The sum over processes (the value itself for one process)."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    value = value.clone()
    dist.all_reduce(value)
    return value


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def shutdown(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["DistInfo", "all_reduce_sum", "barrier", "check_batch", "init_distributed", "launched_world", "shutdown",
           "wrap"]
