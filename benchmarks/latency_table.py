"""Build a latency table for a device and space, then report how well it predicts held-out networks.

Usage::

    python benchmarks/latency_table.py [--device cpu] [--space mbconv-tiny] [--out runs/bench-latency] [--busy]

Prints the table's error on held-out architectures measured end to end (RMSPE, share within
+-5% / +-10%, Spearman), the uncalibrated sum's error for contrast, and the run-to-run noise of
the same models measured in two separate processes, with the machine's load average. ``--busy``
starts one ``yes > /dev/null`` process (one core busy) for the build and the two-process check.
The build resumes if interrupted (use another --out for --busy).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

TARGETS = {"within_10": 1.0, "within_5": 0.90, "rmspe": 0.03, "two_process": 0.03}


def two_process_noise(archs: list, out: Path, device: str) -> list[dict]:
    """Measure each architecture in two separate ``latency bench`` processes; relative median gaps."""
    rows = []
    for arch in archs:
        path = out / "noise" / f"{arch.key}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        arch.to_json(path)
        medians = []
        for _ in range(2):
            cmd = [sys.executable, "-m", "latency.cli", "bench", str(path), "--device", device, "--json"]
            res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)[0]
            medians.append(res["median_ms"])
        rows.append({"key": arch.key, "a_ms": medians[0], "b_ms": medians[1],
                     "gap": abs(medians[0] - medians[1]) / min(medians)})
    return rows


def report(table, noise: list[dict], seconds: float, busy: bool, load: list[float]) -> None:
    """Print the benchmark table."""
    from latency.table import validation_check

    v, u, cal = table.validation, table.validation["uncalibrated"], table.calibration
    gap = max(r["gap"] for r in noise)
    ok = {"within_10": v["within_10"] >= TARGETS["within_10"], "within_5": v["within_5"] >= TARGETS["within_5"],
          "rmspe": v["rmspe"] <= TARGETS["rmspe"], "two_process": gap <= TARGETS["two_process"]}
    cond = table.conditions
    print(f"\nlatency table: device {table.device}, space {table.space_name}, built in {seconds / 60:.1f} min "
          f"({cond.get('rounds', 1)} rounds, {cond.get('measurements', '?')} measurements), "
          f"{'BUSY: one `yes` process running' if busy else 'no extra load started'}")
    print(f"load average (1 min) during the build: {_load_text(cond.get('loadavg'))}; at the start "
          f"{load[0]:.2f}, at the end {load[1]:.2f}; canary p90/p10 {cond.get('canary_p90_over_p10', 'n/a')}")
    scales = f" (slot scales {', '.join(f'{v:.3f}' for v in cal.slot_scales)})" if cal.slot_scales else ""
    print(f"calibration on {cal.n} architectures, {cal.model}: measured ~ {cal.intercept_ms:+.4f} ms + "
          f"{cal.scale:.4f} x sum of parts{scales}")
    print(f"{'metric (held-out n=' + str(v['n']) + ')':<34} {'calibrated':>11} {'raw sum':>9} {'target':>9}  met")
    print(f"{'RMSPE':<34} {v['rmspe']:>11.2%} {u['rmspe']:>9.2%} {'<= 3%':>9}  {ok['rmspe']}")
    print(f"{'within +-5%':<34} {v['within_5']:>11.1%} {u['within_5']:>9.1%} {'>= 90%':>9}  {ok['within_5']}")
    print(f"{'within +-10%':<34} {v['within_10']:>11.1%} {u['within_10']:>9.1%} {'>= 100%':>9}  {ok['within_10']}")
    print(f"{'Spearman':<34} {v['spearman']:>11.3f} {u['spearman']:>9.3f}")
    print(f"{'worst error':<34} {v['max_abs_pct']:>10.1f}% {u['max_abs_pct']:>8.1f}%")
    print(f"{'in-build repeat noise (median)':<34} {v['noise']:>11.2%}")
    for r in noise:
        print(f"two processes, arch {r['key']}: {r['a_ms']:.4f} vs {r['b_ms']:.4f} ms -> {r['gap']:.2%}")
    print(f"{'two-process noise (max)':<34} {gap:>11.2%} {'':>9} {'<= 3%':>9}  {ok['two_process']}")
    line, warning = validation_check(table)
    print(line)
    print(warning or "the table meets its bounds (>= 90% within +-5%, 100% within +-10%)")


def _load_text(load: dict | None) -> str:
    return f"min {load['min']:.2f}, median {load['median']:.2f}, max {load['max']:.2f}" if load else "n/a"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--space", default="mbconv-tiny")
    p.add_argument("--out", type=Path, default=Path("runs/bench-latency"))
    p.add_argument("--n-calibration", type=int, default=40)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--busy", action="store_true", help="keep one `yes > /dev/null` process running meanwhile")
    p.add_argument("--n-validation", type=int, default=30)
    p.add_argument("--n-noise", type=int, default=3, help="architectures measured in two processes")
    args = p.parse_args(argv)
    import torch

    from blocks import get_space
    from latency import build_latency_table

    torch.set_num_threads(1)
    hog = subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) if args.busy else None
    try:
        load = [os.getloadavg()[0]]
        start = time.perf_counter()
        table = build_latency_table(args.space, args.device, args.out, n_calibration=args.n_calibration,
                                    n_validation=args.n_validation, rounds=args.rounds)
        seconds = time.perf_counter() - start
        noise = two_process_noise(get_space(args.space).sample_many(args.n_noise, seed=123), args.out, args.device)
        load.append(os.getloadavg()[0])
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    report(table, noise, seconds, args.busy, load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
