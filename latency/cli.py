"""The ``latency`` command: ``devices``, ``bench`` and ``table`` (thin: parse, call the library, print)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import LatencyError


def _shape(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.replace("x", ",").split(",") if v)
    except ValueError:
        msg = f"input shape {text!r} is not comma-separated integers, e.g. 3,32,32"
        raise argparse.ArgumentTypeError(msg) from None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="latency", description="Measure what a network costs on a device.")
    sub = p.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("devices", help="list device profiles and which are reachable now")
    dev.add_argument("--json", action="store_true", help="print JSON")
    bench = sub.add_parser("bench", help="measure .onnx files or architecture JSONs on a device")
    bench.add_argument("models", nargs="+", help="MODEL.onnx or ARCH.json files")
    bench.add_argument("--device", default="cpu", help="device profile (see `latency devices`)")
    bench.add_argument("--input-shape", type=_shape, default=None, help="C,H,W for dynamic ONNX inputs")
    bench.add_argument("--json", action="store_true", help="print a JSON list, one object per model")
    table = sub.add_parser("table", help="build (or resume) a per-block latency table")
    table.add_argument("--device", default="cpu")
    table.add_argument("--space", default="mbconv-tiny", help="search space name or JSON file")
    table.add_argument("--out", type=Path, default=None, help="folder (default runs/latency/<device>-<space>)")
    table.add_argument("--n-calibration", type=int, default=10)
    table.add_argument("--n-validation", type=int, default=30)
    table.add_argument("--seed", type=int, default=0)
    table.add_argument("--force", action="store_true", help="resume rows of another fingerprint")
    return p


def _load_model_arg(arg: str):
    """An .onnx path stays a path; an .json file becomes a ``blocks.Arch``."""
    path = Path(arg)
    if path.suffix.lower() != ".json":
        return path
    if not path.is_file():
        raise LatencyError(f"architecture file {path} does not exist")
    from blocks import Arch

    try:
        return Arch.from_json(path)
    except (ValueError, KeyError, TypeError) as err:
        raise LatencyError(f"{path} is not a valid architecture JSON: {err}") from None


def cmd_devices(args) -> int:
    from .devices import device_status

    rows = device_status()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    for r in rows:
        mark = "yes" if r["reachable"] else "no "
        print(f"{r['name']:<10} {r['backend']:<12} {mark}  {r['description']}")
        if not r["reachable"]:
            print(f"{'':<27}({r['reason']})")
    return 0


def _format_result(r) -> str:
    flag = f"NOISY: {r.noisy_reason}" if r.noisy else "ok"
    name = r.model if len(r.model) <= 36 else "..." + r.model[-33:]
    return (f"{name:<36} {r.median_ms:9.4f} {r.p90_ms:9.4f} {r.p99_ms:9.4f} "
            f"[{r.ci_low_ms:.4f}, {r.ci_high_ms:.4f}] {r.cov:7.1%} {r.n:6d}  {flag}")


def cmd_bench(args) -> int:
    from tqdm import tqdm

    from .measure import measure_model, resolve_device

    models = [_load_model_arg(m) for m in args.models]
    profile, backend = resolve_device(args.device)
    results = []
    for arg, model in tqdm(list(zip(args.models, models)), desc=f"bench [{profile.name}]", unit="model",
                           disable=len(models) < 2 or args.json, leave=False):
        result = measure_model(model, profile, args.input_shape, backend=backend)
        result.model = arg
        results.append(result)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
        return 0
    print(f"device {profile.name} ({profile.description}); times in ms; CI = 95% CI of the median")
    print(f"{'model':<36} {'median':>9} {'p90':>9} {'p99':>9} {'CI':>19} {'CoV':>7} {'n':>6}  flag")
    for r in results:
        print(_format_result(r))
    return 0


def cmd_table(args) -> int:
    from .table_build import build_latency_table

    table = build_latency_table(args.space, args.device, args.out, n_calibration=args.n_calibration,
                                n_validation=args.n_validation, seed=args.seed, force=args.force)
    v, cal = table.validation, table.calibration
    print(f"latency table written to {table.path}")
    print(f"calibration on {cal['n']} architectures: {cal['intercept_ms']:+.4f} ms + {cal['scale']:.4f} x sum")
    if v.get("n"):
        print(f"held-out {v['n']} architectures: RMSPE {v['rmspe']:.2%}, within +-5% {v['within_5']:.0%}, "
              f"within +-10% {v['within_10']:.0%}, Spearman {v['spearman']:.3f}, "
              f"run-to-run noise {v['noise'] if v['noise'] is None else format(v['noise'], '.2%')}")
    return 0


COMMANDS = {"devices": cmd_devices, "bench": cmd_bench, "table": cmd_table}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latency`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (LatencyError, ValueError, OSError) as err:
        print(f"latency: error: {str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("latency: interrupted (a table build resumes when run again)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
