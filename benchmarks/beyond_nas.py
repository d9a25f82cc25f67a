"""DONNA beyond one search: hardware-aware compression of the embedded default's teacher, and search-space
extension of the default run.

Compresses the teacher shipped for the default run (``donna/pretrained``, the reference member of
``mbconv-tiny`` trained 20 epochs on ``glyphs``) to shares of its own latency on a device (default ``cpu``:
50% and 75%), with ``donna compress``'s defaults: blockwise distillation from the teacher into the space of its
cheaper versions, NSR, 30 labels, the device's latency table, then one search and one finetune per target.
Prints the teacher and each compressed model side by side: measured latency (fresh process), speed-up, test
accuracy, params and MACs, and whether each met its target.

Extension: ``donna extend`` on a finished default run (``--run``, default ``runs/demo``, what ``make demo``
leaves) with its space plus the values of ``--add`` (default ``act=hswish``: MobileNetV3's hard swish beside
ReLU and swish in every slot; ``type=fir`` adds EfficientNetV2's fused block, which does not nest in the
supernet: one module per option, about 1 GB of weights on the default space). Prints, per device table of the
run, the verdict and the figures behind it: the fronts before and after, how many members use new options, the
latency saved at equal predicted accuracy, the NSR correction of the extra training.

Run: ``.venv/bin/python benchmarks/beyond_nas.py [--workdir runs/compress-demo] [--device cpu]
[--fractions 0.5 0.75] [--run runs/demo] [--add act=hswish] [--only compress|extend]`` (compression about 10
minutes, extension about 5, on the 2-core development machine; both resume when interrupted).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and benchmarks/search.py would shadow the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]


def extension_space(run: Path, additions: list[str], out: Path) -> Path:
    """The run's space with ``knob=value`` added to every slot's choices, written to ``out`` (named after it)."""
    import json

    from blocks import get_space
    from blocks.spaces import _builtin_spaces
    from donna.runfolder import RunFolder

    recorded = RunFolder(run).read_config()["run"]
    source = RunFolder(run).space_json if recorded.get("space_file") else recorded["space"]
    name = get_space(source).name
    body = json.loads(Path(source).read_text())[name] if recorded.get("space_file") else _builtin_spaces()[name]
    body = json.loads(json.dumps(body))
    suffix = []
    for item in additions:
        knob, _, value = item.partition("=")
        parsed = json.loads(value) if value[:1].isdigit() or value[:1] in "[{" else value
        for choices in [body.setdefault("choices", {}), *(s.get("choices", {}) for s in body["slots"])]:
            if knob in choices and parsed not in choices[knob]:
                choices[knob] = [*choices[knob], parsed]
        suffix.append(f"{knob}-{value}")
    body["description"] = f"{name} with {', '.join(additions)} added"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({f"{name}-with-{'-'.join(suffix)}": body}, indent=1))
    return out


def extend(args: argparse.Namespace) -> int:
    from donna.extend_stage import run_extend
    from donna.runfolder import RunFolder

    if not RunFolder(args.run).predictor_json.is_file():
        print(f"{args.run} holds no finished run; run `make demo` (or `donna run --workdir {args.run}`) first",
              file=sys.stderr)
        return 1
    space_file = extension_space(args.run, args.add, args.run.parent / f"{args.run.name}-extension-space.json")
    start = time.perf_counter()
    record = run_extend(args.run, space_file, args.labels, progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    print(f"\nextension of {args.run} by {', '.join(args.add)}: {seconds / 60:.1f} min for this call; load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())} at the end")
    print("| device | before: members | after: members (using new options) | latency saved at equal predicted "
          "accuracy, median / max | predicted accuracy gained at equal latency, median / max (points) | under the "
          "run's target: before -> after | table: within 5% / RMSPE, speed ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for device, v in record["verdicts"].items():
        t = record["tables"][device]["validation"]
        at = v.get("at_target") or {}
        print(f"| {device} | {v['before_members']} | {v['after_members']} ({v['after_members_with_new']}) | "
              f"{100 * v['latency_saving_median']:.1f}% / {100 * v['latency_saving_max']:.1f}% | "
              f"{100 * v['accuracy_gain_median']:.2f} / {100 * v['accuracy_gain_max']:.2f} | "
              f"{at.get('before', float('nan')):.4f} -> {at.get('after', float('nan')):.4f} | "
              f"{100 * (t.get('within_5') or 0):.0f}% / {100 * (t.get('rmspe') or 0):.1f}%, {t.get('speed_ratio')} |")
    print("\nNSR correction of the warm-started new options (their twins' NSR in the run over after the extra "
          "training), per slot: " + ", ".join(f"{k}: x{v:.3f}" for k, v in record["nsr_correction"].items()))
    folder = RunFolder(args.run).extend(record["space"])
    print("\n" + folder.extend_md.read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/compress-demo"))
    parser.add_argument("--device", default="cpu", help="latency device profile (default: cpu)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.5, 0.75])
    parser.add_argument("--run", type=Path, default=Path("runs/demo"), help="the finished run to extend")
    parser.add_argument("--add", nargs="+", default=["act=hswish"], help="knob=value added to every slot's choices")
    parser.add_argument("--labels", type=int, default=10, help="new labels of the extension")
    parser.add_argument("--only", choices=("compress", "extend"), help="one of the two (default: both)")
    args = parser.parse_args(argv)
    if args.only == "extend":
        return extend(args)

    from donna import pretrained
    from donna.compress_stage import render, run_compress
    from donna.config import FinetuneConfig, SearchConfig
    from donna.predictor_stage import PredictorRunConfig

    shipped = sorted(Path(pretrained.__file__).parent.glob("teacher-*.pt"))
    if not shipped:
        print("no shipped teacher in donna/pretrained: nothing to compress", file=sys.stderr)
        return 1
    start = time.perf_counter()
    table = run_compress(args.workdir, shipped[0], args.fractions, PredictorRunConfig(),
                         SearchConfig(target_ms=None, latency_device=args.device),
                         FinetuneConfig(latency_device=args.device), progress=sys.stderr.isatty())
    seconds = time.perf_counter() - start
    print(f"\nmachine: {platform.machine()}, {os.cpu_count()} cores, load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())} at the end; {seconds / 60:.1f} min for this call "
          f"(finished stages are skipped on a rerun)")
    print(render(table, args.device))
    return 0 if args.only == "compress" else extend(args)


if __name__ == "__main__":
    sys.exit(main())
