"""torchrun awareness for bench: which share of the work this process does, and a barrier.

Under torchrun (WORLD_SIZE > 1) a process group is started (gloo for CPU work, nccl for CUDA) and each
rank takes every world-th grid cell; without torchrun it is one process of a world of one.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Sequence, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def share(self, items: Sequence[T]) -> list[T]:
        """This rank's items: every size-th one starting at rank (the same split on every rank)."""
        return list(items[self.rank::self.size])

    def barrier(self) -> None:
        if self.size > 1:
            torch.distributed.barrier()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@contextmanager
def world(device: torch.device) -> Iterator[World]:
    """The process group for the block (a world of one without torchrun); torn down afterwards."""
    if not launched_by_torchrun():
        yield World()
        return
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.set_device(local_rank)
    owned = not torch.distributed.is_initialized()
    if owned:
        torch.distributed.init_process_group(backend="nccl" if cuda else "gloo")
    try:
        yield World(rank, size, local_rank)
    finally:
        if owned:
            torch.distributed.destroy_process_group()


def rank_device(device: torch.device, current: World) -> torch.device:
    """cuda -> this rank's GPU (cuda:local_rank) under torchrun; anything else unchanged."""
    if device.type == "cuda" and current.size > 1:
        return torch.device("cuda", current.local_rank)
    return device
