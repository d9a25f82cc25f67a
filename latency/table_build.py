"""Building a latency table: one independent job per part, checkpointed row by row, resumable."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import append_jsonl, atomic_write_bytes, read_jsonl

from .devices import unreachable_reason
from .errors import BackendUnavailableError, DeviceDisconnectedError, FingerprintMismatchError
from .export import batch_shape, export_module
from .measure import measure_model, resolve_profile
from .profiles import Profile
from .protocol import ProtocolConfig
from .table import Calibration, LatencyTable, SlotLatencies, error_metrics, fit_calibration, space_signature

ROWS_FILE = "rows.jsonl"


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


def _meta(space: Any, profile: Profile, fingerprint: dict, cfg: ProtocolConfig, sample: dict) -> dict:
    return {"job": "meta", "device": profile.to_dict(), "fingerprint": fingerprint, "space": space.name,
            "space_signature": space_signature(space), "protocol": asdict(cfg), "sample": sample}


def _check_resume(rows: list[dict], meta: dict, rows_path: Path, force: bool) -> None:
    """Refuse to mix rows of another device, space, protocol or architecture sample into one build.

    A file holding only the meta row of an attempt that measured nothing (e.g. the device was not
    reachable) does not block a later build: it is replaced when the first row is measured.
    """
    old = next((r for r in rows if r.get("job") == "meta"), None)
    if old is None or not any(r.get("job") != "meta" for r in rows):
        return
    diff = [k for k in ("fingerprint", "space_signature", "protocol", "sample") if old.get(k) != meta.get(k)]
    if diff and not force:
        raise FingerprintMismatchError(f"{rows_path} holds measurements with another {', '.join(diff)}; "
                                       "use another out_dir (or force=True to mix them)")


def _measure_job(job: Job, profile: Profile, backend, cfg: ProtocolConfig, cache_dir) -> dict:
    path = export_module(job.make, job.shape, job.model_id, cache_dir=cache_dir)
    result = measure_model(path, profile, protocol=cfg, backend=backend, cache_dir=cache_dir)
    row = {"job": job.id, "role": job.role, "slot": job.slot, "option": job.option, "arch_key": job.arch_key,
           "time": time.time(), **result.to_row(samples=True)}
    return row


def _run_jobs(jobs: list[Job], rows_path: Path, profile: Profile, backend, cfg, cache_dir, progress: bool,
              meta: dict) -> None:
    """Measure every job not yet in ``rows_path``, appending one row per job as it completes.

    The meta row is written together with the first measured row, so an attempt that measures
    nothing leaves nothing behind.
    """
    from tqdm import tqdm

    rows = read_jsonl(rows_path)
    done = {r.get("job") for r in rows}
    fresh = not any(r.get("job") != "meta" for r in rows)
    pending = [j for j in jobs if j.id not in done]
    bar = tqdm(pending, desc=f"latency table [{profile.name}]", unit="model", disable=not progress, leave=False)
    for k, job in enumerate(bar):
        try:
            row = _measure_job(job, profile, backend, cfg, cache_dir)
            if fresh:
                atomic_write_bytes(rows_path, b"")  # drop the meta row of an attempt that measured nothing
                append_jsonl(rows_path, meta)
                fresh = False
            append_jsonl(rows_path, row)
        except DeviceDisconnectedError as err:
            kept = len(done) + k
            raise DeviceDisconnectedError(f"{err}; the {kept} measurements already made are kept in {rows_path}, "
                                          "run the build again to resume", err.partial_samples_ms) from None


def build_latency_table(space: Any, device: str | Profile = "cpu", out_dir: Path | str | None = None, *,
                        n_calibration: int = 10, n_validation: int = 30, n_repeat: int = 3, seed: int = 0,
                        protocol: dict | None = None, cache_dir: Path | str | None = None,
                        progress: bool = True, force: bool = False) -> LatencyTable:
    """Measure a space's stem, head and every (slot, option) on a device and calibrate the sum.

    Every measurement is appended to ``out_dir/rows.jsonl`` as soon as it is made, so a killed or
    disconnected build resumes where it stopped when called again with the same arguments.

    Args:
        space: a ``blocks`` search space or its name.
        device: profile name (see ``latency devices``) or :class:`Profile`.
        out_dir: folder for ``rows.jsonl`` and ``table.json`` (default ``runs/latency/<device>-<space>``).
        n_calibration: random architectures measured whole to fit ``intercept + scale * sum``.
        n_validation: further held-out architectures measured whole to report the table's error.
        n_repeat: validation architectures measured a second time, at the end, for run-to-run noise.
        seed: seed of the architecture sample.
        protocol: overrides of the profile's protocol fields.
        cache_dir: export cache root.
        progress: show a tqdm progress bar.
        force: allow resuming rows measured with another fingerprint, space or protocol.

    Returns:
        The :class:`LatencyTable`, also saved as ``out_dir/table.json``.
    """
    from blocks import get_space

    space = get_space(space) if isinstance(space, str) else space
    profile, backend = resolve_profile(device)
    reason = unreachable_reason(profile)
    if reason is not None:
        raise BackendUnavailableError(f"cannot build a latency table for {profile.name!r} here: {reason}")
    cfg = profile.protocol_config().replace(**(protocol or {}))
    out = Path(out_dir) if out_dir is not None else Path("runs") / "latency" / f"{profile.name}-{space.name}"
    rows_path = out / ROWS_FILE
    sample = {"seed": seed, "n_calibration": n_calibration, "n_validation": n_validation, "n_repeat": n_repeat}
    meta = _meta(space, profile, backend.fingerprint(), cfg, sample)
    _check_resume(read_jsonl(rows_path), meta, rows_path, force)
    jobs = interleave(_part_jobs(space), _arch_jobs(space, n_calibration, n_validation, n_repeat, seed))
    _run_jobs(jobs, rows_path, profile, backend, cfg, cache_dir, progress, meta)
    table = assemble_table(space, meta, read_jsonl(rows_path), jobs)
    return replace(table, path=table.save(out))


def assemble_table(space: Any, meta: dict, rows: list[dict], jobs: list[Job]) -> LatencyTable:
    """Turn measured rows into a table: part latencies, calibration fit, held-out validation."""
    by_job = {r["job"]: r for r in rows if r.get("job") != "meta"}
    slots = []
    for i in range(space.num_slots):
        done = [j for j in jobs if j.role == "block" and j.slot == i]
        slots.append(SlotLatencies(tuple(space.slot_input_shape(i)), tuple(j.option for j in done),
                                   tuple(by_job[j.id]["median_ms"] for j in done),
                                   tuple(bool(by_job[j.id]["noisy"]) for j in done)))
    parts = LatencyTable(profile=meta["device"], fingerprint=meta["fingerprint"], space_name=space.name,
                         space_signature=meta["space_signature"], protocol=meta["protocol"],
                         stem=tuple(str(s) for s in space.stem), stem_ms=by_job["stem"]["median_ms"],
                         head_ms=by_job["head"]["median_ms"], slots=tuple(slots),
                         created=time.strftime("%Y-%m-%dT%H:%M:%S"))
    archs = {j.arch_key: j for j in jobs if j.arch_key}
    calibrated = replace(parts, calibration=_calibrate(parts, by_job, archs, "calibration"))
    return replace(calibrated, validation=_validate(calibrated, by_job, archs))


def _measured(by_job: dict, role: str, archs: dict) -> dict[str, float]:
    """Measured medians of this build's architectures in ``role`` (rows of other samples are ignored)."""
    return {r["arch_key"]: r["median_ms"] for r in by_job.values() if r["role"] == role and r["arch_key"] in archs}


def _calibrate(table: LatencyTable, by_job: dict, archs: dict, role: str) -> Calibration:
    measured = _measured(by_job, role, archs)
    sums = [table.part_sum(archs[k].arch) for k in measured]
    return replace(fit_calibration(sums, list(measured.values())), archs=tuple(measured))


def _validate(table: LatencyTable, by_job: dict, archs: dict) -> dict:
    measured = _measured(by_job, "validation", archs)
    if not measured:
        return {"n": 0}
    sums = np.array([table.part_sum(archs[k].arch) for k in measured])
    y = np.array(list(measured.values()))
    pred = table.calibration.apply(sums)
    metrics = error_metrics(pred, y)
    repeats = _measured(by_job, "repeat", archs)
    noise = [abs(repeats[k] - measured[k]) / measured[k] for k in repeats if k in measured]
    metrics.update(noise=float(np.median(noise)) if noise else None, noise_max=float(max(noise)) if noise else None,
                   noise_n=len(noise), uncalibrated=error_metrics(sums, y),
                   archs=[{"key": k, "measured_ms": m, "predicted_ms": float(p), "part_sum_ms": float(s)}
                          for k, m, p, s in zip(measured, y, pred, sums)])
    return metrics
