"""Extending a latency table to a space that adds options (``donna extend``): only what the table lacks is measured.

The base table keeps every row it has. The extension measures the blocks the new space adds and a few whole
networks that use them (calibration and held-out validation), in the base build's interleaved rounds, resumable
row by row in its own ``rows.jsonl``. The base build's canary network is measured again among them: the ratio of
its median now to its median then puts the new measurements on the base table's scale (the machine's speed moves
between two builds on a shared machine). The calibration is then refitted on the base's calibration networks and
the new ones together, and validated on the held-out networks of both.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import read_jsonl

from .devices import unreachable_reason
from .errors import BackendUnavailableError, LatencyError
from .export import batch_shape
from .measure import resolve_profile
from .protocol import ProtocolConfig
from .table import LatencyTable, SlotLatencies, space_signature
from .table_assemble import CANARY, build_conditions, calibrate, job_latencies, measured, mparams, round_value, validate
from .table_build import (
    ROWS_FILE,
    Job,
    Schedule,
    _arch_jobs,
    _canary_job,
    _check_resume,
    _meta,
    _run_jobs,
    interleave,
    schedule_entries,
)


def new_part_jobs(base: LatencyTable, space: Any) -> list[Job]:
    """A block job for every (slot, option) of ``space`` that ``base`` has no row for."""
    from blocks import build_block

    jobs = []
    for i in range(space.num_slots):
        shape = space.slot_input_shape(i)
        have = base.slots[i].by_option
        for opt in space.options(i):
            if str(opt) not in have:
                jobs.append(Job(f"block/{i}/{opt}", "block", f"block:{opt}:{shape}",
                                lambda o=opt, c=shape[0]: build_block(o, c), batch_shape(shape), slot=i,
                                option=str(opt)))
    return jobs


def new_arch_jobs(base: LatencyTable, space: Any, n_calibration: int, n_validation: int, seed: int) -> list[Job]:
    """Whole networks of ``space`` that use at least one option ``base`` lacks: calibration, then validation."""
    from blocks import build_model

    rng = np.random.default_rng([seed, 104729])
    archs: dict[str, Any] = {}
    wanted = n_calibration + n_validation
    for _ in range(200 * wanted):
        if len(archs) == wanted:
            break
        arch = space.sample(rng)
        if any(str(b) not in base.slots[i].by_option for i, b in enumerate(arch.blocks)):
            archs.setdefault(arch.key, arch)
    shape = batch_shape((space.in_channels, space.input_size, space.input_size))
    return [Job(f"{role}/{a.key}", role, f"arch:{a.key}", lambda a=a: build_model(a), shape, arch_key=a.key, arch=a)
            for k, a in enumerate(archs.values()) for role in ["calibration" if k < n_calibration else "validation"]]


def _canary_values(rows: list[dict], statistic: str) -> list[float]:
    return [round_value(r, statistic) for r in rows if r.get("job") == CANARY]


def extend_latency_table(base_dir: Path | str, base_space: Any, space: Any, out_dir: Path | str, *,
                         n_calibration: int = 12, n_validation: int = 15, seed: int = 1, rounds: int | None = None,
                         canary_every: int = 10, cache_dir: Path | str | None = None,
                         progress: bool = True) -> LatencyTable:
    """The latency table of ``space`` (which contains ``base_space``) from the base build in ``base_dir``,
    measuring only the blocks ``space`` adds and ``n_calibration + n_validation`` networks that use them.

    Args:
        base_dir: the folder of the base build (``table.json`` and its ``rows.jsonl``).
        base_space: the space the base table was built for.
        space: the extended space.
        out_dir: where the extension's ``rows.jsonl`` and the extended ``table.json`` go.
        n_calibration: new networks added to the calibration fit.
        n_validation: new held-out networks (the table is validated on the base's and these).
        seed: seed of the new networks' sample.
        rounds: rounds per measurement (default: the base build's).
        canary_every: the base build's canary network is measured after every this many measurements.
        cache_dir: export cache root.
        progress: show a progress bar.

    Returns:
        The extended table, also written to ``out_dir/table.json``.

    Raises:
        LatencyError: the base table is of another space, lacks its rows or canary, or its device is not
            reachable here (an extension measures on the same device as the base).
    """
    base_dir, out = Path(base_dir), Path(out_dir)
    base = LatencyTable.load(base_dir)  # refuses another device (fingerprint) unless the table says why
    if base.space_signature != space_signature(base_space):
        raise LatencyError(f"{base_dir}: the table was built for space {base.space_name!r}, not {base_space.name!r}")
    base_rows = read_jsonl(base_dir / ROWS_FILE)
    base_meta = next((r for r in base_rows if r.get("job") == "meta"), None)
    base_schedule = Schedule(**{k: v for k, v in ((base_meta or {}).get("schedule") or {}).items()
                                if k in ("rounds", "canary_every", "normalise", "statistic")})
    if base_meta is None or len(_canary_values(base_rows, base_schedule.statistic)) < 3:
        raise LatencyError(f"{base_dir}: extending a table needs its build's {ROWS_FILE} with canary rows (the "
                           "speed reference); rebuild the table for the extended space instead (`latency table "
                           "--space NEW.json`)")
    profile, backend = resolve_profile(base.device)
    reason = unreachable_reason(profile)
    if reason is not None:
        raise BackendUnavailableError(f"cannot extend the {profile.name!r} table here: {reason}; build the extended "
                                      f"space's table on the device (`latency table --device {profile.name} --space "
                                      "NEW.json`)")
    from blocks import build_block

    cfg = ProtocolConfig.from_dict(base.protocol)
    rounds = base_schedule.rounds if rounds is None else rounds
    schedule = Schedule(rounds=rounds, canary_every=canary_every, normalise=base_schedule.normalise,
                        statistic=base_schedule.statistic)
    sample = base_meta["sample"]
    parts = new_part_jobs(base, space)
    networks = new_arch_jobs(base, space, n_calibration, n_validation, seed)
    jobs = interleave(parts, networks)
    canary = _canary_job(base_space, sample["seed"])  # the base build's canary: the speed reference
    meta = _meta(space, profile, backend.fingerprint(), cfg,
                 {"extends": base.space_signature, "seed": seed, "n_calibration": n_calibration,
                  "n_validation": n_validation}, schedule)
    rows_path = out / ROWS_FILE
    _check_resume(read_jsonl(rows_path), meta, rows_path, force=False)
    _run_jobs(schedule_entries(jobs, schedule, canary), rows_path, profile, backend, cfg, schedule, cache_dir,
              progress, meta)
    rows = read_jsonl(rows_path)
    ratio = float(np.median(_canary_values(rows, schedule.statistic))
                  / np.median(_canary_values(base_rows, base_schedule.statistic)))
    spread = float(base.protocol.get("max_robust_cov") or 0.05)  # as ``assemble_table`` flags a noisy job
    new = {job: {**v, "ms": v["ms"] / ratio}
           for job, v in job_latencies(rows, schedule.normalise, schedule.statistic, spread).items()}
    old = job_latencies(base_rows, base_schedule.normalise, base_schedule.statistic, spread)
    slots = []
    for i in range(space.num_slots):
        had = dict(zip(base.slots[i].options, zip(base.slots[i].ms, base.slots[i].noisy)))
        fresh = {j.option: (new[j.id]["ms"], new[j.id]["noisy"]) for j in parts if j.slot == i}
        values = [had.get(str(o)) or fresh[str(o)] for o in space.options(i)]
        known, channels = base.slots[i].mparams_by_option, space.slot_input_shape(i)[0]  # count only what it lacks
        slots.append(SlotLatencies(tuple(space.slot_input_shape(i)), tuple(str(o) for o in space.options(i)),
                                   tuple(v[0] for v in values), tuple(v[1] for v in values),
                                   tuple(known.get(str(o)) or mparams(build_block(o, channels))
                                         for o in space.options(i))))
    table = replace(base, space_name=space.name, space_signature=space_signature(space), slots=tuple(slots),
                    path=None, note=None)
    base_archs = {j.arch_key: j for j in _arch_jobs(base_space, sample["n_calibration"], sample["n_validation"],
                                                    sample["n_repeat"], sample["seed"])}
    archs = {**base_archs, **{j.arch_key: j for j in networks}}
    by_job = {**old, **new}
    table = replace(table, calibration=calibrate(table, measured(by_job, "calibration", archs), archs))
    conditions = build_conditions(rows, {"rounds": rounds, "canary_every": canary_every}, schedule.statistic,
                                  schedule.normalise)
    table = replace(table, validation=validate(table, by_job, archs), created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                    conditions={**conditions, "extends": {
                        "table": str(base.path), "created": base.created, "space": base.space_name,
                        "speed_ratio": round(ratio, 4), "new_blocks": len(parts), "new_networks": len(networks),
                        "base_conditions": base.conditions}})
    return replace(table, path=table.save(out))

