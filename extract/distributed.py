"""torchrun helpers: one process per device, ranks split the work, rank 0 writes.

`init_distributed(device)` reads torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); without it the
context is a single process and every collective is a no-op. Backend: nccl for CUDA, gloo for CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from clipbridge.errors import ClipBridgeError

T = TypeVar("T")


@dataclass
class DistContext:
    """rank / world size of this process; device is the device string this rank should use."""

    rank: int = 0
    world: int = 1
    device: str = "auto"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank."""
        if not self.active:
            return value
        holder = [value if self.is_main else None]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def gather(self, value: Any) -> list[Any] | None:
        """Every rank's value, in rank order, on rank 0 (None elsewhere)."""
        if not self.active:
            return [value]
        out = [None] * self.world if self.is_main else None
        dist.gather_object(value, out, dst=0)
        return out

    def run_on_main(self, fn: Callable[[], T]) -> T:
        """Run fn on rank 0 and share its result; a ClipBridgeError there is raised on every rank."""
        outcome: tuple[bool, Any] = (True, None)
        if self.is_main:
            try:
                outcome = (True, fn())
            except ClipBridgeError as error:
                outcome = (False, str(error))
                if not self.active:
                    raise
        ok, value = self.broadcast(outcome)
        if not ok:
            if self.is_main:
                raise ClipBridgeError(value)
            raise ClipBridgeError(f"rank 0 stopped: {value}")
        return value

    def close(self) -> None:
        if self.active and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: str = "auto") -> DistContext:
    """A DistContext for this process (torchrun -> process group initialised; else single process)."""
    from clipbridge.bridge.devices import resolve_device

    resolve_device(device)                       # an unknown or absent device: one line, before any work
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=device)
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = f"cuda:{local_rank}"
    elif device == "auto":
        device = "cpu"
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world=world, device=device)
