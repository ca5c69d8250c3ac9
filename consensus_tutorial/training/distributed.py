"""Several processes, one consensus: what the trainer does under ``torchrun``.

``torchrun --nproc_per_node=N -m consensus_tutorial train ...`` starts N copies of the same
command; each reads its place from the environment (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``). Each process trains on its shard of every global batch
(:class:`~consensus_tutorial.data.BatchLoader`), and what makes the result *one*
sub-network is reduced across the processes:

* the batch means ``pbar`` and ``q`` that the polarizer and the sparsity target act on:
  averaged with a differentiable all-reduce, because both terms are non-linear in the
  mean (the mean of per-shard penalties is not the penalty of the mean);
* each gate's running firing rate: averaged after every step (the moving average is
  linear, so this is the moving average of the global batch's rates). DistributedDataParallel's
  own ``broadcast_buffers`` would instead copy rank 0's rates over everyone's: it is off;
* the logged loss terms, summed on the device and reduced once per epoch.

The gradients are averaged by DistributedDataParallel. Masks, the settle decision and the
cut all derive from the reduced firing rates, so every process holds the same mask (the
history records ``mask_agreement``, checked across processes every epoch). Evaluation,
checkpoints and the run folder's files come from rank 0; every process restores its own
random-number state on resume.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ``world`` processes of a run."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def is_main(self) -> bool:
        """Rank 0 evaluates and writes the run folder."""
        return self.rank == 0


def from_environment() -> Ranks:
    """The ranks ``torchrun`` set in the environment (one process when it did not)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return Ranks(int(os.environ.get("RANK", "0")), world, int(os.environ.get("LOCAL_RANK", "0")),
                 int(os.environ.get("LOCAL_WORLD_SIZE", str(world))))


def start(ranks: Ranks, device: torch.device) -> bool:
    """Join the process group of a run of several processes (gloo on the CPU, nccl on
    CUDA); True if this call started it (and should end it with :func:`stop`)."""
    if ranks.world == 1 or dist.is_initialized():
        return False
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank, world_size=ranks.world)
    return True


def stop(started: bool) -> None:
    if started and dist.is_initialized():
        dist.destroy_process_group()


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank in the running group (0 outside one)."""
    return dist.get_rank() if active() else 0


def world() -> int:
    """The number of processes of the running group (1 outside one)."""
    return dist.get_world_size() if active() else 1


def mean_across_ranks(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the processes, differentiable (the gradient reaching each
    process's ``t`` is that of the mean); ``t`` itself with one process."""
    if not active():
        return t
    with warnings.catch_warnings():  # the documented differentiable all-reduce, deprecated for a private one
        warnings.simplefilter("ignore", FutureWarning)
        from torch.distributed.nn.functional import all_reduce

        return all_reduce(t) / dist.get_world_size()


@torch.no_grad()
def average_buffers(buffers: list[torch.Tensor]) -> None:
    """Replace each tensor by its mean over the processes (one all-reduce for all)."""
    if not active() or not buffers:
        return
    flat = torch.cat([b.reshape(-1).float() for b in buffers])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for b, part in zip(buffers, torch.split(flat, [b.numel() for b in buffers])):
        b.copy_(part.view_as(b))


def sum_across_ranks(values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum a dict of scalar tensors over the processes (one all-reduce)."""
    if not active() or not values:
        return values
    stacked = torch.stack([v.detach().float().reshape(()) for v in values.values()])
    dist.all_reduce(stacked)
    return dict(zip(values, stacked))


def gather_objects(obj) -> list:
    """Every process's ``obj``, in rank order (``[obj]`` with one process)."""
    if not active():
        return [obj]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    if active():
        dist.barrier()


def wrap(net: nn.Module, device: torch.device, unused_parameters: bool = False) -> nn.Module:
    """``net`` in DistributedDataParallel for a run of several processes (``net`` itself
    with one). Buffers are not copied from rank 0 in the forward passes (the firing rates
    are averaged instead; they are equal at the start, where DDP checks them); with
    ``unused_parameters`` (a frozen gate gets no gradient) DDP looks for them every step."""
    if not active():
        return net
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(net, device_ids=ids, forward_sync_buffers=False,
                                               find_unused_parameters=unused_parameters)


def unwrap(net: nn.Module) -> nn.Module:
    """The network inside a DistributedDataParallel wrapper (``net`` itself otherwise)."""
    return net.module if isinstance(net, nn.parallel.DistributedDataParallel) else net
