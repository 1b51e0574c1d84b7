"""Data-parallel training over processes started by torchrun: the process group, each rank's share of a split,
DistributedDataParallel steps, and rank-0-only writes.

Under torchrun (``WORLD_SIZE > 1``) every rank runs the same (run, seed) job on its own share of the train
split and DDP averages the gradients, so the ranks hold identical weights after every step. ``train.batch_size``
stays the GLOBAL batch: each rank reads ``batch_size // world_size`` rows a step, so the optimisation (lr,
steps per epoch) is that of one process at the same batch size. Shares are dealt with ``partition="sample"``
(:mod:`mmdata.shards.plan`): rank ``r`` takes rows ``r::world_size`` of one seeded global order, so the union
of the ranks' batch ``b`` is exactly batch ``b`` of one process reading the same order at the global batch
(when the split's rows divide by the world size; otherwise the short ranks pad one repeated row, counted in
``Loader.padded``), and no rank runs more steps than another (an uneven epoch hangs the collectives).
Validation splits are read whole by every rank: the ranks then pick the same best epoch from the same loss.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import distributed as dist
from torch import nn

from mmdata.errors import ConfigError


def launched() -> bool:
    """Whether torchrun started this process as one of several (``WORLD_SIZE > 1`` in the environment)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def under_torchrun() -> bool:
    """Whether this process is a torchrun worker at all (any world size): it must not launch torchrun again."""
    return "LOCAL_RANK" in os.environ or "RANK" in os.environ


def active() -> bool:
    """Whether a process group of more than one rank is initialised (the training is data-parallel)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """Ranks training together (1 without a process group)."""
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process writes the outputs (rank 0, or the only process)."""
    return rank() == 0


def on_main(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` on rank 0 (or in one process); a no-op on the other ranks (their log lines would repeat it)."""
    return lambda *args: fn(*args) if is_main() else None


def init(device: torch.device) -> torch.device:
    """Join torchrun's process group (``env://``): nccl with one GPU per local rank on CUDA, gloo on CPU.

    Returns:
        The device this rank trains on (``cuda:<LOCAL_RANK>`` on CUDA, so "cuda" resolves to it).
    """
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        device = torch.device("cuda", torch.cuda.current_device())
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Inside: torchrun's process group joined (:func:`init`) when torchrun started several processes, else
    nothing. On leaving, every rank waits at a barrier (rank 0's files are then complete), then leaves."""
    if not launched():
        yield
        return
    init(device)
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank; a no-op in one process."""
    if active():
        dist.barrier()


def share(split: str, batch_size: int) -> dict[str, Any]:
    """``mmdata.load`` options for this rank's share of ``split`` at the global ``batch_size``.

    One process: ``{"batch_size": batch_size}`` (the loader's defaults, as before DDP). Under DDP the train
    split is dealt by sample at ``batch_size // world_size`` rows per rank; any other split is read whole.

    Raises:
        ConfigError: a global batch size the world size does not divide.
    """
    if not active():
        return {"batch_size": batch_size}
    if split != "train":
        return {"batch_size": batch_size, "rank": 0, "world_size": 1}
    ranks = world_size()
    if batch_size % ranks:
        raise ConfigError(f"train.batch_size in params.yaml is the global batch ({batch_size}); it must divide by "
                          f"the {ranks} ranks (train.nproc / torchrun --nproc_per_node)")
    return {"batch_size": batch_size // ranks, "partition": "sample"}


class _Step(nn.Module):
    """A step function as a module, so DDP's forward runs the method's whole step (whatever submodules and
    methods of the model it calls) and registers the backward that follows for gradient averaging."""

    def __init__(self, model: nn.Module, step: Callable[..., dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.model, self.step = model, step

    def forward(self, batch: dict[str, Any], tuples: Any) -> dict[str, torch.Tensor]:
        return self.step(self.model, batch, tuples)


def data_parallel(step: Callable[..., dict[str, torch.Tensor]], model: nn.Module,
                  device: torch.device) -> Callable[..., dict[str, torch.Tensor]]:
    """``step`` itself in one process; under DDP the same step through ``DistributedDataParallel``.

    DDP broadcasts rank 0's weights and buffers at construction and averages the gradients over the ranks
    in ``backward``. ``find_unused_parameters``: a phase may train part of the model (ReFNet's refiners).
    """
    if not active():
        return step
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(_Step(model, step), device_ids=ids, find_unused_parameters=True)
    return lambda _model, batch, tuples: ddp(batch, tuples)


def all_mean(tensors: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Each tensor averaged over the ranks (gradients a method computes itself, e.g. MDM's critic steps);
    the tensors unchanged in one process."""
    tensors = list(tensors)
    if not active():
        return tensors
    for tensor in tensors:
        dist.all_reduce(tensor)
        tensor.div_(dist.get_world_size())
    return tensors


def all_sum(total: torch.Tensor, count: int) -> tuple[torch.Tensor, int]:
    """``(total, count)`` summed over the ranks (an epoch's loss sum and samples); unchanged in one process."""
    if not active():
        return total, count
    both = torch.stack([total.double(), torch.tensor(float(count), dtype=torch.float64, device=total.device)])
    dist.all_reduce(both)
    return both[0], int(both[1])


def torchrun(module: str, args: list[str], nproc: int) -> int:
    """Run ``python -m module args`` in ``nproc`` processes under torchrun on this machine; its exit status.

    ``--standalone``: a rendezvous on a free local port, so two stages on one machine do not collide.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", module, *args]
    print(f"{module}: {nproc} processes: {' '.join(command[1:])}", flush=True)
    return subprocess.run(command, check=False).returncode
