"""The torch device tensors live on (CUDA when available, else CPU) and a sensible CPU thread count.

A *latency* device is something else: a profile name resolved by ``latency.measure.resolve_profile``.
"""

from __future__ import annotations

import os

import torch


def torch_device(name: str | None = "auto") -> torch.device:
    """The torch device to train or run on.

    Args:
        name: ``"auto"`` or None (CUDA when available, else CPU), or any ``torch.device`` string (``"cpu"``,
            ``"cuda"``, ``"cuda:1"``).

    Returns:
        The chosen ``torch.device``.

    Raises:
        ValueError: CUDA was asked for but is not available.
    """
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for but CUDA is not available here; use --device cpu or auto")
    return device


def set_threads(threads: int | None = None) -> int:
    """Sets torch's intra-op CPU threads and returns the count.

    Default: ``$OMP_NUM_THREADS`` when set (the usual knob; the test suite sets 1), else the cores this
    process may use. On a busy 2-core machine two threads can be 100x slower than one for these small
    convolutions (spin-waiting threads), so set ``OMP_NUM_THREADS=1`` when other work shares the cores.
    """
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").isdigit():
        threads = int(os.environ["OMP_NUM_THREADS"])
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, int(threads))
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    return threads


class torch_threads:  # noqa: N801 - used like a function: ``with torch_threads(1): ...``
    """Context manager: torch uses ``threads`` CPU threads inside, the previous count after."""

    def __init__(self, threads: int | None) -> None:
        self.threads, self.previous = threads, torch.get_num_threads()

    def __enter__(self) -> int:
        return set_threads(self.threads)

    def __exit__(self, *exc: object) -> None:
        torch.set_num_threads(self.previous)


def make_optimizer(cls: type[torch.optim.Optimizer], params, *args, **kwargs) -> torch.optim.Optimizer:
    """``cls(params, *args, **kwargs)``, fused into one kernel per step where torch supports it.

    The fused implementations (Adam, AdamW, SGD; CPU and CUDA) give the same update as the per-tensor
    loop up to float rounding. On the CPU the loop costs about 12 ms per AdamW step for the reference
    member's 203 tensors against 2 ms fused (``benchmarks/omp_policy.py`` shows the step-time difference), which is
    several seconds per teacher epoch. Optimisers, devices or dtypes without a fused version get the
    ordinary one.
    """
    params = list(params)
    try:
        return cls(params, *args, fused=True, **kwargs)
    except (TypeError, RuntimeError, ValueError):  # no ``fused`` argument, or not for these tensors
        return cls(params, *args, **kwargs)
