"""Building a latency table: one independent job per part, measured in interleaved rounds, checkpointed
row by row, resumable.

Every job (stem, head, each (slot, option), the calibration and validation networks) is measured in
``rounds`` short rounds spread over the build (round ``r`` runs the whole job list, every other
round in reverse order), so a burst of background load hits one round of many jobs rather than all
of one job; a job's latency is the median of its round medians. A fixed canary network measured
between jobs records how the machine's speed drifts during the build.
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import socket
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import append_jsonl, atomic_write_bytes, read_jsonl

from .cache import ArtifactCache, artifact_key
from .devices import unreachable_reason
from .errors import BackendUnavailableError, DeviceDisconnectedError, FingerprintMismatchError
from .export import batch_shape, export_module, is_exported
from .measure import measure_model, resolve_profile
from .profiles import Profile, get_profile
from .protocol import ProtocolConfig
from .table import LatencyTable, space_signature
from .table_assemble import CANARY, STATISTICS, assemble_table

__all__ = ["CANARY", "Job", "Schedule", "assemble_table", "build_latency_table", "interleave", "schedule_entries"]

ROWS_FILE = "rows.jsonl"


@dataclass(frozen=True)
class Schedule:
    """How the jobs of a build are measured over time."""

    rounds: int = 5  # each job is measured this many times, in rounds spread over the build
    canary_every: int = 10  # a canary network is measured after every this many measurements (0: none)
    normalise: bool = False  # divide each round by the canary's slowness at its time (``table_assemble``)
    statistic: str = "median"  # each round's latency: "median" or "low" (see ``table_assemble.round_value``)

    def __post_init__(self):
        if self.rounds < 1 or self.canary_every < 0 or self.statistic not in STATISTICS:
            raise ValueError(f"schedule needs rounds >= 1, canary_every >= 0 and a statistic in {STATISTICS}; "
                             f"got rounds={self.rounds}, canary_every={self.canary_every}, "
                             f"statistic={self.statistic!r}")

    def round_protocol(self, cfg: ProtocolConfig) -> ProtocolConfig:
        """One round's share of the profile's protocol: the time split over rounds, the CI widened to match."""
        r = self.rounds
        return cfg.replace(min_time_s=cfg.min_time_s / r, max_time_s=max(cfg.max_time_s / r, cfg.min_time_s),
                           target_ci=cfg.target_ci * math.sqrt(r))

    @staticmethod
    def canary_protocol(cfg: ProtocolConfig) -> ProtocolConfig:
        """A short measurement: enough for the canary's median within a few percent."""
        return cfg.replace(min_time_s=min(cfg.min_time_s, 0.02), max_time_s=min(cfg.max_time_s, 0.2),
                           target_ci=max(cfg.target_ci, 0.03))


@dataclass
class Job:
    """One measurement of a table build; jobs are independent and can run anywhere."""

    id: str  # unique within a build, e.g. "block/2/17" or "calibration/<arch key>"
    role: str  # stem | head | block | calibration | validation | repeat
    model_id: str  # names the module's content for the export cache
    make: Callable[[], Any]  # builds the nn.Module
    shape: tuple[int, ...]  # input shape with batch
    slot: int | None = None
    option: str | None = None  # block string of the option
    arch_key: str | None = None
    arch: Any = None  # the blocks.Arch of a whole-architecture job


def _part_jobs(space: Any) -> list[Job]:
    from blocks import build_block, build_head, build_stem

    arch0 = space.sample(0)
    stem_shape = (space.in_channels, space.input_size, space.input_size)
    jobs = [Job("stem", "stem", f"stem:{[str(s) for s in space.stem]}:{stem_shape}", lambda: build_stem(arch0),
                batch_shape(stem_shape))]
    for i in range(space.num_slots):
        shape = space.slot_input_shape(i)
        for j, opt in enumerate(space.options(i)):
            jobs.append(Job(f"block/{i}/{j}", "block", f"block:{opt}:{shape}",
                            lambda o=opt, c=shape[0]: build_block(o, c), batch_shape(shape), slot=i, option=str(opt)))
    head_shape = space.head_input_shape()
    jobs.append(Job("head", "head", f"head:{space.head!r}:{space.num_classes}:{head_shape}",
                    lambda: build_head(arch0, head_shape[0]), batch_shape(head_shape)))
    return jobs


