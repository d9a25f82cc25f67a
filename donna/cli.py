"""The ``donna`` command line: thin wrappers that parse, call one library function, print."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from donna import passive_openmp

passive_openmp()  # before torch loads (blocks imports it)

from blocks import describe_arch, get_space, list_presets, list_spaces, resolve_arch  # noqa: E402
from blocks.cli_errors import OneLineParser, int_at_least, run_guarded  # noqa: E402
from blocks.lock import folder_lock  # noqa: E402


def _build_predictor(args: argparse.Namespace) -> int:
    from donna.cli_config import predictor_config
    from donna.predictor_stage import build_predictor, summary
    from donna.runfolder import RunFolder

    result = build_predictor(args.workdir, predictor_config(args.tree), progress=_progress(args))
    print("\n" + summary(result))
    run = RunFolder(args.workdir)
    print(f"written: {run.predictor_json}, {run.labels_csv.name}, {run.nsr_csv.name}, "
          f"{run.convergence_json.relative_to(run.root)}")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from donna import distributed
    from donna.finetune_stage import run_finetune
    from donna.predictor import predicted_text
    from donna.stages import count

    cfg = args.tree.finetune
    with distributed.process_group():  # under torchrun; nothing otherwise
        if not distributed.is_main():  # trains its share; rank 0 prints and writes
            run_finetune(args.workdir, cfg, progress=False)
            return 0
        with _one_stage("finetune", count(cfg.epochs, "epoch")):
            m = run_finetune(args.workdir, cfg, progress=_progress(args))
    print(f"\nfinetuned {m['key']} for {m['epochs']} epochs from {m['init']} weights: val accuracy "
          f"{m['val_accuracy']:.4f} (predicted label accuracy {predicted_text(m['predicted_accuracy'])}), "
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


def _progress(args: argparse.Namespace) -> bool:
    """Progress bars: on a terminal, unless ``--quiet``; redirected to a file they would fill it with redraws (the
    one line per stage still comes, on the console and in the run folder's ``run.log``)."""
    return not args.quiet and sys.stderr.isatty()


def _one_stage(stage: str, detail: str = "") -> Any:
    """The start and end lines of a command that is one stage (``donna search``, ``finetune``, ``report``)."""
    from donna.stages import StageClock, expected

    return StageClock({stage: expected(stage)}).stage(stage, detail)


def _opt(value: float | None) -> str:
    return "n/a" if value is None or value != value else f"{value:.4f}"  # None or NaN: not available


def _run(args: argparse.Namespace) -> int:
    from donna.cli_config import run_configs
    from donna.pipeline import run_pipeline

    report = run_pipeline(args.workdir, *run_configs(args.tree), progress=_progress(args))
    print(f"\nwhole pipeline done in {report['seconds']:.0f} s; finetune report: {report['report']}")
    if report.get("run_report"):
        print(f"the whole run on one page: {report['run_report']}")
    return 0


def _compress(args: argparse.Namespace) -> int:
    from donna.cli_config import run_configs
    from donna.compress_stage import run_compress
    from donna.runfolder import RunFolder

    predictor, search, finetune = run_configs(args.tree)
    table = run_compress(args.workdir, args.model, args.target_fraction, predictor, search, finetune,
                         progress=_progress(args))
    print("\n" + RunFolder(args.workdir).compress.compress_md.read_text())
    return 0 if all(m is not False for m in table["target_met"]) else 1


def _extend(args: argparse.Namespace) -> int:
    from donna.extend_stage import run_extend

    record = run_extend(args.workdir, args.space, args.labels, progress=_progress(args))
    folder = Path(args.workdir) / "extend" / record["space"]
    print("\n" + (folder / "extend.md").read_text())
    print(f"written: {folder}/ (extend.md, front_before_after.png and .csv; a run folder of the extended space: "
          f"`donna search --workdir {folder}`)")
    return 0


def _search(args: argparse.Namespace) -> int:
    from donna.predictor import predicted_text
    from donna.search_stage import run_search
    from search import NoArchMeetsTarget

    cfg = args.tree.search
    try:
        with _one_stage("search", f"{cfg.searcher}, target {cfg.target_ms} ms on {cfg.latency_device}"):
            out = run_search(args.workdir, cfg, progress=_progress(args))
    except NoArchMeetsTarget as err:
        print(f"donna search: nothing meets {cfg.target_ms} ms: {err}", file=sys.stderr)
        return 1
    sel = out.selected
    print(f"\nfront of {len(out.rows)} architectures; selected {sel['key']}: predicted label accuracy "
          f"{predicted_text(sel['predicted_accuracy'])}, measured {_opt(sel.get('measured_ms'))} ms "
          f"(target {cfg.target_ms} ms, table predicted {sel['predicted_ms']:.4f} ms)")
    print(f"  {sel['arch']}")
    print(f"written: {out.paths['pareto.csv'].parent}/ (pareto.csv, pareto.png, selected.json, pareto/*.json)")
    return 0


def _report(args: argparse.Namespace) -> int:
    from donna.report import write_report

    with _one_stage("report"):
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


def version() -> str:
    """The installed version of donna-nas."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("donna-nas")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


STAGES = {  # command: (help, run it, lock, cross-flag check)
    "build-predictor": ("teacher -> blockwise distillation -> NSR table -> labels -> accuracy predictor",
                        _build_predictor, "create", None),
    "search": ("hardware-aware search (nsga2, random, exact, pc-darts, dso-nas) under a latency target, front "
               "measured on the device", _search, "existing", "check_search_args"),
    "finetune": ("finetune an architecture from its BKD weights with distillation, export to ONNX, measure and "
                 "report", _finetune, "existing", "check_finetune_args"),
    "run": ("the whole pipeline (build-predictor, search, finetune) on the embedded default", _run, "create", None),
    "compress": ("hardware-aware compression: faster versions of a trained model (--model) for a device, at shares "
                 "of its latency (--target-fraction)", _compress, "create", None),
}


def _add_stage(sub: Any, name: str, trees: dict[str, Any]) -> None:
    """One stage command, its flags generated from the config tree (``donna.cli_config``)."""
    from donna import cli_config as flags
    from donna.config import DonnaConfig

    help_text, func, lock, check = STAGES[name]
    command = sub.add_parser(name, help=help_text, description=help_text)
    command.add_argument("--workdir", default="runs/demo", help="run folder (default: runs/demo)")
    command.add_argument("--quiet", action="store_true",
                         help="no progress bars (one line per stage is still printed and written to run.log)")
    base = trees.get(name)
    flags.add_tree_args(command, name, base or DonnaConfig(), has_config=base is not None)
    command.set_defaults(func=func, lock=lock, base=base or DonnaConfig(),
                         check=None if check is None else getattr(flags, check))


def build_parser(trees: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``donna``; a bad flag value is refused here, in one line, before any work.

    Args:
        trees: per stage command, the config tree of a ``--config`` file (its values become the defaults).
    """
    parser = OneLineParser(prog="donna", description="Hardware-aware NAS after DONNA.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--version", action="version", version=f"donna {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in STAGES:
        _add_stage(sub, name, trees or {})
    compress = sub.choices["compress"]
    compress.add_argument("--model", required=True, help="the trained model: a run's teacher.pt, or a finetune "
                          "folder (finetune/<key>/ with arch.json and model.pt)")
    compress.add_argument("--target-fraction", type=float, nargs="+", default=[0.5, 0.75],
                          help="latency targets as shares of the model's measured latency (default: 0.5 0.75)")
    extend = sub.add_parser("extend", help="search-space extension: add options to a run's space, reuse what was "
                            "distilled, and see per device whether the new options are worth it",
                            description="Trains and scores only the options NEW.json adds to the run's space, adds a "
                            "few labels, refits the predictor, extends the latency tables, and compares the exact "
                            "fronts before and after (WORKDIR/extend/<space>/).")
    extend.add_argument("--workdir", required=True, help="a run folder with a predictor (donna run or build-predictor)")
    extend.add_argument("--space", required=True, help="JSON file of the extended space: the run's space with values "
                        "added to knobs' choices (a block type, a kernel, attention)")
    extend.add_argument("--labels", type=int_at_least(1), default=10,
                        help="new labels, architectures that use new options (default: 10)")
    extend.add_argument("--quiet", action="store_true", help="no progress bars")
    extend.set_defaults(func=_extend, lock="existing")
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
    """The config tree, cross-flag checks, then the command; a stage holds its run folder's lock while it works."""
    from donna.cli_config import COMMANDS, tree_from_args

    if args.command in COMMANDS:
        args.tree = tree_from_args(args, args.command, args.base)
    check = getattr(args, "check", None)
    if check is not None:
        check(args)
    if getattr(args, "workdir", None) is None:  # arch show / sample / list
        return args.func(args)
    lock, workdir = getattr(args, "lock", None), Path(args.workdir)
    from donna import distributed

    if not distributed.is_main():  # a torchrun copy of rank 0's command: rank 0 holds the lock and writes run.log
        return args.func(args)
    if lock is None or (lock == "existing" and not workdir.is_dir()):  # nothing there to guard (the stage says so)
        with _run_log(args, workdir):
            return args.func(args)
    with folder_lock(workdir, command=f"donna {args.command}"), _run_log(args, workdir):
        return args.func(args)


def _run_log(args: argparse.Namespace, workdir: Path) -> Any:
    """The command's log: the run folder's ``run.log`` (appended) and the console; console only when the folder
    does not exist (a command that needs it then says so)."""
    from common.log import run_logging
    from donna.runfolder import RunFolder

    path = RunFolder(workdir).run_log if workdir.is_dir() else None
    return run_logging(path, command=f"{getattr(args, 'command_line', 'donna ' + args.command)} (donna {version()})")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``donna`` console script: one line on stderr for any failure (``--debug``: traceback)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    trees = run_guarded("donna", lambda: _preload(argv), debug="--debug" in argv)
    if isinstance(trees, int):
        return trees
    args = build_parser(trees).parse_or_status(argv)
    if isinstance(args, int):
        return args
    args.command_line = "donna " + shlex.join(argv)
    return run_guarded("donna", lambda: _dispatch(args), debug=getattr(args, "debug", False))


def parse_config(argv: list[str]) -> Any:
    """The config tree a stage command line means (``["search", "--target-ms", "5"]``), without running it.

    Raises:
        ValueError: a bad flag, ``--set`` pair or ``--config`` file (the one line the command would print).
    """
    from donna.cli_config import tree_from_args

    parser = build_parser(_preload(list(argv)))
    try:
        args = parser.parse_args(list(argv))
    except SystemExit:
        raise ValueError(f"bad arguments: {' '.join(argv)}") from None
    return tree_from_args(args, args.command, args.base)


def _preload(argv: list[str]) -> dict[str, Any]:
    """Before parsing: imports the ``--plugin`` modules (their data sets and searchers are then known to the
    flags' checks) and reads a ``--config`` file; returns ``{command: tree}`` for that file."""
    from donna.cli_config import COMMANDS, import_plugins, load_config_file

    def values(flag: str) -> list[str]:
        found = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]
        return found + [a.partition("=")[2] for a in argv if a.startswith(flag + "=")]

    import_plugins(values("--plugin"))
    files = values("--config")
    command = next((a for a in argv if a in COMMANDS), None)
    if not files or command is None:
        return {}
    tree = load_config_file(files[-1], command)
    import_plugins(tree.plugins)
    return {command: tree}


if __name__ == "__main__":
    sys.exit(main())
