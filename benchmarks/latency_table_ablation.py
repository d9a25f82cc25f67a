"""Re-assemble one latency-table build's rows in several ways and print each way's held-out error.

Usage::

    python benchmarks/latency_table_ablation.py runs/bench-latency [--space mbconv-tiny]

Every variant uses the same measured rows (built by ``benchmarks/latency_table.py``), so the figures
differ only by how the rows are combined: rounds used (the first only, or all), per-round statistic,
normalising by the canary, or dropping rounds the canary marks as slow, the number of calibration
networks, the calibration model and whether it may charge for the networks' weights. The validation
networks are never used to fit or to choose.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import replace
from pathlib import Path


def variants(rounds: int) -> list[dict]:
    """The combinations to compare (the first is what the build itself used by default)."""
    out = []
    for first_only in ([False, True] if rounds > 1 else [False]):
        for statistic in ("median", "low"):
            for canary in ("none", "normalise", "drop"):
                for n_cal in (10, 40):
                    for model in ("one scale", "cv") if n_cal >= 18 else ("one scale",):  # cv: 3 per parameter
                        for weights in (False, True):
                            out.append({"first_round_only": first_only, "statistic": statistic, "canary": canary,
                                        "n_calibration": n_cal, "model": model, "weights": weights})
    return out


def drop_slow_rounds(rows: list[dict], threshold: float = 1.05) -> list[dict]:
    """Rows without the rounds measured while the canary ran more than ``threshold`` x its median
    (a job keeps at least its fastest-canary round), as a re-measurement would replace them."""
    from collections import defaultdict

    from latency.table_assemble import CANARY, canary_speed

    speed = canary_speed(rows)
    if speed is None:
        return rows
    by_job = defaultdict(list)
    for r in rows:
        by_job[r.get("job")].append(r)
    kept = []
    for job, group in by_job.items():
        if job in ("meta", CANARY):
            kept.extend(group)
            continue
        good = [r for r in group if speed(r["time"]) <= threshold]
        kept.extend(good or [min(group, key=lambda r: speed(r["time"]))])
    return kept


def evaluate(space, meta: dict, rows: list[dict], variant: dict) -> dict:
    from latency.table_assemble import assemble_table, calibrate, measured, validate
    from latency.table_build import _arch_jobs, _part_jobs, interleave

    sample = meta["sample"]
    jobs = interleave(_part_jobs(space), _arch_jobs(space, sample["n_calibration"], sample["n_validation"],
                                                    sample["n_repeat"], sample["seed"]))
    if variant["first_round_only"]:
        rows = [r for r in rows if not r.get("round") or r.get("job") == "canary"]
    if variant["canary"] == "drop":
        rows = drop_slow_rounds(rows)
    table = assemble_table(space, meta, rows, jobs, variant["canary"] == "normalise", variant["statistic"])
    from latency.table_assemble import job_latencies

    by_job = job_latencies(rows, variant["canary"] == "normalise", variant["statistic"])
    archs = {j.arch_key: j for j in jobs if j.arch_key}
    cal_ms = measured(by_job, "calibration", archs)
    cal_ms = dict(list(cal_ms.items())[: variant["n_calibration"]])
    fit = {"grid": (math.inf,)} if variant["model"] == "one scale" else {}
    if not variant["weights"]:
        fit["mparams"] = None  # no weight term
    cal = calibrate(table, cal_ms, archs, **fit)
    table = replace(table, calibration=cal)
    return {**validate(table, by_job, archs), "model": cal.model}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path, help="folder of the build (holds rows.jsonl)")
    p.add_argument("--space", default="mbconv-tiny")
    args = p.parse_args(argv)
    from blocks import get_space
    from common.fileio import read_jsonl

    rows = read_jsonl(args.out / "rows.jsonl")
    meta = next(r for r in rows if r.get("job") == "meta")
    space = get_space(args.space)
    rounds = (meta.get("schedule") or {}).get("rounds", 1)
    print(f"{args.out}: {len(rows) - 1} measurements, {rounds} rounds")
    print(f"{'rounds':<7}{'stat':<7}{'canary':<10}{'n_cal':>6} {'weights':<8}{'model':<62}{'RMSPE':>7}{'w5':>6}"
          f"{'w10':>6}{'worst':>7}{'rho':>7}")
    for v in variants(rounds):
        m = evaluate(space, meta, rows, v)
        print(f"{'1' if v['first_round_only'] else 'all':<7}{v['statistic']:<7}{v['canary']:<10}"
              f"{v['n_calibration']:>6} {'yes' if v['weights'] else 'no':<8}{m['model']:<62}{m['rmspe']:>7.1%}"
              f"{m['within_5']:>6.0%}{m['within_10']:>6.0%}{m['max_abs_pct']:>6.1f}%{m['spearman']:>7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
