"""Command-line arguments of the ``donna`` stages and their translation into config dataclasses."""

from __future__ import annotations

import argparse

from donna.config import BKDConfig, DataConfig, ScoreConfig, TeacherConfig
from donna.finetune_stage import FinetuneConfig
from donna.labels import LabelConfig
from donna.pipeline import PredictorRunConfig
from donna.search_stage import SearchConfig


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="runs/demo", help="run folder (default: runs/demo)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_predictor_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``donna build-predictor`` (every one has an embedded-default value)."""
    _common(parser)
    parser.add_argument("--space", default="mbconv-tiny", help="search space name or JSON file")
    parser.add_argument("--data", default="digits", help="digits, cifar10 or imagefolder:PATH")
    parser.add_argument("--data-dir", default=None, help="folder with the data set's files (cifar10)")
    parser.add_argument("--download", action="store_true", help="cifar10: download into --data-dir if missing")
    parser.add_argument("--teacher", default=None, help="torchvision name (with --teacher-weights), a .pt "
                        "checkpoint of ours, a preset or IR JSON; default: train the space's reference")
    parser.add_argument("--teacher-weights", default=None, help="local weights file of a torchvision teacher")
    parser.add_argument("--teacher-epochs", type=int, default=TeacherConfig.epochs)
    parser.add_argument("--bkd-epochs", type=int, default=BKDConfig.epochs)
    parser.add_argument("--bkd-mode", choices=("supernet", "independent"), default=BKDConfig.mode)
    parser.add_argument("--labels", type=int, default=LabelConfig.num_labels, help="architectures to label")
    parser.add_argument("--label-epochs", type=int, default=LabelConfig.epochs, help="finetune epochs per label")
    parser.add_argument("--seed", type=int, default=0, help="seeds every stage")
    parser.add_argument("--device", default="auto", help="training device: auto (CUDA when present), cpu, cuda")


def predictor_config(args: argparse.Namespace) -> PredictorRunConfig:
    """The ``PredictorRunConfig`` of parsed ``build-predictor`` arguments."""
    return PredictorRunConfig(
        space=args.space,
        data=DataConfig(name=args.data, data_dir=args.data_dir, download=args.download, seed=args.seed),
        teacher=TeacherConfig(source=args.teacher, weights=args.teacher_weights, epochs=args.teacher_epochs,
                              seed=args.seed, device=args.device),
        bkd=BKDConfig(epochs=args.bkd_epochs, mode=args.bkd_mode, seed=args.seed, device=args.device),
        score=ScoreConfig(seed=args.seed, device=args.device),
        labels=LabelConfig(num_labels=args.labels, epochs=args.label_epochs, seed=args.seed, device=args.device),
    )


def add_search_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``donna search``."""
    _common(parser)
    parser.add_argument("--device", default=SearchConfig.device, help="latency device profile (latency devices)")
    parser.add_argument("--target-ms", type=float, required=True, help="latency budget in milliseconds")
    parser.add_argument("--searcher", default=SearchConfig.searcher, help="nsga2, random, pc-darts, dso-nas")
    parser.add_argument("--name", default=None, help="output folder search/NAME (default: the searcher's name)")
    parser.add_argument("--latency", choices=("table", "measure"), default=SearchConfig.latency,
                        help="table: the device's latency table; measure: measure every candidate (DONNA)")
    parser.add_argument("--pop-size", type=int, default=SearchConfig.pop_size)
    parser.add_argument("--generations", type=int, default=SearchConfig.generations)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--measure-max", type=int, default=SearchConfig.measure_max,
                        help="front members measured on the device (nearest the target first)")
    parser.add_argument("--force-table", action="store_true", help="accept a table from another device fingerprint")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a searcher setting, e.g. --set epochs=5 (pc-darts), --set latency_weight=0.1 "
                        "(opt-in latency penalty), --set search_epochs=10 (dso-nas); repeatable")


def searcher_options(pairs: list[str]) -> dict:
    """``["epochs=5", "latency_weight=0.1"]`` -> ``{"epochs": 5, "latency_weight": 0.1}`` (JSON values)."""
    import json

    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set epochs=5")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The ``SearchConfig`` of parsed ``search`` arguments."""
    return SearchConfig(device=args.device, target_ms=args.target_ms, searcher=args.searcher, name=args.name,
                        latency=args.latency,
                        pop_size=args.pop_size, generations=args.generations, seed=args.seed,
                        measure_max=args.measure_max, force_table=args.force_table)


def add_finetune_args(parser: argparse.ArgumentParser, with_common: bool = True) -> None:
    """Arguments of ``donna finetune``."""
    if with_common:
        _common(parser)
        parser.add_argument("--arch", default=FinetuneConfig.arch,
                            help="selected (latest search), selected:SEARCHER, a key from pareto.csv, or an IR .json")
        parser.add_argument("--device", default=FinetuneConfig.device, help="training device: auto, cpu, cuda")
        parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=FinetuneConfig.epochs)
    parser.add_argument("--lr", type=float, default=FinetuneConfig.lr)
    parser.add_argument("--kd-weight", type=float, default=FinetuneConfig.kd_weight,
                        help="weight of distillation from the teacher (0 = labels only)")
    parser.add_argument("--init", choices=("bkd", "scratch"), default=FinetuneConfig.init,
                        help="bkd: distilled block weights (DONNA); scratch: fresh weights, for comparison")
    parser.add_argument("--latency-device", default=FinetuneConfig.latency_device,
                        help="device profile the exported model is measured on")


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """The ``FinetuneConfig`` of parsed ``finetune`` arguments."""
    return FinetuneConfig(arch=getattr(args, "arch", "selected"), epochs=args.epochs, lr=args.lr,
                          kd_weight=args.kd_weight, init=args.init, device=args.device,
                          latency_device=args.latency_device, seed=args.seed)


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``donna run``: the predictor's, then the search target and the finetune recipe."""
    add_predictor_args(parser)
    parser.add_argument("--latency-device", default="cpu", help="device profile searched for and measured on")
    parser.add_argument("--target-ms", type=float, default=None,
                        help="latency budget; default: the 30th percentile of the table's latency over the space")
    parser.add_argument("--generations", type=int, default=SearchConfig.generations)
    parser.add_argument("--finetune-epochs", type=int, default=FinetuneConfig.epochs)


def run_configs(args: argparse.Namespace) -> tuple[PredictorRunConfig, SearchConfig, FinetuneConfig]:
    """The three stage configs of ``donna run``."""
    search = SearchConfig(device=args.latency_device, target_ms=args.target_ms or 0.0, generations=args.generations,
                          seed=args.seed)
    finetune = FinetuneConfig(epochs=args.finetune_epochs, seed=args.seed, device=args.device,
                              latency_device=args.latency_device)
    return predictor_config(args), search, finetune
