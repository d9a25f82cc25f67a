"""A small executor interface for independent jobs (one per slot, option or architecture).

Jobs are plain ``(function, args)`` pairs whose function is importable at module level. A job returns its
result (a slot's weights, a slot's NSR rows, a label row) and the driver writes it to the run folder as it
lands (``Executor.completed``), so jobs may run on other machines. The default runs them in-process, one
after the other, in submission order; ``threads`` overlaps them on a thread pool, ``processes`` on worker
processes, and ``ray`` runs them as Ray tasks on a local or remote cluster (the optional ``ray`` extra).
"""

from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

from common.registry import Registry

log = logging.getLogger(__name__)


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
    shares_files = True  # jobs run on this machine and can read the run folder (Ray's may run elsewhere)

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

    @classmethod
    def from_config(cls, cfg: Any) -> Executor:
        """The executor a stage config asks for (hook: an executor reads the settings it needs from ``cfg``)."""
        return cls()


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
        return _in_order(self.completed(jobs), len(jobs))

    def run_one(self, job: Job) -> Any:
        return job.run()

    def completed(self, jobs: Sequence[Job]) -> Iterator[tuple[int, Any]]:
        if self.workers <= 1 or len(jobs) <= 1:
            yield from super().completed(jobs)
            return
        lines: queue.SimpleQueue[int] = queue.SimpleQueue()
        for line in range(min(self.workers, len(jobs))):
            lines.put(line)
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            yield from _as_completed({pool.submit(_on_own_line, job, lines): i for i, job in enumerate(jobs)})


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
            warned = []

            def run_here(i: int, err: BaseException) -> Any:
                if not _bad_autograd_fork(err):
                    raise err
                if not warned:
                    log.warning("a worker process could not run backward (this process started autograd's "
                                "threads before the workers were forked); such jobs run in this process")
                    warned.append(True)
                return jobs[i].run()

            yield from _as_completed({pool.submit(job.fn, *job.args, **job.kwargs): i for i, job in enumerate(jobs)},
                                     rescue=run_here)

    def map(self, jobs: Sequence[Job]) -> list[Any]:
        return _in_order(self.completed(jobs), len(jobs))


_AUTOGRAD_FORK = "autograd's threading in combination with fork"  # torch's error in a child forked too late


def _bad_autograd_fork(err: BaseException) -> bool:
    """Whether a forked worker failed only because this process had started autograd's threads before the
    fork (torch refuses backward in such a child); the job itself is fine and runs here instead."""
    return isinstance(err, RuntimeError) and _AUTOGRAD_FORK in str(err)


def _as_completed(pending: dict[Future, int],
                  rescue: Callable[[int, BaseException], Any] | None = None) -> Iterator[tuple[int, Any]]:
    """``(index, result)`` of futures as they finish; the ones not started are cancelled when the caller stops.
    ``rescue(index, error)``, when given, answers for a job that raised (and re-raises what it cannot)."""
    try:
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                index = pending.pop(future)
                err = future.exception()
                yield index, future.result() if err is None or rescue is None else rescue(index, err)
    finally:
        for future in pending:
            future.cancel()


def _in_order(completed: Iterable[tuple[int, Any]], count: int) -> list[Any]:
    results: list[Any] = [None] * count
    for i, result in completed:
        results[i] = result
    return results


RAY_EXTRA = "pip install -e '.[ray]'"  # how to install Ray (the optional extra), named in the missing-Ray error


def import_ray() -> Any:
    """The ``ray`` module, imported only when the ``ray`` executor is chosen.

    Raises:
        ValueError: Ray is not installed (the line names the extra that installs it).
    """
    try:
        import ray
    except ImportError:
        raise ValueError(f"executor 'ray' needs Ray, which is not installed here; install the extra: {RAY_EXTRA} "
                         "(or pip install 'donna-nas[ray]')") from None
    return ray


def _ray_job(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int | None, str, Any]:
    """Ray task body: runs one job; returns its attempt number (0 first; None where Ray does not say), its node."""
    import ray

    worker = ray._private.worker.global_worker  # the attempt number has no public API (Ray 2.60)
    get_attempt = getattr(getattr(worker, "core_worker", None), "get_current_task_attempt_number", None)
    try:
        attempt = int(get_attempt()) if get_attempt else None
    except Exception:  # a private call: never let it fail the job
        attempt = None
    return attempt, ray.get_runtime_context().get_node_id(), fn(*args, **kwargs)


