"""Turning a build's measured rows into a latency table: each job's latency from its rounds, the
calibration fit and the held-out validation, with the conditions the build ran under."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from .table import Calibration, LatencyTable, SlotLatencies, error_metrics, fit_slot_calibration

CANARY = "canary"  # job id of the canary network's rows
STATISTICS = ("median", "low")  # per-round statistic: the median, or the mean of the 5th-50th percentile


def round_value(row: dict, statistic: str = "median") -> float:
    """One round's latency: its median, or (``low``) the mean of its samples between the 5th and 50th
    percentile, which ignores runs slowed by preemption."""
    if statistic == "median" or not row.get("samples_ms"):
        return float(row["median_ms"])
    if statistic != "low":
        raise ValueError(f"unknown statistic {statistic!r}; known: {', '.join(STATISTICS)}")
    x = np.sort(np.asarray(row["samples_ms"], float))
    return float(x[int(0.05 * x.size): max(int(0.5 * x.size), int(0.05 * x.size) + 1)].mean())


def canary_speed(rows: list[dict], statistic: str = "median") -> Callable[[float], float] | None:
    """The machine's slowness over the build: the canary's latency at a time (linear between its
    measurements, each the median of it and its two neighbours) over its median; None without canaries."""
    points = sorted((r["time"], round_value(r, statistic)) for r in rows if r.get("job") == CANARY)
    if len(points) < 3:
        return None
    t, m = np.array(points).T
    smooth = np.array([np.median(m[max(i - 1, 0): i + 2]) for i in range(m.size)])
    base = float(np.median(m))
    return lambda when: float(np.interp(when, t, smooth)) / base


def job_latency(rounds: list[dict], max_spread: float, speed: Callable[[float], float] | None = None,
                statistic: str = "median") -> tuple[float, bool]:
    """A job's latency from its rounds: the median of the round values (each divided by the canary's
    slowness at its time when ``speed`` is given), and whether it is noisy: most rounds were flagged,
    or the round values spread by more than ``max_spread`` of their median."""
    values = np.array([round_value(r, statistic) / (speed(r["time"]) if speed else 1.0) for r in rounds])
    ms = float(np.median(values))
    spread = float((values.max() - values.min()) / ms) if values.size > 1 else 0.0
    flagged = sum(bool(r.get("noisy")) for r in rounds)
    return ms, bool(2 * flagged > len(rounds) or spread > max_spread)


def job_latencies(rows: list[dict], normalise: bool = False, statistic: str = "median",
                  max_spread: float = 0.05) -> dict[str, dict]:
    """``{job id: {"ms", "noisy", "role", "arch_key"}}`` over every measured job but the canary."""
    grouped: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r.get("job") not in ("meta", CANARY):
            grouped[r["job"]].append(r)
    speed = canary_speed(rows, statistic) if normalise else None
    out = {}
    for job, rounds in grouped.items():
        ms, noisy = job_latency(rounds, max_spread, speed, statistic)
        out[job] = {"ms": ms, "noisy": noisy, "role": rounds[0]["role"], "arch_key": rounds[0].get("arch_key")}
    return out


def build_conditions(rows: list[dict], schedule: dict, statistic: str, normalise: bool) -> dict:
    """How the build ran: rounds, canary, statistic, its length and the machine's load average."""
    measured = [r for r in rows if r.get("job") != "meta"]
    load = [r["loadavg"] for r in measured if r.get("loadavg") is not None]
    times = [r["time"] for r in measured if r.get("time") is not None]
    canary = [r["median_ms"] for r in measured if r.get("job") == CANARY]
    out = {**schedule, "statistic": statistic, "normalise": normalise,
           "measurements": len(measured), "seconds": round(max(times) - min(times), 1) if times else None}
    if load:
        out["loadavg"] = {"min": min(load), "median": float(np.median(load)), "max": max(load)}
    if len(canary) > 2:  # how far the machine's speed moved: canary p90 over p10
        out["canary_p90_over_p10"] = round(float(np.percentile(canary, 90) / np.percentile(canary, 10)), 4)
    return out


