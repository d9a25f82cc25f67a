"""The ``latency`` command: ``devices``, ``bench`` and ``table`` (thin: parse, call the library, print)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from blocks.cli_errors import OneLineParser, int_at_least, run_guarded, space_arg

from .errors import LatencyError

MAX_INPUT_SIDE = 4096  # largest channel count or image side accepted for --input-shape
MAX_INPUT_ELEMENTS = 64 << 20  # largest C*H*W accepted (a 256 MB float input at batch 1)


def _shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(",") if v)
    except ValueError:
        msg = f"input shape {text!r} is not comma-separated integers, e.g. 3,32,32"
        raise argparse.ArgumentTypeError(msg) from None
    elements = 1
    for v in shape:
        elements *= max(v, 0)
    if len(shape) != 3 or not all(0 < v <= MAX_INPUT_SIDE for v in shape) or elements > MAX_INPUT_ELEMENTS:
        raise argparse.ArgumentTypeError(f"input shape {text!r} must be C,H,W with each value in 1..{MAX_INPUT_SIDE} "
                                         f"and at most {MAX_INPUT_ELEMENTS:,} values in all, e.g. 3,32,32")
    return shape


def _device(text: str) -> str:
    from .profiles import list_profiles

    known = list_profiles()
    if text not in known:
        raise argparse.ArgumentTypeError(f"unknown device {text!r}; known devices: {', '.join(known)}")
    return text


def _device_flags(parser: argparse.ArgumentParser) -> None:
    """``--latency-device`` (its name in ``donna`` too) and ``--device``, the name it has always had here."""
    parser.add_argument("--latency-device", dest="device", type=_device, default="cpu",
                        help="device profile (see `latency devices`; default: cpu)")
    parser.add_argument("--device", dest="device", type=_device, default=argparse.SUPPRESS,
                        help="alias of --latency-device")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("donna-nas")
    except PackageNotFoundError:  # a source tree that is not installed
        return "unknown (not installed)"


def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="latency", description="Measure what a network costs on a device.")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument("--version", action="version", version=f"latency {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("devices", help="list device profiles and which are reachable now")
    dev.add_argument("--json", action="store_true", help="print JSON")
    bench = sub.add_parser("bench", help="measure .onnx files or architecture JSONs on a device")
    bench.add_argument("models", nargs="+", help="MODEL.onnx or ARCH.json files")
    _device_flags(bench)
    bench.add_argument("--input-shape", type=_shape, default=None, help="C,H,W for dynamic ONNX inputs")
    bench.add_argument("--json", action="store_true", help="print a JSON list, one object per model")
    table = sub.add_parser("table", help="build (or resume) a per-block latency table")
    _device_flags(table)
    table.add_argument("--space", type=space_arg, default="mbconv-tiny",
                       help="search space name or JSON file (default: mbconv-tiny)")
    table.add_argument("--out", type=Path, default=None, help="folder (default runs/latency/<device>-<space>)")
    table.add_argument("--num-classes", type=int_at_least(1), default=None,
                       help="classes of the run's data set when they differ from the space's (changes the head)")
    table.add_argument("--n-calibration", type=int_at_least(2), default=40,
                       help="architectures measured whole to calibrate the sum (at least 2; default: 40)")
    table.add_argument("--n-validation", type=int_at_least(0), default=30,
                       help="architectures measured whole to report the table's error (default: 30)")
    table.add_argument("--rounds", type=int_at_least(1), default=5,
                       help="measure every part and network in this many rounds spread over the build, each in a "
                       "fresh session, so a burst of background load or a slow session hits one round (default: 5)")
    table.add_argument("--seed", type=int_at_least(0, 2**32 - 1), default=0, help="seeds the sampled architectures "
                       "(default: 0)")
    table.add_argument("--force", action="store_true", help="use (resume) rows measured on another device "
                       "fingerprint, as `donna search --force`")
    table.add_argument("--executor", choices=("inprocess", "ray"), default="inprocess",
                       help="where the measurements run: here (default), or as Ray tasks requesting the resource "
                       "device:<profile>, so they run on the node that advertises it (the `ray` extra)")
    table.add_argument("--ray-address", default=None, help="the Ray cluster of --executor ray (auto: the running "
                       "one; default: a local Ray)")
    for command in (dev, bench, table):  # `latency table ... --debug` as well as `latency --debug table ...`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                             help="show the full traceback of an error")
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

    from .measure import measure_model, resolve_profile

    models = [_load_model_arg(m) for m in args.models]
    profile, backend = resolve_profile(args.device)
    results = []
    for arg, model in tqdm(list(zip(args.models, models)), desc=f"bench [{profile.name}]", unit="model",
                           disable=len(models) < 2 or args.json, leave=False):
        result = measure_model(model, profile, args.input_shape, backend=backend)
        results.append(replace(result, model=arg))
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=1))
        return 0
    print(f"device {profile.name} ({profile.description}); times in ms; CI = 95% CI of the median")
    print(f"{'model':<36} {'median':>9} {'p90':>9} {'p99':>9} {'CI':>19} {'CoV':>7} {'n':>6}  flag")
    for r in results:
        print(_format_result(r))
    return 0


def cmd_table(args) -> int:
    from blocks import get_space
    from blocks.lock import folder_lock

    from .table_build import build_latency_table

    out = args.out or Path("runs") / "latency" / f"{args.device}-{get_space(args.space).name}"
    with folder_lock(out, command=f"latency table --device {args.device}"):  # one build per folder at a time
        space = get_space(args.space)
        space = space if args.num_classes is None else space.with_classes(args.num_classes)
        table = build_latency_table(space, args.device, out, n_calibration=args.n_calibration,
                                    n_validation=args.n_validation, seed=args.seed, rounds=args.rounds,
                                    force=args.force, executor=table_executor(args.executor, args.device,
                                                                              args.ray_address))
    cal = table.calibration
    print(f"latency table written to {table.path}")
    print(f"calibration on {cal.n} architectures ({cal.model}): {cal.intercept_ms:+.4f} ms + {cal.scale:.4f} x sum")
    print_validation(table)
    return 0


def table_executor(name: str, device: str, ray_address: str | None = None):
    """None (measure here) for ``inprocess``; for ``ray``, a Ray executor whose tasks request ``device:<device>``
    (one unit: one measurement at a time on a host that advertises one) and are not retried (a measurement cut
    short is measured again by the next build, not by Ray)."""
    if name == "inprocess":
        return None
    from common.executor import RayExecutor

    resource = {f"device:{device}": 1}  # a local Ray (no address) offers it: the device is the one attached here
    return RayExecutor(address=ray_address, resources=resource, max_retries=0, advertise=resource)


def print_validation(table, file=None) -> bool:
    """Print a table's held-out validation line, and its warning on stderr when it misses the bounds; True if met."""
    from .table import validation_check

    line, warning = validation_check(table)
    print(line, file=file or sys.stdout)
    if warning:
        print(warning, file=sys.stderr)
    return warning is None


COMMANDS = {"devices": cmd_devices, "bench": cmd_bench, "table": cmd_table}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``latency`` console script; returns the exit status.

    Every failure is one line on stderr (``--debug``: the traceback); Ctrl-C exits 130 and a table build
    resumes when the same command runs again.
    """
    args = _parser().parse_or_status(argv)
    if isinstance(args, int):
        return args
    return run_guarded("latency", lambda: COMMANDS[args.command](args), debug=args.debug)


if __name__ == "__main__":
    sys.exit(main())