class RayExecutor(Executor):
    """Runs every job as a Ray task (one per job) on a local or running Ray cluster; results come back to the
    driver as each task finishes, so the driver alone writes the run folder.

    An argument object passed to several jobs (the teacher, the data, cached logits) goes to Ray's object store
    once (``ray.put``), not once per job. A task whose worker dies (killed, out of memory, node lost) is retried
    up to ``max_retries`` times; ``attempts`` records the attempt count of every job that needed more than one.
    A job that raises fails ``completed`` with the job's own exception. Leaving ``completed`` early (Ctrl-C, an
    error) cancels the outstanding tasks.

    Args:
        address: None starts (or reuses) a Ray instance on this machine; ``auto`` joins the cluster started with
            ``ray start`` here; ``HOST:PORT`` joins that cluster's head.
        num_cpus_per_job: CPUs each task reserves (Ray also sets the task's OMP threads to it).
        max_retries: retries of a task whose worker died (a job that raises is never retried).
        resources: custom resources each task requests, e.g. ``{"device:cpu": 1}``.
        advertise: custom resources this machine offers when the executor starts a local Ray (``address`` None),
            e.g. ``{"device:cpu": 1}`` when the device is attached here.
    """

    name = "ray"
    shares_files = False

    def __init__(self, address: str | None = None, num_cpus_per_job: float = 1, max_retries: int = 2,
                 resources: dict[str, float] | None = None, advertise: dict[str, float] | None = None) -> None:
        self.ray = import_ray()
        self.address, self.num_cpus_per_job, self.max_retries = address, num_cpus_per_job, max_retries
        self.resources, self.advertise = dict(resources or {}), dict(advertise or {})
        self.attempts: dict[str, int] = {}  # job name -> attempts, for jobs retried after a worker died

    @classmethod
    def from_config(cls, cfg: Any) -> RayExecutor:
        return cls(address=getattr(cfg, "ray_address", None), num_cpus_per_job=getattr(cfg, "threads", None) or 1)

    def connect(self) -> Any:
        """Starts or joins Ray once per process (a running ``ray.init`` is reused); returns the module.

        Raises:
            RuntimeError: no node of the cluster advertises a custom resource the tasks request (they would wait
                forever); the message says how a node advertises it.
        """
        if not self.ray.is_initialized():
            local = self.address is None
            self.ray.init(address=self.address, include_dashboard=False if local else None,
                          configure_logging=False, log_to_driver=True,
                          resources=(self.advertise or None) if local else None)
        have = self.ray.cluster_resources()
        lacking = sorted(name for name in self.resources if name not in have and name not in ("CPU", "GPU"))
        if lacking:
            wanted = json.dumps({name: 1 for name in lacking})
            raise RuntimeError(f"no node of the Ray cluster advertises {', '.join(lacking)}: start the node that has "
                               f"it with `ray start --address HEAD:PORT --resources '{wanted}'`")
        return self.ray

    def run_one(self, job: Job) -> Any:
        return self.map([job])[0]

    def map(self, jobs: Sequence[Job]) -> list[Any]:
        return _in_order(self.completed(jobs), len(jobs))

    def completed(self, jobs: Sequence[Job]) -> Iterator[tuple[int, Any]]:
        if not jobs:
            return
        ray = self.connect()
        task = ray.remote(_ray_job)
        shared = self._put_shared(jobs)
        pending = {}
        for i, job in enumerate(jobs):
            args = [shared.get(id(a), a) for a in job.args]
            kwargs = {k: shared.get(id(v), v) for k, v in job.kwargs.items()}
            ref = task.options(name=job.name, num_cpus=self.num_cpus_per_job, max_retries=self.max_retries,
                               retry_exceptions=False, resources=self.resources or None).remote(job.fn, *args, **kwargs)
            pending[ref] = i
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                i = pending.pop(done[0])
                attempt, node, result = self._result(done[0], jobs[i])
                if attempt:
                    self.attempts[jobs[i].name] = attempt + 1
                    log.warning("%s finished on Ray attempt %d (its worker died before); node %s", jobs[i].name,
                                attempt + 1, node[:12])
                yield i, result
        finally:
            for ref in pending:  # Ctrl-C, a failed job or a caller that stopped early: nothing keeps running
                ray.cancel(ref, force=True)

    def _put_shared(self, jobs: Sequence[Job]) -> dict[int, Any]:
        """Object-store references of the arguments several jobs share (by identity), each put once."""
        seen: dict[int, int] = {}
        objects: dict[int, Any] = {}
        for job in jobs:
            for value in (*job.args, *job.kwargs.values()):
                if value is None or isinstance(value, (bool, int, float, str, bytes)):
                    continue
                seen[id(value)] = seen.get(id(value), 0) + 1
                objects[id(value)] = value
        return {key: self.ray.put(objects[key]) for key, count in seen.items() if count > 1}

    def _result(self, ref: Any, job: Job) -> tuple[int | None, str, Any]:
        from ray.exceptions import RayTaskError, WorkerCrashedError

        try:
            return self.ray.get(ref)
        except RayTaskError as err:  # the job raised: its own exception, with the job named
            cause = err.cause if isinstance(err.cause, BaseException) else RuntimeError(str(err))
            if hasattr(cause, "add_note"):
                cause.add_note(f"(in Ray task {job.name!r})")
            raise cause from err
        except WorkerCrashedError as err:
            raise RuntimeError(f"{job.name}: its Ray worker died on each of {self.max_retries + 1} attempts "
                               f"(killed, out of memory or its node lost): {err}") from None


def cpu_count() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


EXECUTORS: Registry[type[Executor]] = Registry("executor")
EXECUTORS.register("inprocess", InProcessExecutor)
EXECUTORS.register("threads", ThreadExecutor)
EXECUTORS.register("processes", ProcessExecutor)
EXECUTORS.register("ray", RayExecutor)  # Ray is imported when one is created, not here


def list_executors() -> list[str]:
    """Names accepted by ``get_executor``."""
    return EXECUTORS.names()


def get_executor(name: str = "inprocess", **options: Any) -> Executor:
    """A new executor by registry name (unknown names list the known ones); ``options`` go to its class."""
    return EXECUTORS.create(name, **options)


def executor_for(cfg: Any) -> Executor:
    """The executor a stage config names (``cfg.executor``), built from that config's settings."""
    return EXECUTORS.get(cfg.executor).from_config(cfg)
