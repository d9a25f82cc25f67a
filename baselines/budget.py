"""Memory of a gradient search step: measured at two small batches, predicted per batch, fitted to a budget.

On a CPU the measure is the process's resident set: the kernel's peak (``VmHWM`` in
``/proc/self/status``) is reset before a step (``/proc/self/clear_refs``) and read after it, with
glibc's free pages handed back first (``malloc_trim``) so that freed activations do not hide in the
heap. On CUDA it is ``torch.cuda.max_memory_allocated``. A step's peak is modelled as
``base + extra + fixed + per_sample * batch``: ``base`` is what is held before the step, ``extra``
state the step does not allocate yet (optimiser momentum), ``fixed + per_sample * batch`` the
step's own peak, fitted on the two probes; a prediction adds ``SLACK`` and scales the step's part
by ``MARGIN``. Resetting ``VmHWM`` also resets what ``ru_maxrss`` and ``/usr/bin/time`` report.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

GIB = 2 ** 30
CPU_SHARE = 0.5  # default CPU budget: what the process holds plus this share of the machine's available memory
CUDA_SHARE = 0.8  # default CUDA budget: what torch holds plus this share of the device's free memory
PROBE_BATCHES = (4, 16)  # the two batches a step is measured at
MARGIN = 1.1  # the predicted step peak is scaled by this before it is compared with a budget
SLACK = 64 * 2 ** 20  # bytes added for what a whole search holds beyond one probed step (data batches, allocator)
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
HEAP_MMAP_THRESHOLD = 128 * 1024  # blocks from this size are mmapped (glibc's default, here fixed)


def _status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_bytes() -> int:
    """The process's resident set now (``VmRSS``); falls back to the lifetime peak where /proc is missing."""
    kib = _status_kib("VmRSS")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def peak_rss_bytes() -> int:
    """The process's peak resident set since start or the last ``reset_peak_rss`` (``VmHWM``)."""
    kib = _status_kib("VmHWM")
    if kib is None:
        import resource

        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kib * 1024


def reset_peak_rss() -> bool:
    """Resets the kernel's peak resident set of this process to its current one; False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def trim_heap() -> None:
    """Hands glibc's free heap pages back to the kernel (no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError, TypeError):
        ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim(0)


def limit_heap_retention(threshold: int = HEAP_MMAP_THRESHOLD) -> bool:
    """Fixes glibc's mmap threshold so that freed activations go back to the kernel; False where not glibc.

    glibc raises the threshold after every freed large block, so that later activations of that
    size come from the heap, which keeps them resident after they are freed; a search then grows
    its resident set step by step. Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``) keeps the
    resident set close to the live tensors. It applies to the whole process.
    """
    with contextlib.suppress(OSError, AttributeError, TypeError):
        return bool(ctypes.CDLL(ctypes.util.find_library("c")).mallopt(M_MMAP_THRESHOLD, int(threshold)))
    return False


def available_bytes() -> int:
    """The machine's available memory (``MemAvailable`` of ``/proc/meminfo``).

    Raises:
        ValueError: /proc/meminfo is missing (not Linux); pass ``memory_gb`` explicitly there.
    """
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    raise ValueError("cannot read MemAvailable from /proc/meminfo; pass memory_gb=<GB> to the searcher")


def held_bytes(device: torch.device) -> int:
    """What the search already holds: the process's resident set on a CPU, torch's allocation on CUDA."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device)
    return rss_bytes()


def default_budget(device: torch.device) -> tuple[int, str]:
    """A safe budget in bytes and how it was made: held memory plus a share of what is free."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        held = torch.cuda.memory_allocated(device)
        return int(held + CUDA_SHARE * free), f"held {held / GIB:.2f} GB + {CUDA_SHARE:g} x free {free / GIB:.2f} GB"
    held, free = rss_bytes(), available_bytes()
    return int(held + CPU_SHARE * free), f"held {held / GIB:.2f} GB + {CPU_SHARE:g} x available {free / GIB:.2f} GB"


def measure_peak(step: Callable[[], Any], device: torch.device) -> int:
    """Absolute peak bytes while ``step()`` runs (resident set on a CPU, allocated memory on CUDA)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device)
    trim_heap()
    reset_peak_rss()
    step()
    return peak_rss_bytes()


@dataclass(frozen=True)
class StepMemory:
    """Peak memory of one search step as a function of the batch, in bytes."""

    device: str  # "cpu" (resident set) or "cuda" (allocated)
    base: int  # held before the step
    extra: int  # state the step does not allocate yet (optimiser momentum), counted in
    fixed: int  # the step's own peak at batch 0 (fitted)
    per_sample: float  # the step's own peak per sample (fitted)
    probes: dict[int, int] = field(default_factory=dict)  # batch -> measured peak over base

    def predict(self, batch: int) -> int:
        """Predicted peak at ``batch``: held + extra + ``SLACK`` + the step's own part scaled by ``MARGIN``."""
        return int(self.base + self.extra + SLACK + MARGIN * (self.fixed + self.per_sample * batch))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, in GB."""
        out = {k: v for k, v in asdict(self).items() if k != "probes"}
        for key in ("base", "extra", "fixed", "per_sample"):
            out[key + "_gb"] = round(out.pop(key) / GIB, 6)
        out["probes_gb"] = {str(b): round(v / GIB, 4) for b, v in self.probes.items()}
        return out


def fit_step_memory(step_at: Callable[[int], Any], device: torch.device, extra: int = 0,
                    batches: tuple[int, int] = PROBE_BATCHES) -> StepMemory:
    """Measures ``step_at(b)`` at two batches and fits ``fixed + per_sample * batch`` to its peak over what is held.

    Args:
        step_at: runs one step at the given batch (and frees what it made).
        device: where the step runs.
        extra: bytes of state the probed step does not allocate but the real search will (momentum).
        batches: the two probe batches, ascending.
    """
    trim_heap()
    base = held_bytes(device)
    peaks = {b: max(measure_peak(lambda b=b: step_at(b), device) - base, 0) for b in batches}
    (b1, p1), (b2, p2) = peaks.items()
    slope = max((p2 - p1) / (b2 - b1), 0.0)
    fixed = max(p1 - slope * b1, p2 - slope * b2, 0.0)
    return StepMemory(device.type, base, int(extra), int(fixed), float(slope), peaks)


def largest_batch(step: StepMemory, budget: int, max_batch: int, searcher: str, hints: str = "") -> int:
    """The largest batch up to ``max_batch`` whose predicted peak fits ``budget`` bytes.

    Raises:
        ValueError: even batch 1 does not fit (one line: what it needs and the settings that would fit).
    """
    need = step.predict(1)
    if need > budget:
        raise ValueError(f"{searcher}: even batch 1 needs about {need / GIB:.2f} GB on {step.device} (of which "
                         f"{step.base / GIB:.2f} GB were held before the search) but memory_gb={budget / GIB:.2f}; "
                         f"set memory_gb>={math.ceil(need / GIB * 100) / 100:.2f}{hints}")
    if step.per_sample <= 0:
        return max_batch
    room = (budget - step.base - step.extra - SLACK) / MARGIN - step.fixed
    return int(max(1, min(max_batch, math.floor(room / step.per_sample))))
