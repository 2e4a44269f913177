"""Multi-process data parallelism through ``torchrun``: nothing to configure beyond launching with it.

``torchrun --nproc_per_node=4 -m ifseg_deploy train ...`` sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; each process then trains on its share of every global batch (NCCL on CUDA, one
GPU per process; Gloo on CPU). A collective that fails (another process died: Gloo reports the
closed connection) raises :class:`PeerFailure`.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from ..errors import IFSegError


class PeerFailure(Exception):
    """A collective operation failed (usually: another process of the job died); the message is its first line."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "DistContext":
        try:
            world = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local = int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            raise IFSegError(
                "RANK / WORLD_SIZE / LOCAL_RANK are not integers; launch multi-GPU training with torchrun"
            ) from None
        return cls(rank, world, local)

    def device(self, requested: torch.device) -> torch.device:
        """One GPU per process under torchrun (``cuda:LOCAL_RANK``); CPU stays CPU."""
        if requested.type == "cuda" and self.enabled:
            if self.local_rank >= torch.cuda.device_count():
                raise IFSegError(
                    f"LOCAL_RANK {self.local_rank} but only {torch.cuda.device_count()} GPUs; lower torchrun "
                    f"--nproc_per_node"
                )
            return torch.device("cuda", self.local_rank)
        return requested

    def init(self, device: torch.device) -> None:
        if self.enabled and not dist.is_initialized():
            if device.type == "cuda":
                torch.cuda.set_device(device)
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()

    @contextlib.contextmanager
    def collectives(self) -> Iterator[None]:
        """Report a backend error inside the block (collectives run there) as :class:`PeerFailure`."""
        if not self.enabled:
            yield
            return
        try:
            yield
        except RuntimeError as e:  # torch.distributed.DistError and Gloo's plain RuntimeErrors
            text = str(e).strip()
            raise PeerFailure(text.splitlines()[0][:200] if text else type(e).__name__) from e

    def barrier(self) -> None:
        if self.enabled:
            with self.collectives():
                dist.barrier()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """Average of a tensor over all processes."""
        if not self.enabled:
            return value
        value = value.clone()
        with self.collectives():
            dist.all_reduce(value)
        return value / self.world_size
