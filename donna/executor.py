"""A small executor interface for independent jobs (one per slot, option or architecture).

Jobs are plain ``(function, args)`` pairs whose function is importable at module level and whose results
are written to the run folder by the job itself, so a distributed engine (Ray: ``ray.remote(fn)``, one
task per job, ``ray.get`` in order) can take them later without a redesign. The default runs them
in-process, one after the other, in submission order; ``threads`` overlaps them on a thread pool.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from common.registry import Registry


@dataclass(frozen=True)
class Job:
    """One independent unit of work: ``fn(*args, **kwargs)``."""

    name: str  # shown in progress output and errors, e.g. "bkd slot 2"
    fn: Callable[..., Any]  # a module-level function (picklable for remote executors)
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)

    def run(self) -> Any:
        """Runs the job here and returns its result."""
        return self.fn(*self.args, **self.kwargs)


class Executor:
    """Runs a list of jobs and returns their results in the order given."""

    name = "base"

    def map(self, jobs: Sequence[Job]) -> list[Any]:
        """Runs every job; the results come back in the order of ``jobs``."""
        return [self.run_one(job) for job in jobs]

    def run_one(self, job: Job) -> Any:
        """Hook: runs a single job (subclasses send it elsewhere)."""
        raise NotImplementedError

    def completed(self, jobs: Sequence[Job]) -> Iterator[tuple[int, Any]]:
        """Yields ``(index, result)`` as jobs finish (in order here; executors running jobs at once override it),
        so a caller can write each result to the run folder as soon as it exists."""
        for i, job in enumerate(jobs):
            yield i, self.run_one(job)


class InProcessExecutor(Executor):
    """Runs jobs one after the other in this process (the default; shares in-memory tensors for free)."""

    name = "inprocess"

    def run_one(self, job: Job) -> Any:
        return job.run()


class ThreadExecutor(Executor):
    """Runs jobs on a pool of threads in this process (torch ops release the GIL, so jobs overlap).

    Pair it with one torch thread per job on a small CPU machine: several single-threaded jobs waste less
    time waiting on each other than one job whose two OpenMP threads fight other processes for two cores.

    Args:
        workers: number of jobs running at once; default the cores this process may use.
    """

    name = "threads"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or cpu_count()

    def map(self, jobs: Sequence[Job]) -> list[Any]:
        if self.workers <= 1 or len(jobs) <= 1:
            return [job.run() for job in jobs]
        lines: queue.SimpleQueue[int] = queue.SimpleQueue()
        for line in range(min(self.workers, len(jobs))):
            lines.put(line)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(_on_own_line, job, lines) for job in jobs]
            return [f.result() for f in futures]

    def run_one(self, job: Job) -> Any:
        return job.run()


_bar_line = threading.local()


def bar_position() -> int | None:
    """The terminal line of this job's progress bar: a fixed line per running job when jobs run on threads at
    once (so their bars never swap or overwrite lines), None (tqdm's own choice) otherwise."""
    return getattr(_bar_line, "position", None)


def _on_own_line(job: Job, lines: queue.SimpleQueue[int]) -> Any:
    """Runs ``job`` holding one free bar line (at most one per running thread, so one is always free)."""
    _bar_line.position = lines.get()
    try:
        return job.run()
    finally:
        lines.put(_bar_line.position)
        _bar_line.position = None


def _worker_init() -> None:
    import signal

    import torch

    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle: it cancels and cleans up


class ProcessExecutor(Executor):
    """Runs jobs in a pool of worker processes (one torch thread each): for jobs that use the global
    RNG (training seeds it per epoch), which threads would share. Arguments travel pickled; a job's result is
    the same as in-process because every job seeds what it draws.

    Args:
        workers: processes running at once; default the cores this process may use.
    """

    name = "processes"

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or cpu_count()

    def run_one(self, job: Job) -> Any:
        return job.run()

    def completed(self, jobs: Sequence[Job]) -> Iterator[tuple[int, Any]]:
        if self.workers <= 1 or len(jobs) <= 1:
            yield from super().completed(jobs)
            return
        import multiprocessing

        # fork, as torch's DataLoader does on Linux: spawn would re-import a user's unguarded __main__ script
        context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        with ProcessPoolExecutor(max_workers=min(self.workers, len(jobs)), mp_context=context,
                                 initializer=_worker_init) as pool:
            pending = {pool.submit(job.fn, *job.args, **job.kwargs): i for i, job in enumerate(jobs)}
            try:
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for future in finished:
                        yield pending.pop(future), future.result()
            finally:
                for future in pending:
                    future.cancel()

    def map(self, jobs: Sequence[Job]) -> list[Any]:
        results: list[Any] = [None] * len(jobs)
        for i, result in self.completed(jobs):
            results[i] = result
        return results


def cpu_count() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


EXECUTORS: Registry[type[Executor]] = Registry("executor")
EXECUTORS.register("inprocess", InProcessExecutor)
EXECUTORS.register("threads", ThreadExecutor)
EXECUTORS.register("processes", ProcessExecutor)


def list_executors() -> list[str]:
    """Names accepted by ``get_executor``."""
    return EXECUTORS.names()


def get_executor(name: str = "inprocess") -> Executor:
    """A new executor by registry name (unknown names list the known ones)."""
    return EXECUTORS.create(name)
