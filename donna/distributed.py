"""Data-parallel finetuning under ``torchrun``: the process group, this process's rank, and what ranks share.

``torchrun --nproc-per-node N -m donna.cli finetune ...`` starts N copies of the command with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set. Each copy trains the same model on its share of every batch
(``DistributedDataParallel`` averages the gradients: gloo on CPU, NCCL on GPUs, one GPU per local rank), so a
step sees the same global batch whatever N is, the learning-rate schedule counts the same steps and a
checkpoint resumes under any process count. Only rank 0 writes files, holds the run folder's lock and writes
``run.log``; the others train and exit when rank 0 has finished.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Iterator
from typing import Any

import torch


def launched() -> bool:
    """Whether this process is one of several that ``torchrun`` started."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank() -> int:
    """This process's rank (0 when not distributed)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return int(os.environ.get("RANK", "0")) if launched() else 0


def world() -> int:
    """The number of processes training together (1 when not distributed)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this process writes the files (rank 0, or the only process)."""
    return rank() == 0


@contextlib.contextmanager
def process_group(timeout_minutes: float = 60.0) -> Iterator[None]:
    """The process group of a ``torchrun`` launch for the ``with`` block (nothing without one); at its end every
    rank waits for the others, so rank 0's writing after training is not cut short.

    Raises:
        RuntimeError: torch was built without ``torch.distributed``.
    """
    import torch.distributed as dist

    if not launched() or dist.is_initialized():
        yield
        return
    if not dist.is_available():
        raise RuntimeError("this torch has no torch.distributed: run `donna finetune` without torchrun")
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=timeout_minutes))
    try:
        yield
        dist.barrier()
    finally:
        dist.destroy_process_group()


def from_main(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (``value`` itself when not distributed)."""
    if world() == 1:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean(value: float) -> float:
    """The mean of ``value`` over the ranks."""
    if world() == 1:
        return value
    import torch.distributed as dist

    total = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total.item()) / world()


def shard(index: torch.Tensor) -> torch.Tensor:
    """This rank's share of a batch's example indices (every rank takes the whole batch when it has fewer examples
    than ranks, so no rank steps without data)."""
    n = world()
    return index if n == 1 or len(index) < n else index[rank()::n]
