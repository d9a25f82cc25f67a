"""The ``donna`` command line: thin wrappers that parse, call one library function, print."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from blocks import describe_arch, get_space, list_presets, list_spaces, resolve_arch

PENDING: dict[str, str] = {}


def _build_predictor(args: argparse.Namespace) -> int:
    from donna.cli_config import predictor_config
    from donna.pipeline import build_predictor
    from donna.predictor import quality_table

    result = build_predictor(args.workdir, predictor_config(args), progress=not args.quiet)
    print(f"\npredictor fitted on {len(result.labels)} labelled architectures "
          f"(ridge alpha {result.predictor.alpha:.3g}); held-out (leave-one-out) ranking quality:")
    print(quality_table(result.predictor).to_string(float_format=lambda v: f"{v:.3f}"))
    times = ", ".join(f"{k} {v:.0f}s" for k, v in result.seconds.items())
    print(f"\nstage times this call: {times}\nwritten: {args.workdir}/predictor.json, labels.csv, nsr.csv")
    return 0


def _finetune(args: argparse.Namespace) -> int:
    from donna.cli_config import finetune_config
    from donna.finetune_stage import run_finetune

    m = run_finetune(args.workdir, finetune_config(args), progress=not args.quiet)
    print(f"\nfinetuned {m['key']} for {m['epochs']} epochs from {m['init']} weights: val accuracy "
          f"{m['val_accuracy']:.4f} (predicted {_opt(m['predicted_accuracy'])}), "
          f"test accuracy {m['test_accuracy']:.4f}")
    print(f"latency on {m['latency_device']}: measured {m['measured_ms']:.4f} ms (table predicted "
          f"{_opt(m['predicted_ms'])} ms); ONNX agrees with torch on {m['onnx_torch_top1_agreement']:.2%} "
          "of test top-1")
    print(f"report: {m['out']}/report.md")
    return 0


def _opt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _run(args: argparse.Namespace) -> int:
    from donna.cli_config import run_configs
    from donna.run_all import run_pipeline

    report = run_pipeline(args.workdir, *run_configs(args), progress=not args.quiet)
    print(f"\nwhole pipeline done in {report['seconds']:.0f} s; report: {report['report']}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from donna.cli_config import search_config, searcher_options
    from donna.search_stage import run_search
    from search import NoArchMeetsTarget

    try:
        out = run_search(args.workdir, search_config(args), progress=not args.quiet,
                         searcher_options=searcher_options(args.set))
    except NoArchMeetsTarget as err:
        print(f"donna search: nothing meets {args.target_ms} ms: {err}", file=sys.stderr)
        return 1
    sel = out.selected
    print(f"\nfront of {len(out.rows)} architectures; selected {sel['key']}: predicted accuracy "
          f"{sel['predicted_accuracy']:.4f}, measured {sel['measured_ms']:.4f} ms "
          f"(target {args.target_ms} ms, table predicted {sel['predicted_ms']:.4f} ms)")
    print(f"  {sel['arch']}")
    print(f"written: {out.paths['pareto.csv'].parent}/ (pareto.csv, pareto.png, selected.json, pareto/*.json)")
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


def _pending(name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        print(f"donna {name}: not available in this version yet ({PENDING[name]})", file=sys.stderr)
        return 2
    return run


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``donna``."""
    parser = argparse.ArgumentParser(prog="donna", description="Hardware-aware NAS after DONNA.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    from donna.cli_config import add_finetune_args, add_predictor_args, add_run_args, add_search_args

    build = sub.add_parser("build-predictor", help="teacher -> blockwise distillation -> NSR table -> labels -> "
                           "accuracy predictor")
    add_predictor_args(build)
    build.set_defaults(func=_build_predictor)
    search = sub.add_parser("search", help="hardware-aware search (nsga2, random, pc-darts, dso-nas) under a "
                            "latency target, front measured on the device")
    add_search_args(search)
    search.set_defaults(func=_search)
    finetune = sub.add_parser("finetune", help="finetune an architecture from its BKD weights with distillation, "
                              "export to ONNX, measure and report")
    add_finetune_args(finetune)
    finetune.set_defaults(func=_finetune)
    run = sub.add_parser("run", help="the whole pipeline (build-predictor, search, finetune) on the embedded default")
    add_run_args(run)
    run.set_defaults(func=_run)
    for name, help_text in PENDING.items():
        sub.add_parser(name, help=help_text).set_defaults(func=_pending(name))

    arch = sub.add_parser("arch", help="show, sample and list architectures, spaces and presets")
    arch_sub = arch.add_subparsers(dest="arch_command", metavar="ACTION", required=True)
    show = arch_sub.add_parser("show", help="print an architecture's blocks, params, MACs and key")
    show.add_argument("arch", help="architecture string, IR JSON file or preset name")
    show.add_argument("--json", action="store_true", help="print the IR JSON with params and macs")
    show.set_defaults(func=_arch_show)
    sample = arch_sub.add_parser("sample", help="print a uniformly random member of a space")
    sample.add_argument("--space", default="mbconv-tiny", help="space name or JSON file")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--json", action="store_true", help="print the IR JSON instead of the string")
    sample.set_defaults(func=_arch_sample)
    arch_sub.add_parser("list", help="list the shipped spaces and presets").set_defaults(func=_arch_list)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``donna`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as err:
        print(f"donna: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
