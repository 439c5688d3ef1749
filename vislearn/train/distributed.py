"""Data-parallel training under ``torchrun``: one process per device, each on a shard of every batch.

``torchrun --nproc-per-node N -m vislearn.train NAME ...`` starts N copies of the program and
tells each its place through the environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).
``process_group(device)`` joins them (gloo on the CPU, nccl on CUDA, one GPU per process:
``cuda:LOCAL_RANK``) and always leaves the group again, even after an error.

Every process then runs the same loop on the same data, in the same order (same seed, same
generator), and takes its slice of each *global* batch (``shard``): rank r of N gets images
``[r B/N, (r+1) B/N)``. The model is wrapped in PyTorch's ``DistributedDataParallel`` (``wrap``),
which averages the gradients over the processes during the backward pass: the mean of N equal
shards' mean-loss gradients *is* the gradient of the global batch's mean loss, so the optimizer
takes the step one process would take with the whole batch, on every rank alike. The learning rate
belongs to the global batch (``batch_size`` in the recipe): it needs no rescaling when N changes.

What is not the same as one process: BatchNorm layers (the convnet teacher, XCiT's LPI) normalize
with their shard's statistics, not the global batch's (DDP keeps rank 0's running averages and
sends them to every rank); per-sample randomness drawn from torch's global generator (drop path,
dropout) is seeded per rank, so it is statistically, not bitwise, the same. Augmentations use the
loops' own seeded generator on the whole global batch, so every shard sees exactly the images one
process would. Each process augments the whole batch (cheap next to the model) to keep that so.

DDP reduces gradients only for work that goes through the wrapper's ``forward``: a loss function
gets the wrapper and calls it (``model(x)``); what it needs of the model itself (a method, a switch)
it takes from ``unwrap(model)``. DINO wraps its student in a module whose ``forward`` takes all the
crops (``DINO.student_views``).

Without ``torchrun`` (no ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment, or no group) every
helper here is a no-op that returns its input, without a single ``torch.distributed`` call: one
process, a notebook or a test, runs exactly as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from ..config import ParameterError


def launched() -> bool:
    """True in a process started by ``torchrun`` (or anything that sets its environment variables)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))


def active() -> bool:
    """True when this process was launched by torchrun and joined its process group. Checks the
    environment first: a process outside torchrun never calls ``torch.distributed`` at all."""
    return launched() and dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Number of processes training together (1 without a group)."""
    return dist.get_world_size() if active() else 1


def rank() -> int:
    """This process's place among them, 0 to world_size() - 1 (0 without a group)."""
    return dist.get_rank() if active() else 0


def is_main() -> bool:
    """Rank 0: the process that prints, shows the progress bar and writes files."""
    return rank() == 0


def rank_label() -> str:
    """``"rank 1 of 2: "`` in a torchrun launch of several processes (for error messages), else ``""``."""
    if launched() and int(os.environ["WORLD_SIZE"]) > 1:
        return f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}: "
    return ""


def local_device(device: torch.device) -> torch.device:
    """In a torchrun launch a CUDA device means this process's GPU, ``cuda:LOCAL_RANK``."""
    if launched() and device.type == "cuda":
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


@contextmanager
def process_group(device: torch.device | str = "cpu") -> Iterator[torch.device]:
    """Join the torchrun job for the block (gloo on CPU, nccl on CUDA) and leave it afterwards.

    Yields the device this process trains on (``cuda:LOCAL_RANK`` on CUDA). Outside torchrun, or
    when a group is already initialized, it does nothing and yields ``device``.
    """
    device = local_device(torch.device(device))
    if not launched() or active():
        yield device
        return
    if not dist.is_available():
        raise ParameterError("this torch build has no torch.distributed: run without torchrun")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            **({"device_id": device} if device.type == "cuda" else {}))
    try:
        yield device
    finally:
        dist.destroy_process_group()


def check_batch(batch_size: int) -> int:
    """The per-process batch of a global ``batch_size``; a clear error when it does not divide."""
    n = world_size()
    if batch_size % n:
        raise ParameterError(f"batch_size={batch_size} must be a multiple of the {n} processes "
                             f"(it is the global batch, split evenly); use e.g. {batch_size // n * n or n}")
    return batch_size // n


def shard(batch: torch.Tensor) -> torch.Tensor:
    """This process's equal slice of a global batch (B, ...) -> (B / N, ...); itself in one process."""
    n = world_size()
    if n == 1:
        return batch
    k = check_batch(len(batch))
    r = rank()
    return batch[r * k:(r + 1) * k]


def mean(t: torch.Tensor) -> torch.Tensor:
    """The mean of ``t`` over the processes (a new tensor); ``t`` itself in one process."""
    if world_size() == 1:
        return t
    t = t.detach().clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world_size()


def mean_floats(values: list[float]) -> list[float]:
    """Each number averaged over the processes (one all-reduce); the list itself in one process."""
    if world_size() == 1:
        return values
    return mean(torch.tensor(values, dtype=torch.float64)).tolist()


def any_true(flag: bool) -> bool:
    """True on every process when it is true on one (so that all stop at the same step)."""
    if world_size() == 1:
        return flag
    t = torch.tensor([float(flag)])
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def wrap(module: nn.Module, device: torch.device | str = "cpu") -> nn.Module:
    """``DistributedDataParallel(module)`` in a torchrun job of several processes; ``module`` itself
    otherwise. Call the result for the training forward pass; the gradients of ``module``'s
    parameters come out averaged over the processes after ``backward``."""
    if world_size() == 1:
        return module
    device = torch.device(device)
    return nn.parallel.DistributedDataParallel(module, device_ids=[device] if device.type == "cuda" else None)


def unwrap(module: nn.Module) -> nn.Module:
    """The model inside a ``wrap`` (itself when it is not wrapped)."""
    return module.module if isinstance(module, nn.parallel.DistributedDataParallel) else module


def start_together(module: nn.Module, seed: int) -> None:
    """Before training: copy rank 0's parameters and buffers to every process (they start equal),
    and seed torch's global generator with ``seed + rank``, so that per-sample randomness drawn
    from it (drop path, dropout) differs between shards. No-op in one process."""
    if world_size() == 1:
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)
    torch.manual_seed(seed + rank())


def barrier() -> None:
    """Wait until every process gets here (no-op in one process)."""
    if world_size() > 1:
        dist.barrier()