def _arch_jobs(space: Any, n_calibration: int, n_validation: int, n_repeat: int, seed: int) -> list[Job]:
    from blocks import build_model

    archs, seen = [], set()
    rng = np.random.default_rng(seed)
    wanted = n_calibration + n_validation
    for _ in range(100 * wanted):  # a space with fewer members than asked for: fewer held out
        if len(archs) == wanted:
            break
        arch = space.sample(rng)
        if arch.key not in seen:
            seen.add(arch.key)
            archs.append(arch)
    shape = batch_shape((space.in_channels, space.input_size, space.input_size))
    jobs = []
    for k, arch in enumerate(archs):
        role = "calibration" if k < n_calibration else "validation"
        jobs.append(Job(f"{role}/{arch.key}", role, f"arch:{arch.key}", lambda a=arch: build_model(a), shape,
                        arch_key=arch.key, arch=arch))
    for arch in archs[n_calibration:n_calibration + n_repeat]:
        jobs.append(Job(f"repeat/{arch.key}", "repeat", f"arch:{arch.key}", lambda a=arch: build_model(a), shape,
                        arch_key=arch.key, arch=arch))
    return jobs


def interleave(parts: list[Job], archs: list[Job]) -> list[Job]:
    """Spread whole-architecture jobs evenly among part jobs (repeats last), so slow drift in the
    machine's speed affects calibration, validation and parts alike."""
    spread = [j for j in archs if j.role != "repeat"]
    out, step = [], len(parts) / (len(spread) + 1)
    marks = {int(round((k + 1) * step)): job for k, job in enumerate(spread)}
    for idx, job in enumerate(parts):
        out.append(job)
        if idx + 1 in marks:
            out.append(marks[idx + 1])
    out.extend(job for job in spread if job not in out)
    return out + [j for j in archs if j.role == "repeat"]


def _canary_job(space: Any, seed: int) -> Job:
    """A fixed whole network, drawn apart from the calibration and validation sample."""
    from blocks import build_model

    arch = space.sample(np.random.default_rng([seed, 7919]))
    shape = batch_shape((space.in_channels, space.input_size, space.input_size))
    return Job(CANARY, CANARY, f"arch:{arch.key}", lambda: build_model(arch), shape, arch_key=arch.key, arch=arch)


def schedule_entries(jobs: list[Job], schedule: Schedule, canary: Job | None) -> list[tuple[Job, int]]:
    """Every measurement of a build in order: ``(job, round)``; canary entries carry their sequence number.

    Round ``r`` measures every job, in ``jobs`` order when ``r`` is even and reversed when odd, so each
    job's rounds are spread over the build and its mean position is near the middle.
    """
    entries: list[tuple[Job, int]] = []
    for r in range(schedule.rounds):
        entries.extend((job, r) for job in (jobs if r % 2 == 0 else jobs[::-1]))
    if canary is None or schedule.canary_every <= 0:
        return entries
    out, k = [(canary, 0)], 1
    for idx, entry in enumerate(entries):
        out.append(entry)
        if (idx + 1) % schedule.canary_every == 0 or idx + 1 == len(entries):
            out.append((canary, k))
            k += 1
    return out


def _all_jobs(space: Any, sample: dict) -> list[Job]:
    return [*_part_jobs(space), *_arch_jobs(space, sample["n_calibration"], sample["n_validation"], sample["n_repeat"],
                                            sample["seed"]), _canary_job(space, sample["seed"])]


def _cache_root(cache_dir: Any) -> str | None:
    """An export cache as a plain path for another process (None: that machine's default cache)."""
    return None if cache_dir is None else str(cache_dir.root if isinstance(cache_dir, ArtifactCache) else cache_dir)


def _export_share(space: Any, sample: dict, ids: list[str], cache_dir, report: Callable[[], None]) -> None:
    """Rebuilds the build's jobs (their builders are closures, not picklable) and exports ``ids``."""
    wanted = set(ids)
    for job in _all_jobs(space, sample):
        if job.id in wanted:
            export_module(job.make, job.shape, job.model_id, cache_dir=cache_dir)
            report()


