"""Data-parallel training without Ray: which rows of a global batch this process trains on,
the DDP wrapping of a model, and the all-reduce of step losses and epoch statistics.

Every process draws the same global batch (same order, same smoothing noise: data.py's
generators depend only on (seed, epoch)) and keeps its contiguous slice of rows, so N
processes see exactly the images one process would in the same step. The loss of a
slice is scaled so that DDP's gradient average equals the gradient of the global batch
mean, also for an uneven last batch. Who launches the processes (Ray Train,
torch.multiprocessing in the tests) and initializes the process group is not this module's
concern; with world_size 1 nothing here touches torch.distributed.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shard:
    """This process's place in data-parallel training: rank in 0..world_size-1."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_process_group(cls) -> "Shard":
        """The initialized default process group's rank and size; a single process without one."""
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 evaluates, reports and checkpoints; the others only train."""
        return self.rank == 0

    def rows(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """This rank's contiguous slice of every tensor of a global batch (B, ...) -> (b, ...).

        Slices differ in size by at most one row (torch.tensor_split), so a last batch that
        N does not divide is still split over all ranks; a slice may be empty when B < N.
        """
        if not self.distributed:
            return batch
        return tuple(t.tensor_split(self.world_size)[self.rank] for t in batch)

    def loss_scale(self, local_rows: int, global_rows: int) -> float:
        """Factor on this rank's summed loss so that DDP's average of the ranks' gradients is
        the gradient of the global batch's mean: mean_r(N * sum_r / B) = sum / B."""
        return self.world_size / global_rows if self.distributed else 1.0 / local_rows

    def all_reduce(self, value: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """Sum (or max) of `value` over the ranks, as a new tensor. With NCCL the tensor must be
        on this rank's GPU, with gloo on the CPU or GPU; callers pass it on the training device."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        total = value.detach().clone()
        dist.all_reduce(total, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
        return total

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module that trains: DDP over `model` when distributed (it shares the parameters,
        so state_dicts still come from `model`), else `model` itself."""
        if not self.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


SINGLE = Shard()


def dropout_seed(seed: int, epoch: int, rank: int) -> int:
    """The global-RNG seed of one rank's epoch when distributed: every rank's dropout masks
    differ (one seed would repeat the same mask on every slice) and a resumed epoch redraws them."""
    return ((seed * 1_000_003 + epoch) * 7919 + 101 * (rank + 1)) % (2**63 - 1)
