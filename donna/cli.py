"""The ``donna`` command line: thin wrappers that parse, call one library function, print."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from donna import passive_openmp

passive_openmp()  # before torch loads (blocks imports it)

from blocks import describe_arch, get_space, list_presets, list_spaces, resolve_arch  # noqa: E402
from blocks.cli_errors import OneLineParser, int_at_least, run_guarded  # noqa: E402
from blocks.lock import folder_lock  # noqa: E402


def _build_predictor(args: argparse.Namespace) -> int:
    from donna.cli_config import predictor_config
    from donna.predictor_stage import build_predictor, summary
    from donna.runfolder import RunFolder

    result = build_predictor(args.workdir, predictor_config(args), progress=not args.quiet)
    print("\n" + summary(result))
    run = RunFolder(args.workdir)
    print(f"written: {run.predictor_json}, {run.labels_csv.name}, {run.nsr_csv.name}, "
          f"{run.convergence_json.relative_to(run.root)}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from donna.cli_config import finetune_config
    from donna.finetune_stage import run_finetune

    m = run_finetune(args.workdir, finetune_config(args), progress=not args.quiet)
    print(f"\nfinetuned {m['key']} for {m['epochs']} epochs from {m['init']} weights: val accuracy "
          f"{m['val_accuracy']:.4f} (predicted {_opt(m['predicted_accuracy'])}), "
          f"test accuracy {m['test_accuracy']:.4f}")
    measured = (f"measured {m['measured_ms']:.4f} ms" if m.get("measured_ms") is not None else
                f"not measured here; run on the device machine: {m.get('measure_command')}")
    print(f"latency on {m['latency_device']}: {measured} (table predicted {_opt(m['predicted_ms'])} ms); ONNX "
          f"agrees with torch on {m['onnx_torch_top1_agreement']:.2%} of test top-1")
    print(f"report: {m['out']}/report.md")
    if m.get("target_ms") is not None:
        verdict = {True: "PASS", False: "FAIL", None: "not measured here"}[m.get("target_met")]
        print(f"latency target {m['target_ms']} ms on {m['latency_device']}: {verdict} "
              f"(measured {_opt(m.get('measured_ms'))} ms)")
    return 0


def _opt(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"  # None or NaN: not available


def _run(args: argparse.Namespace) -> int:
    from donna.cli_config import run_configs
    from donna.pipeline import run_pipeline

    report = run_pipeline(args.workdir, *run_configs(args), progress=not args.quiet)
    print(f"\nwhole pipeline done in {report['seconds']:.0f} s; finetune report: {report['report']}")
    if report.get("run_report"):
        print(f"the whole run on one page: {report['run_report']}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from donna.cli_config import search_config
    from donna.search_stage import run_search
    from search import NoArchMeetsTarget

    try:
        out = run_search(args.workdir, search_config(args), progress=not args.quiet,
                         searcher_options=args.options)
    except NoArchMeetsTarget as err:
        print(f"donna search: nothing meets {args.target_ms} ms: {err}", file=sys.stderr)
        return 1
    sel = out.selected
    print(f"\nfront of {len(out.rows)} architectures; selected {sel['key']}: predicted accuracy "
          f"{sel['predicted_accuracy']:.4f}, measured {_opt(sel.get('measured_ms'))} ms "
          f"(target {args.target_ms} ms, table predicted {sel['predicted_ms']:.4f} ms)")
    print(f"  {sel['arch']}")
    print(f"written: {out.paths['pareto.csv'].parent}/ (pareto.csv, pareto.png, selected.json, pareto/*.json)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from donna.report import write_report

    paths = write_report(args.workdir, measure_teacher_latency=args.measure_teacher)
    for skipped in paths.skipped:
        print(f"skipped {skipped}")
    print(f"report: {paths.html} (self-contained) and {paths.markdown}")
    return 0


def _arch_show(args: argparse.Namespace) -> int:
    info = describe_arch(resolve_arch(args.arch))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    arch = resolve_arch(args.arch)
    print(f"arch   {arch.to_string()}")
    print(f"key    {info['key']}    space {arch.space or '-'}")
    print(f"input  {arch.in_channels}x{arch.input_size}x{arch.input_size}    classes {arch.num_classes}")
    print(f"{'':6}{'type':5} {'k':>2} {'s':>2} {'e':>4} {'d':>2} {'c_out':>6} {'se':>5} act")
    rows = [("stem", b) for b in arch.stem] + [(f"b{i}", b) for i, b in enumerate(arch.blocks)]
    for name, b in rows:
        print(f"{name:6}{b.type:5} {b.kernel:>2} {b.stride:>2} {b.expansion:>4g} {b.depth:>2} "
              f"{b.out_channels:>6} {b.se:>5g} {b.act}")
    print(f"head  conv1x1 {arch.head.channels}, {arch.head.act}, dropout {arch.head.dropout:g}")
    print(f"params {info['params']:,}    MACs {info['macs']:,}")
    return 0


def _arch_sample(args: argparse.Namespace) -> int:
    arch = get_space(args.space).sample(args.seed).with_provenance({"searcher": "sample", "seed": args.seed})
    print(arch.to_json().rstrip() if args.json else arch.to_string())
    return 0


def _arch_list(args: argparse.Namespace) -> int:
    for name in list_spaces():
        space = get_space(name)
        print(f"space   {name:22} {space.num_slots} slots, {space.size:.3g} architectures  {space.description}")
    for name in list_presets():
        print(f"preset  {name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``donna``; a bad flag value is refused here, in one line, before any work."""
    parser = OneLineParser(prog="donna", description="Hardware-aware NAS after DONNA.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from donna import cli_config as flags

    build = sub.add_parser("build-predictor", help="teacher -> blockwise distillation -> NSR table -> labels -> "
                           "accuracy predictor")
    flags.add_predictor_args(build)
    build.set_defaults(func=_build_predictor, lock="create")
    search = sub.add_parser("search", help="hardware-aware search (nsga2, random, pc-darts, dso-nas) under a "
                            "latency target, front measured on the device")
    flags.add_search_args(search)
    search.set_defaults(func=_search, lock="existing", check=flags.check_search_args)
    finetune = sub.add_parser("finetune", help="finetune an architecture from its BKD weights with distillation, "
                              "export to ONNX, measure and report")
    flags.add_finetune_args(finetune)
    finetune.set_defaults(func=_finetune, lock="existing", check=flags.check_run_folder)
    run = sub.add_parser("run", help="the whole pipeline (build-predictor, search, finetune) on the embedded default")
    flags.add_run_args(run)
    run.set_defaults(func=_run, lock="create")
    report = sub.add_parser("report", help="one self-contained HTML page (and report.md) of a whole run folder")
    report.add_argument("--workdir", required=True, help="the run folder")
    report.add_argument("--measure-teacher", action="store_true",
                        help="measure the teacher's latency once (for the speed-up), on the chosen model's device")
    report.set_defaults(func=_report)

    arch = sub.add_parser("arch", help="show, sample and list architectures, spaces and presets")
    arch_sub = arch.add_subparsers(dest="arch_command", metavar="ACTION", required=True)
    show = arch_sub.add_parser("show", help="print an architecture's blocks, params, MACs and key")
    show.add_argument("arch", help="architecture string, IR JSON file or preset name")
    show.add_argument("--json", action="store_true", help="print the IR JSON with params and macs")
    show.set_defaults(func=_arch_show)
    sample = arch_sub.add_parser("sample", help="print a uniformly random member of a space")
    sample.add_argument("--space", default="mbconv-tiny", help="space name or JSON file")
    sample.add_argument("--seed", type=int_at_least(0), default=0)
    sample.add_argument("--json", action="store_true", help="print the IR JSON instead of the string")
    sample.set_defaults(func=_arch_sample)
    arch_sub.add_parser("list", help="list the shipped spaces and presets").set_defaults(func=_arch_list)
    for command in [*sub.choices.values(), *arch_sub.choices.values()]:  # `--debug` after the command too
        if "--debug" not in command._option_string_actions:
            command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                 help="show the full traceback of an error")
    return parser


def _dispatch(args: argparse.Namespace) -> int:
    """Cross-flag checks, then the command; a stage holds its run folder's lock while it works."""
    check = getattr(args, "check", None)
    if check is not None:
        check(args)
    lock, workdir = getattr(args, "lock", None), Path(getattr(args, "workdir", "."))
    if lock is None or (lock == "existing" and not workdir.is_dir()):  # nothing there to guard (the stage says so)
        return args.func(args)
    with folder_lock(workdir, command=f"donna {args.command}"):
        return args.func(args)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``donna`` console script: one line on stderr for any failure (``--debug``: traceback)."""
    args = build_parser().parse_or_status(argv)
    if isinstance(args, int):
        return args
    return run_guarded("donna", lambda: _dispatch(args), debug=getattr(args, "debug", False))


if __name__ == "__main__":
    sys.exit(main())
