"""Command-line arguments of the ``donna`` stages and their translation into config dataclasses."""

from __future__ import annotations

import argparse
import math
import re
import typing
from pathlib import Path
from typing import Any

from blocks.cli_errors import finite_float, int_at_least, space_arg
from donna.config import BKDConfig, DataConfig, ScoreConfig, TeacherConfig
from donna.finetune_stage import FinetuneConfig
from donna.labels import LabelConfig
from donna.predictor_stage import PredictorRunConfig
from donna.search_stage import SearchConfig

SEED = int_at_least(0, 2**32 - 1)
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def run_name(text: str) -> str:
    """An argparse ``type``: a name that becomes one folder inside the run folder (no separators, no ``..``)."""
    if not NAME_PATTERN.fullmatch(text) or ".." in text:
        raise argparse.ArgumentTypeError(f"{text!r} is not a plain name; use letters, digits, '.', '_' and '-' "
                                         "(up to 64, no '/' or '..'): it names a folder inside the run folder")
    return text


def latency_device(text: str) -> str:
    """An argparse ``type``: a known latency device profile (``latency devices`` lists them)."""
    from latency.profiles import list_profiles

    try:
        known = list_profiles()
    except ValueError as err:  # a broken user profile file
        raise argparse.ArgumentTypeError(str(err)) from None
    if text not in known:
        raise argparse.ArgumentTypeError(f"unknown device profile {text!r}; known devices: {', '.join(known)}")
    return text


def train_device(text: str) -> str:
    """An argparse ``type``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, refused when CUDA is asked for but absent."""
    import torch

    if text == "auto":
        return text
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"unknown training device {text!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r} asked for, but CUDA is not available here; use auto or cpu")
    return text


def arch_ref(text: str) -> str:
    """An argparse ``type``: ``selected``, ``selected:NAME``, an architecture key, or an IR .json file that parses."""
    from blocks import Arch

    if text == "selected":
        return text
    if text.startswith("selected:"):
        run_name(text.partition(":")[2])
        return text
    if text.endswith(".json"):
        try:
            Arch.from_json(Path(text))
        except OSError as err:
            raise argparse.ArgumentTypeError(f"{text}: {err.strerror or err}") from None
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as err:
            raise argparse.ArgumentTypeError(f"{text}: not a valid architecture JSON ({err})") from None
        return text
    if not re.fullmatch(r"[0-9a-f]{16}", text):
        raise argparse.ArgumentTypeError(f"{text!r} is neither selected, selected:NAME, a 16-hex-digit key from "
                                         "pareto.csv, nor an architecture .json file")
    return text


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="runs/demo", help="run folder (default: runs/demo)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback of an error")