def export_ahead(space: Any, sample: dict, jobs: list[Job], cache_dir, workers: int | None = None,
                 progress: bool = True) -> int:
    """Exports every model of the build that the cache lacks before the first measurement, in up to
    ``workers`` child processes (default: one per core, at most 4). Returns how many were exported.

    Exporting is a fifth of a table build on a small space when done one model at a time between
    measurements; done here, in parallel, it never runs while a measurement does. The children are
    ``python -m latency.table_build`` given their share on stdin (not multiprocessing, which would
    re-import the caller's main script). With one core, or a single model, it exports in this process.

    Raises:
        BadModelError: an export failed (the child's last error line).
    """
    import subprocess
    import tempfile

    from tqdm import tqdm

    from .errors import BadModelError
    from .measure_lock import child_env

    missing, seen = [], set()
    for job in jobs:
        if job.model_id not in seen and not is_exported(job.shape, job.model_id, cache_dir):
            seen.add(job.model_id)
            missing.append(job)
    workers = min(workers or min(os.cpu_count() or 1, 4), len(missing))
    bar = tqdm(total=len(missing), desc="export", unit="model", disable=not progress, leave=False)
    try:
        if workers < 2:
            _export_share(space, sample, [job.id for job in missing], cache_dir, lambda: bar.update())
            return len(missing)
        root = _cache_root(cache_dir)
        children = []
        with contextlib.ExitStack() as stack:
            for k in range(workers):
                # stderr to a file, not a pipe: export warnings cannot fill it and stall the child
                errors = stack.enter_context(tempfile.TemporaryFile())
                child = stack.enter_context(subprocess.Popen(
                    [sys.executable, "-m", "latency.table_build"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                    stderr=errors, env=child_env()))
                stack.callback(_stop, child)  # runs before the Popen's own exit, which waits for it
                children.append((child, errors))
                child.stdin.write(pickle.dumps((space, sample, [job.id for job in missing[k::workers]], root)))
                child.stdin.close()
            for child, errors in children:
                for _ in child.stdout:  # one line per finished export
                    bar.update()
                if child.wait() != 0:
                    errors.seek(0)
                    last = (errors.read().decode(errors="replace").strip().splitlines() or ["no output"])[-1]
                    raise BadModelError(f"exporting the latency table's models failed: {last}")
        return len(missing)
    finally:
        bar.close()


def _stop(child: Any) -> None:
    if child.poll() is None:
        child.kill()


def _export_child() -> None:
    """``python -m latency.table_build``: exports the share pickled on stdin, one line per export."""
    import torch

    torch.set_num_threads(1)
    space, sample, ids, cache_dir = pickle.loads(sys.stdin.buffer.read())
    _export_share(space, sample, ids, cache_dir, lambda: print(1, flush=True))


def _meta(space: Any, profile: Profile, fingerprint: dict, cfg: ProtocolConfig, sample: dict,
          schedule: Schedule) -> dict:
    return {"job": "meta", "device": profile.to_dict(), "fingerprint": fingerprint, "space": space.name,
            "space_signature": space_signature(space), "protocol": asdict(cfg), "sample": sample,
            "schedule": asdict(schedule)}


def _check_resume(rows: list[dict], meta: dict, rows_path: Path, force: bool) -> None:
    """Refuse to mix rows of another device, space, protocol, architecture sample or schedule into one build.

    A file holding only the meta row of an attempt that measured nothing (e.g. the device was not
    reachable) does not block a later build: it is replaced when the first row is measured. Rows of
    an older build (no ``schedule``) count as another schedule.
    """
    old = next((r for r in rows if r.get("job") == "meta"), None)
    if old is None or not any(r.get("job") != "meta" for r in rows):
        return
    keys = ("fingerprint", "space_signature", "protocol", "sample", "schedule")
    diff = [k for k in keys if old.get(k) != meta.get(k)]
    if diff and not force:
        rounds = (old.get("schedule") or {}).get("rounds")
        again = (f"; to resume it, build again with rounds={rounds} (`latency table --rounds {rounds}`)"
                 if diff == ["schedule"] and rounds and rounds != (meta.get("schedule") or {}).get("rounds") else "")
        raise FingerprintMismatchError(f"{rows_path} holds measurements with another {', '.join(diff)}; "
                                       f"use another out_dir (or force=True to mix them){again}")


def _row_key(row: dict) -> tuple[str, int]:
    """``(job, round)``: what one row measured (rows of builds without rounds are round 0)."""
    return row.get("job"), int(row.get("round") or 0)


def _where() -> dict:
    """Where a measurement ran: the host, and the Ray node when it ran as a Ray task."""
    where = {"host": socket.gethostname(), "ray_node": None}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        where["ray_node"] = ray.get_runtime_context().get_node_id()
    return where


def _measure_job(job: Job, rnd: int, profile: Profile, backend, cfg: ProtocolConfig, cache_dir) -> dict:
    path = export_module(job.make, job.shape, job.model_id, cache_dir=cache_dir)
    result = measure_model(path, profile, protocol=cfg, backend=backend, cache_dir=cache_dir)
    return {"job": job.id, "round": rnd, "role": job.role, "slot": job.slot, "option": job.option,
            "arch_key": job.arch_key, "time": time.time(), "loadavg": round(os.getloadavg()[0], 2), **_where(),
            **result.to_row(samples=True)}


_BUILDS: dict[str, tuple[dict[str, Job], dict[str, Any]]] = {}  # per process: a build's jobs and backends


def measure_entry(space: Any, sample: dict, build: str, job_id: str, rnd: int, profile: Profile,
                  cfg: ProtocolConfig, cache_dir: str | None) -> dict:
    """Job: one ``(job, round)`` of a table build, measured on this machine's ``profile`` device, as its row.

    Plain arguments, so any executor can run it: on Ray, a task requesting ``device:<profile>`` runs on the
    node that advertises the device. The build's jobs are rebuilt here once per process (their builders are
    closures) and the backend is kept between measurements, as in the local loop; ``build`` names the build
    (the driver computes it once). ``cache_dir`` None: this machine's export cache.
    """
    if build not in _BUILDS:
        _BUILDS.clear()
        _BUILDS[build] = ({job.id: job for job in _all_jobs(space, sample)}, {})
    jobs, backends = _BUILDS[build]
    if profile.name not in backends:
        backends[profile.name] = resolve_profile(profile)[1]
    return _measure_job(jobs[job_id], rnd, profile, backends[profile.name], cfg, cache_dir)


def device_facts(profile: Profile) -> tuple[str | None, dict, str]:
    """Job: whether ``profile``'s device is reachable where this runs, its backend's fingerprint and input kind."""
    reason = unreachable_reason(profile)
    if reason is not None:
        return f"{reason} (on {socket.gethostname()})", {}, ""
    backend = resolve_profile(profile)[1]
    return None, backend.fingerprint(), backend.input_kind


def _run_jobs(entries: list[tuple[Job, int]], rows_path: Path, profile: Profile, backend, cfg: ProtocolConfig,
              schedule: Schedule, cache_dir, progress: bool, meta: dict, executor: Any = None,
              remote: tuple[Any, dict] | None = None) -> None:
    """Measure every ``(job, round)`` not yet in ``rows_path``, appending one row per measurement as it completes.

    The meta row is written together with the first measured row, so an attempt that measures
    nothing leaves nothing behind. Without ``executor`` the measurements run here, in order; with one,
    as :func:`measure_entry` jobs (``remote`` is the ``(space, sample)`` they rebuild the build from).
    """
    from tqdm import tqdm

    rows = read_jsonl(rows_path)
    done = {_row_key(r) for r in rows if r.get("job") != "meta"}
    fresh = not done
    pending = [(job, rnd) for job, rnd in entries if (job.id, rnd) not in done]
    protocols = {False: schedule.round_protocol(cfg), True: schedule.canary_protocol(cfg)}
    bar = tqdm(total=len(entries), initial=len(entries) - len(pending), desc=f"latency table [{profile.name}]",
               unit="model", disable=not progress, leave=False)
    if executor is None:
        measured: Iterator[tuple[int, dict]] = (
            (k, _measure_job(job, rnd, profile, backend, protocols[job.role == CANARY], cache_dir))
            for k, (job, rnd) in enumerate(pending))
    else:
        from common.executor import Job as ExecutorJob

        build = artifact_key(space=space_signature(remote[0]), sample=remote[1], device=profile.name)
        root = _cache_root(cache_dir) if executor.shares_files else None  # elsewhere, the device host's own cache
        measured = executor.completed([
            ExecutorJob(f"latency {job.id} round {rnd}", measure_entry,
                        (*remote, build, job.id, rnd, profile, protocols[job.role == CANARY], root))
            for job, rnd in pending])
    made = 0
    try:
        for _, row in measured:
            if fresh:
                atomic_write_bytes(rows_path, b"")  # drop the meta row of an attempt that measured nothing
                append_jsonl(rows_path, meta)
                fresh = False
            append_jsonl(rows_path, row)
            made += 1
            bar.update()
    except DeviceDisconnectedError as err:
        raise DeviceDisconnectedError(f"{err}; the {len(done) + made} measurements already made are kept in "
                                      f"{rows_path}, run the build again to resume", err.partial_samples_ms) from None
    finally:
        bar.close()


def build_latency_table(space: Any, device: str | Profile = "cpu", out_dir: Path | str | None = None, *,
                        n_calibration: int = 40, n_validation: int = 30, n_repeat: int = 3, seed: int = 0,
                        rounds: int = 5, canary_every: int = 10, protocol: dict | None = None,
                        cache_dir: Path | str | None = None, progress: bool = True,
                        force: bool = False, executor: Any = None) -> LatencyTable:
    """Measure a space's stem, head and every (slot, option) on a device and calibrate the sum.

    Every measurement is appended to ``out_dir/rows.jsonl`` as soon as it is made, so a killed or
    disconnected build resumes where it stopped when called again with the same arguments.

    Args:
        space: a ``blocks`` search space or its name.
        device: profile name (see ``latency devices``) or :class:`Profile`.
        out_dir: folder for ``rows.jsonl`` and ``table.json`` (default ``runs/latency/<device>-<space>``).
        n_calibration: random architectures measured whole to fit the calibration (the model, one scale
            or per-slot scales, is chosen by leave-one-out error on them; see :mod:`latency.calibration`).
        n_validation: further held-out architectures measured whole to report the table's error.
        n_repeat: validation architectures measured a second time, at the end, for run-to-run noise.
        seed: seed of the architecture sample.
        rounds: each job is measured in this many rounds spread over the build (the profile's
            protocol time is split among them); its latency is the median of the round medians.
        canary_every: measure a fixed canary network after this many measurements (0: never), to
            record the machine's speed over the build.
        protocol: overrides of the profile's protocol fields.
        cache_dir: export cache root.
        progress: show a tqdm progress bar.
        force: allow resuming rows measured with another fingerprint, space or protocol.
        executor: a ``common.executor.Executor`` that runs the measurements (default: here, in order). A
            ``RayExecutor`` whose tasks request ``device:<profile>`` measures on the node that advertises the
            device (one measurement at a time when the node advertises one unit); rows land here as they finish.

    Returns:
        The :class:`LatencyTable`, also saved as ``out_dir/table.json``.
    """
    from blocks import get_space

    schedule = Schedule(rounds=rounds, canary_every=canary_every)
    space = get_space(space) if isinstance(space, str) else space
    sample = {"seed": seed, "n_calibration": n_calibration, "n_validation": n_validation, "n_repeat": n_repeat}
    if executor is None:
        profile, backend = resolve_profile(device)
        reason = unreachable_reason(profile)
        if reason is not None:
            raise BackendUnavailableError(f"cannot build a latency table for {profile.name!r} here: {reason}")
        fingerprint, input_kind = backend.fingerprint(), backend.input_kind
    else:  # the device is wherever the executor runs its jobs: ask there
        from common.executor import Job as ExecutorJob

        profile, backend = get_profile(device), None
        reason, fingerprint, input_kind = executor.run_one(
            ExecutorJob(f"latency device {profile.name}", device_facts, (profile,)))
        if reason is not None:
            raise BackendUnavailableError(f"cannot build a latency table for {profile.name!r} where the "
                                          f"{executor.name} executor runs its jobs: {reason}")
    cfg = profile.protocol_config().replace(**(protocol or {}))
    out = Path(out_dir) if out_dir is not None else Path("runs") / "latency" / f"{profile.name}-{space.name}"
    rows_path = out / ROWS_FILE
    meta = _meta(space, profile, fingerprint, cfg, sample, schedule)
    _check_resume(read_jsonl(rows_path), meta, rows_path, force)
    jobs = interleave(_part_jobs(space), _arch_jobs(space, n_calibration, n_validation, n_repeat, seed))
    canary = _canary_job(space, seed)
    if input_kind == "onnx" and (executor is None or executor.shares_files):
        export_ahead(space, sample, [*jobs, canary], cache_dir, progress=progress)
    entries = schedule_entries(jobs, schedule, canary)
    _run_jobs(entries, rows_path, profile, backend, cfg, schedule, cache_dir, progress, meta, executor, (space, sample))
    table = assemble_table(space, meta, read_jsonl(rows_path), jobs, schedule.normalise, schedule.statistic)
    return replace(table, path=table.save(out))


if __name__ == "__main__":
    _export_child()