def assemble_table(space: Any, meta: dict, rows: list[dict], jobs: list, normalise: bool = False,
                   statistic: str = "median") -> LatencyTable:
    """Turn measured rows into a table: part latencies, calibration fit, held-out validation."""
    rules = meta.get("protocol") or {}
    by_job = job_latencies(rows, normalise, statistic, max_spread=float(rules.get("max_robust_cov") or 0.05))
    slots = []
    for i in range(space.num_slots):
        done = [j for j in jobs if j.role == "block" and j.slot == i]
        slots.append(SlotLatencies(tuple(space.slot_input_shape(i)), tuple(j.option for j in done),
                                   tuple(by_job[j.id]["ms"] for j in done),
                                   tuple(by_job[j.id]["noisy"] for j in done), tuple(mparams(j.make()) for j in done)))
    parts = LatencyTable(profile=meta["device"], fingerprint=meta["fingerprint"], space_name=space.name,
                         space_signature=meta["space_signature"], protocol=meta["protocol"],
                         stem=tuple(str(s) for s in space.stem), stem_ms=by_job["stem"]["ms"],
                         head_ms=by_job["head"]["ms"], slots=tuple(slots),
                         created=time.strftime("%Y-%m-%dT%H:%M:%S"),
                         conditions=build_conditions(rows, meta.get("schedule") or {"rounds": 1}, statistic,
                                                     normalise))
    archs = {j.arch_key: j for j in jobs if j.arch_key}
    calibrated = replace(parts, calibration=calibrate(parts, measured(by_job, "calibration", archs), archs))
    return replace(calibrated, validation=validate(calibrated, by_job, archs))


def measured(by_job: dict, role: str, archs: dict) -> dict[str, float]:
    """Measured latency of this build's architectures in ``role`` (rows of other samples are ignored)."""
    return {v["arch_key"]: v["ms"] for v in by_job.values() if v["role"] == role and v["arch_key"] in archs}


def mparams(module: Any) -> float:
    """A module's parameters in millions."""
    from blocks import count_params

    return count_params(module) / 1e6


def calibrate(table: LatencyTable, measured_ms: dict[str, float], archs: dict, **fit) -> Calibration:
    """The calibration of ``table``'s parts on the networks in ``measured_ms`` (model chosen by LOO CV; the
    weight term is tried when the table knows its options' parameters)."""
    blocks = [[table.block_ms(i, b) for i, b in enumerate(archs[k].arch.blocks)] for k in measured_ms]
    if all(slot.mparams for slot in table.slots):
        fit.setdefault("mparams", [sum(table.block_mparams(i, b) for i, b in enumerate(archs[k].arch.blocks))
                                   for k in measured_ms])
    cal = fit_slot_calibration(table.fixed_ms, blocks, list(measured_ms.values()), **fit)
    return replace(cal, archs=tuple(measured_ms))


def validate(table: LatencyTable, by_job: dict, archs: dict) -> dict:
    """The table's error on the held-out validation networks, the raw sum's, and the in-build repeat noise."""
    held_out = measured(by_job, "validation", archs)
    if not held_out:
        return {"n": 0}
    sums = np.array([table.part_sum(archs[k].arch) for k in held_out])
    y = np.array(list(held_out.values()))
    pred = np.array([table.predict(archs[k].arch) for k in held_out])
    metrics = error_metrics(pred, y)
    repeats = measured(by_job, "repeat", archs)
    noise = [abs(repeats[k] - held_out[k]) / held_out[k] for k in repeats if k in held_out]
    metrics.update(noise=float(np.median(noise)) if noise else None, noise_max=float(max(noise)) if noise else None,
                   noise_n=len(noise), uncalibrated=error_metrics(sums, y),
                   archs=[{"key": k, "measured_ms": m, "predicted_ms": float(p), "part_sum_ms": float(s)}
                          for k, m, p, s in zip(held_out, y, pred, sums)])
    return metrics