def add_predictor_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``donna build-predictor`` (every one has an embedded-default value)."""
    _common(parser)
    parser.add_argument("--space", type=space_arg, default="mbconv-tiny", help="search space name or JSON file")
    parser.add_argument("--data", type=data_name, default=DataConfig.name,
                        help="glyphs (generated offline; default), digits (fast smoke), cifar10 or imagefolder:PATH")
    parser.add_argument("--data-dir", default=None, help="folder with the data set's files (cifar10)")
    parser.add_argument("--download", action="store_true", help="cifar10: download into --data-dir if missing")
    parser.add_argument("--teacher", default=None, help="torchvision name (with --teacher-weights), a .pt "
                        "checkpoint of ours, a preset or IR JSON; default: train the space's reference")
    parser.add_argument("--teacher-weights", default=None, help="local weights file of a torchvision teacher")
    parser.add_argument("--teacher-epochs", type=int_at_least(1), default=TeacherConfig.epochs)
    parser.add_argument("--bkd-epochs", type=int_at_least(1), default=BKDConfig.epochs)
    parser.add_argument("--bkd-mode", choices=("supernet", "independent"), default=BKDConfig.mode)
    parser.add_argument("--labels", type=int_at_least(4), default=LabelConfig.num_labels,
                        help="architectures to label (at least 4: the predictor's fit needs them)")
    parser.add_argument("--label-epochs", type=int_at_least(1), default=LabelConfig.epochs,
                        help="finetune epochs per label")
    parser.add_argument("--seed", type=SEED, default=0, help="seeds every stage")
    parser.add_argument("--device", type=train_device, default="auto",
                        help="training device: auto (CUDA when present), cpu, cuda")


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
    parser.add_argument("--device", type=latency_device, default=SearchConfig.device,
                        help="latency device profile (latency devices)")
    parser.add_argument("--target-ms", type=finite_float(0.0), required=True, help="latency budget in milliseconds")
    parser.add_argument("--searcher", type=searcher_name, default=SearchConfig.searcher,
                        help="nsga2, random, exact (whole front, additive objectives), pc-darts, dso-nas")
    parser.add_argument("--schedule", default=SearchConfig.schedule,
                        help="the searcher's schedule preset: paper (the published schedule; default) or quick "
                        "(minutes on the embedded default on a CPU core); printed with its cost before the search")
    parser.add_argument("--name", type=run_name, default=None,
                        help="output folder search/NAME (default: the searcher's name)")
    parser.add_argument("--latency", choices=("table", "measure"), default=SearchConfig.latency,
                        help="table: the device's latency table; measure: measure every candidate (DONNA)")
    parser.add_argument("--pop-size", type=int_at_least(2), default=SearchConfig.pop_size)
    parser.add_argument("--generations", type=int_at_least(1), default=SearchConfig.generations)
    parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--measure-max", type=int_at_least(1), default=SearchConfig.measure_max,
                        help="front members measured on the device (nearest the target first)")
    parser.add_argument("--force-table", action="store_true", help="accept a table from another device fingerprint")
    parser.add_argument("--no-measure", action="store_true", help="select on predicted latency and print the command "
                        "that measures the front on the device machine")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a searcher setting, e.g. --set epochs=5 (pc-darts), --set latency_weight=0.1 "
                        "(opt-in latency penalty), --set search_epochs=10 (dso-nas); repeatable")


def searcher_options(pairs: list[str], searcher: str | None = None, base: dict[str, Any] | None = None) -> dict:
    """``["epochs=5", "latency_weight=0.1"]`` -> ``{"epochs": 5, "latency_weight": 0.1}`` (JSON values).

    With ``searcher``, every value is checked against the type of the searcher's setting of that name, and
    the settings together with ``base`` (the flags, e.g. ``pop_size``) against the searcher's own ranges.

    Raises:
        ValueError: a malformed pair, an unknown setting, a value of the wrong type or out of range.
    """
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
    if searcher is not None:
        options = _check_searcher_settings(searcher, options, base or {})
    return options


def searcher_name(text: str) -> str:
    """An argparse ``type``: a known searcher (``list_searchers()``, plug-ins included), not imported yet."""
    from search import check_searcher

    try:
        check_searcher(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None
    return text


def _searcher_config_class(searcher: str) -> type | None:
    """The settings dataclass of a registered searcher (``None`` when it has none to check against)."""
    import dataclasses

    from search import check_searcher, create_searcher

    check_searcher(searcher)
    try:
        config = create_searcher(searcher).config
    except (TypeError, ValueError, AttributeError):  # a searcher that needs arguments to exist: checked later
        return None
    return type(config) if dataclasses.is_dataclass(config) else None


def _typed(searcher: str, key: str, value: Any, hint: Any) -> Any:
    """``value`` checked against the type ``hint`` of setting ``key`` (``int``, ``float``, ``X | None``, tuples)."""
    args = typing.get_args(hint)
    if value is None and type(None) in args:
        return None
    if type(None) in args:
        hint = next(a for a in args if a is not type(None))
    expected = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}
    origin = typing.get_origin(hint)
    if origin is tuple:
        inner = typing.get_args(hint)
        if isinstance(value, list) and len(value) == len(inner):
            return tuple(_typed(searcher, key, v, t) for v, t in zip(value, inner))
        msg = f"a list of {len(inner)} values, e.g. {list(t() for t in inner)}"
        raise ValueError(f"--set {key}={json_text(value)}: searcher {searcher!r} takes {msg} for {key}")
    ok = {int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value),
          bool: isinstance(value, bool), str: isinstance(value, str)}.get(hint, True)
    if not ok:
        raise ValueError(f"--set {key}={json_text(value)}: searcher {searcher!r} takes {expected[hint]} for {key}")
    return value


def json_text(value: Any) -> str:
    """How a ``--set`` value was written (JSON for non-strings)."""
    import json

    return value if isinstance(value, str) else json.dumps(value)


def _check_searcher_settings(searcher: str, options: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    from search.base import make_config

    config_cls = _searcher_config_class(searcher)
    if config_cls is None:
        return options
    hints = typing.get_type_hints(config_cls)
    unknown = sorted(set(options) - set(hints))
    if unknown:
        raise ValueError(f"--set {unknown[0]}: unknown setting for searcher {searcher!r}; allowed: "
                         f"{', '.join(hints)}")
    checked = {key: _typed(searcher, key, value, hints[key]) for key, value in options.items()}
    try:
        make_config(config_cls, searcher, {**{k: v for k, v in base.items() if k in hints}, **checked})
    except (TypeError, ValueError) as err:
        raise ValueError(f"--set: {err}") from None
    return checked


def check_run_folder(args: argparse.Namespace, sections: tuple[str, ...] = ("run", "data", "teacher")) -> None:
    """Refuses a ``--workdir`` that is a file, or whose ``config.json`` lacks what a later stage reads, before any work.

    Raises:
        ValueError: naming the file, the missing or malformed section, and what to do.
    """
    from donna.runfolder import RunFolder, read_json

    workdir = Path(args.workdir)
    if workdir.exists() and not workdir.is_dir():
        raise ValueError(f"--workdir {workdir} is a file, not a run folder; pass the folder of a DONNA run")
    path = RunFolder(workdir).config_json
    config = read_json(path)
    if config is None:
        return  # no run yet: the stage says which command to run first
    redo = f"run `donna build-predictor --workdir {workdir}` with the run's flags again, or use a new --workdir"
    if not isinstance(config, dict):
        raise ValueError(f"{path} holds a {type(config).__name__}, not the run's settings; {redo}")
    for name, cls in (("run", None), ("data", DataConfig), ("teacher", TeacherConfig)):
        if name not in sections:
            continue
        section = config.get(name)
        if not isinstance(section, dict):
            raise ValueError(f"{path} has no {name!r} section (build-predictor writes it); {redo}")
        try:
            if cls is not None:
                cls(**section)
        except TypeError as err:
            raise ValueError(f"{path}: the {name!r} section does not fit ({err}); {redo}") from None


def check_search_args(args: argparse.Namespace) -> None:
    """Cross-flag checks of ``search`` (the run folder, the ``--set`` settings against the searcher)."""
    from donna.search_stage import searcher_plan

    check_run_folder(args, ("run", "data"))
    _, base = searcher_plan(search_config(args))  # the searcher's settings from the flags and the schedule
    args.options = searcher_options(args.set, args.searcher, base)


def data_name(text: str) -> str:
    """An argparse ``type``: a registered data set name or ``imagefolder:PATH``."""
    from donna.data import DATASETS, list_datasets

    if text not in DATASETS and not (text.startswith("imagefolder:") and len(text) > len("imagefolder:")):
        raise argparse.ArgumentTypeError(f"unknown data set {text!r}; known data sets: {', '.join(list_datasets())}")
    return text


def search_config(args: argparse.Namespace) -> SearchConfig:
    """The ``SearchConfig`` of parsed ``search`` arguments."""
    return SearchConfig(device=args.device, target_ms=args.target_ms, searcher=args.searcher, name=args.name,
                        latency=args.latency, schedule=getattr(args, "schedule", SearchConfig.schedule),
                        pop_size=args.pop_size, generations=args.generations, seed=args.seed,
                        measure_max=args.measure_max, force_table=args.force_table,
                        no_measure=getattr(args, "no_measure", False))


def add_finetune_args(parser: argparse.ArgumentParser, with_common: bool = True) -> None:
    """Arguments of ``donna finetune``."""
    if with_common:
        _common(parser)
        parser.add_argument("--arch", type=arch_ref, default=FinetuneConfig.arch,
                            help="selected (latest search), selected:SEARCHER, a key from pareto.csv, or an IR .json")
        parser.add_argument("--device", type=train_device, default=FinetuneConfig.device,
                            help="training device: auto, cpu, cuda")
        parser.add_argument("--seed", type=SEED, default=0)
    parser.add_argument("--epochs", type=int_at_least(1), default=FinetuneConfig.epochs)
    parser.add_argument("--lr", type=finite_float(0.0), default=FinetuneConfig.lr)
    parser.add_argument("--kd-weight", type=finite_float(0.0, 1.0, low_open=False), default=FinetuneConfig.kd_weight,
                        help="weight of distillation from the teacher (0 = labels only)")
    parser.add_argument("--init", choices=("bkd", "scratch"), default=FinetuneConfig.init,
                        help="bkd: distilled block weights (DONNA); scratch: fresh weights, for comparison")
    parser.add_argument("--latency-device", type=latency_device, default=FinetuneConfig.latency_device,
                        help="device profile the exported model is measured on")


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """The ``FinetuneConfig`` of parsed ``finetune`` arguments."""
    return FinetuneConfig(arch=getattr(args, "arch", "selected"), epochs=args.epochs, lr=args.lr,
                          kd_weight=args.kd_weight, init=args.init, device=args.device,
                          latency_device=args.latency_device, seed=args.seed)


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``donna run``: the predictor's, then the search target and the finetune recipe."""
    add_predictor_args(parser)
    parser.add_argument("--latency-device", type=latency_device, default="cpu",
                        help="device profile searched for and measured on")
    parser.add_argument("--target-ms", type=finite_float(0.0), default=None,
                        help="latency budget; default: the 30th percentile of the table's latency over the space")
    parser.add_argument("--generations", type=int_at_least(1), default=SearchConfig.generations)
    parser.add_argument("--finetune-epochs", type=int_at_least(1), default=FinetuneConfig.epochs)


def run_configs(args: argparse.Namespace) -> tuple[PredictorRunConfig, SearchConfig, FinetuneConfig]:
    """The three stage configs of ``donna run``."""
    search = SearchConfig(device=args.latency_device, target_ms=args.target_ms or 0.0, generations=args.generations,
                          seed=args.seed)
    finetune = FinetuneConfig(epochs=args.finetune_epochs, seed=args.seed, device=args.device,
                              latency_device=args.latency_device)
    return predictor_config(args), search, finetune
