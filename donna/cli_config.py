"""The ``donna`` stages' command line, generated from the config tree (``donna.config.DonnaConfig``).

One function (``add_tree_args``) walks the tree's dataclass fields, their types, their one-line comments and
their metadata (ranges, choices, kinds checked against the registries) and makes one flag per field, with
its default in the help; ``--set section.field=VALUE`` reaches any field, ``--config RUN/config.json`` makes
a saved run's settings the defaults, and ``tree_from_args`` turns the parsed flags back into the tree.

Why generated argparse and not jsonargparse or tyro (both install from PyPI here): both would replace
``blocks.cli_errors.OneLineParser`` (one-line usage errors that the bad-input tests and the users'
scripts rely on) with their own multi-line error and help formats, and both name nested fields
``--bkd.epochs``, so every flag users already type (``--teacher-epochs``, ``--labels``, ``search
--device``) would need a hand-written alias layer on top. Walking the fields here is about a hundred lines,
adds no dependency, keeps the one-line errors and the existing flag names, and still gives every field a
flag, a checked type and its default in ``--help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import math
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blocks.cli_errors import finite_float, int_at_least, space_arg
from donna.config import (
    SECTIONS,
    SHARED,
    DataConfig,
    DonnaConfig,
    FinetuneConfig,
    SearchConfig,
    TeacherConfig,
    from_sections,
    section_from_dict,
)
from donna.predictor_stage import PredictorRunConfig

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
                section_from_dict(cls, section)
        except TypeError as err:
            raise ValueError(f"{path}: the {name!r} section does not fit ({err}); {redo}") from None


def check_search_args(args: argparse.Namespace) -> None:
    """Cross-flag checks of ``search`` (the run folder; the ``--set`` settings were checked with the tree)."""
    check_run_folder(args, ("run", "data"))


def check_finetune_args(args: argparse.Namespace) -> None:
    """Cross-flag checks of ``finetune``: the run folder, and its data set registered here (``--plugin``)."""
    from donna.data import DATASETS
    from donna.runfolder import RunFolder

    check_run_folder(args)
    run = RunFolder(args.workdir)
    name = (run.read_config().get("data") or {}).get("name")
    if name is not None and name not in DATASETS and not name.startswith("imagefolder:"):
        raise ValueError(f"data set {name!r} of {run.config_json} is not registered here; pass "
                         "--plugin MODULE, the module that registers it (as the Python code that built the run did)")


def data_name(text: str) -> str:
    """An argparse ``type``: a registered data set name or ``imagefolder:PATH``."""
    from donna.data import DATASETS, list_datasets

    if text not in DATASETS and not (text.startswith("imagefolder:") and len(text) > len("imagefolder:")):
        raise argparse.ArgumentTypeError(f"unknown data set {text!r}; known data sets: {', '.join(list_datasets())}")
    return text



# ---- the command line generated from the config tree --------------------------------------------------


@dataclass(frozen=True)
class Command:
    """What one ``donna`` command fills: the tree's top-level fields and sections it runs, and its own section
    (whose fields need no ``--section-`` prefix: ``donna finetune --epochs``)."""

    top: tuple[str, ...]
    sections: tuple[str, ...]
    own: str | None = None


COMMANDS = {
    "build-predictor": Command(("seed", "train_device", "space", "plugins", "ray_address"),
                               ("data", "teacher", "bkd", "score", "labels")),
    "search": Command(("seed", "latency_device", "plugins"), ("search",), "search"),
    "finetune": Command(("seed", "train_device", "latency_device", "plugins"), ("finetune",), "finetune"),
    "run": Command(("seed", "train_device", "latency_device", "space", "plugins", "ray_address"), SECTIONS),
    "compress": Command(("seed", "train_device", "latency_device", "plugins", "ray_address"), SECTIONS),
}
# donna run: None computes a target the space can meet; donna compress: targets are shares of the model's latency
COMMAND_DEFAULTS = {"run": {"search.target_ms": None}, "compress": {"search.target_ms": None}}
SEARCHER_FLAGS = {"--pop-size": ("pop_size", int_at_least(2)), "--generations": ("generations", int_at_least(1))}
# flags of earlier versions, kept as aliases: (flag, tree path, help)
LABEL_EPOCHS = ("--label-epochs", "labels.epochs", "alias of --labels-epochs")
ALIASES = {
    "build-predictor": [("--device", "train_device", "alias of --train-device (the torch device, not a profile)"),
                        LABEL_EPOCHS],
    "finetune": [("--device", "train_device", "alias of --train-device (the torch device, not a profile)")],
    "run": [("--device", "train_device", "alias of --train-device (the torch device, not a profile)"), LABEL_EPOCHS],
    "compress": [("--device", "train_device", "alias of --train-device (the torch device, not a profile)"),
                 LABEL_EPOCHS],
    "search": [("--device", "latency_device", "alias of --latency-device: the latency device profile searched for "
                "(`latency devices`), not a torch device"),
               ("--force-table", "search.force", "alias of --force")],
}


@dataclass(frozen=True)
class Setting:
    """One field of the tree as the command line sees it: its path (``bkd.epochs``), field, type and help."""

    path: str
    field: dataclasses.Field
    hint: Any
    comment: str

    @property
    def name(self) -> str:
        return self.path.rpartition(".")[2]

    def flag(self, command: Command) -> str:
        """``--data`` (a kept short name), ``--seed`` (top level or the command's own section), else
        ``--section-field``."""
        section, _, name = self.path.rpartition(".")
        if "flag" in self.field.metadata:
            return self.field.metadata["flag"]
        plain = not section or section == command.own
        return "--" + (name if plain else f"{section}_{name}").replace("_", "-")


def field_comments(cls: type) -> dict[str, str]:
    """The one-line comment of every field of dataclass ``cls`` (continuation comment lines joined)."""
    comments: dict[str, str] = {}
    last = None
    for line in inspect.getsource(cls).splitlines():
        found = re.match(r"\s+(\w+): [^#]*#\s?(.*)$", line)
        if found and found.group(1) in {f.name for f in dataclasses.fields(cls)}:
            last = found.group(1)
            comments[last] = found.group(2).strip()
        elif last and re.match(r"\s+#", line) and not re.match(r"\s+\w+:", line):
            comments[last] += " " + line.strip().lstrip("#").strip()
        else:
            last = None
    return comments


def tree_settings(command: Command) -> list[Setting]:
    """The settings a command exposes: its top-level fields, then its sections' own (not shared) fields."""
    out = []
    for prefix, cls, names in [("", DonnaConfig, command.top)] + [
            (f"{s}.", _section_class(s), None) for s in command.sections]:
        hints, comments = typing.get_type_hints(cls), field_comments(cls)
        for f in dataclasses.fields(cls):
            if (names is not None and f.name not in names) or "shared" in f.metadata or \
                    f.metadata.get("kind") == "searcher_settings":
                continue
            out.append(Setting(prefix + f.name, f, hints[f.name], comments.get(f.name, "")))
    return out


def _section_class(name: str) -> type:
    return type(getattr(DonnaConfig(), name))


def _inner(hint: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, ``(hint, False)`` otherwise."""
    args = typing.get_args(hint)
    if type(None) in args:
        return next(a for a in args if a is not type(None)), True
    return hint, False


KINDS: dict[str, Callable[[str], Any]] = {}  # filled below: kind -> argparse type


def value_parser(setting: Setting) -> Callable[[str], Any]:
    """The argparse ``type`` of a setting: its kind's check, its range, its choices; ``none`` for optional ones."""
    meta, (hint, optional) = setting.field.metadata, _inner(setting.hint)
    if meta.get("kind") in KINDS:
        base = KINDS[meta["kind"]]
    elif hint is int:
        base = int_at_least(meta.get("ge", 0), meta.get("le"))
    elif hint is float:
        low_open = "gt" in meta
        base = finite_float(meta.get("gt", meta.get("ge", -math.inf)), meta.get("le"), low_open=low_open)
    elif hint is bool:
        base = _boolean
    elif typing.get_origin(hint) in (list, dict):
        base = _json_value
    else:
        base = str
    if "choices" in meta:
        base = _one_of(meta["choices"], base)
    if not optional:
        return base

    def parse(text: str) -> Any:
        return None if text.lower() in ("none", "null") else base(text)

    parse.__name__ = getattr(base, "__name__", "value")
    return parse


def _one_of(choices: tuple[str, ...], base: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        if text not in choices:
            raise argparse.ArgumentTypeError(f"invalid choice {text!r} (choose from {', '.join(choices)})")
        return base(text)
    return parse


def _boolean(text: str) -> bool:
    if text.lower() in ("true", "1", "yes"):
        return True
    if text.lower() in ("false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def _json_value(text: str) -> Any:
    import json

    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not JSON (e.g. [\"a\", \"b\"] or {{\"k\": 1}})") from None


def _shown(value: Any) -> str:
    return "none" if value is None else json_text(value) if not isinstance(value, str) else value


def _get(tree: Any, path: str) -> Any:
    for part in path.split("."):
        tree = getattr(tree, part)
    return tree


def add_tree_args(parser: argparse.ArgumentParser, name: str, base: DonnaConfig, has_config: bool = False) -> None:
    """Adds one flag per setting of command ``name`` (help: the field's comment and its default, which is
    ``base``'s value: the embedded default, or the ``--config`` file's), its kept aliases, ``--set`` and
    ``--config``."""
    command = COMMANDS[name]
    groups = {"": parser.add_argument_group("run settings")}
    for section in command.sections:
        doc = " ".join((_section_class(section).__doc__ or "").split())
        groups[section] = parser.add_argument_group(f"{section} ({_section_class(section).__name__})", doc)
    for setting in tree_settings(command):
        default = _get(base, setting.path)
        if not has_config:
            default = COMMAND_DEFAULTS.get(name, {}).get(setting.path, default)
        required = setting.path == "search.target_ms" and name == "search" and (not has_config or default is None)
        group = groups[setting.path.rpartition(".")[0]]
        group.add_argument(setting.flag(command), **_flag_kwargs(setting, default, required))
    _add_aliases(parser, name, command)
    sets = "section.field=VALUE (any setting above, e.g. --set bkd.epochs=2)"
    if "search" in command.sections:
        sets += ("; KEY=VALUE or searcher.KEY=VALUE: a setting of the searcher, e.g. --set epochs=5 (pc-darts), "
                 "--set latency_weight=0.1; searchers and their settings: " + searcher_help())
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=sets + "; repeatable")
    parser.add_argument("--config", metavar="FILE", default=None,
                        help="a saved run's config.json: its settings become the defaults (flags still win)")


def _flag_kwargs(setting: Setting, default: Any, required: bool) -> dict[str, Any]:
    """``add_argument`` keywords of one setting: dest (its tree path), default, help, and how it parses."""
    via = "" if setting.path == "plugins" else f"; --set {setting.path}=..."
    shown = "required" if required else f"default: {_shown(default)}"
    kwargs: dict[str, Any] = {"dest": setting.path, "default": default, "required": required,
                              "help": f"{setting.comment} ({shown}{via})".replace("%", "%%")}
    if setting.path == "plugins":
        kwargs.update(action="append", metavar="MODULE", default=list(default))
    elif setting.hint is bool:
        kwargs["action"] = argparse.BooleanOptionalAction if default else "store_true"
    else:
        choices = setting.field.metadata.get("choices")
        kwargs.update(type=value_parser(setting),
                      metavar="{" + ",".join(choices) + "}" if choices else setting.name.upper())
    return kwargs


def _add_aliases(parser: argparse.ArgumentParser, name: str, command: Command) -> None:
    """The flags of earlier versions (``search --device``, ``--force-table``, ``--pop-size``) beside the new ones."""
    settings = {s.path: s for s in tree_settings(command)}
    for flag, path, text in ALIASES.get(name, []):
        kind = {"action": "store_true"} if settings[path].hint is bool else {"type": value_parser(settings[path])}
        parser.add_argument(flag, dest=path, default=argparse.SUPPRESS, help=text, **kind)
    if "search" in command.sections:
        for flag, (key, parse) in SEARCHER_FLAGS.items():
            parser.add_argument(flag, dest=f"searcher.{key}", type=parse, default=argparse.SUPPRESS,
                                help=f"the searcher's {key} (as --set {key}=N; default: the searcher's own)")


def searcher_help() -> str:
    """Every registered searcher with its settings and their defaults (from the searcher's config dataclass)."""
    from search import list_searchers

    parts = []
    for name in list_searchers():
        cls = _searcher_config_class(name)
        fields = "" if cls is None else ", ".join(f"{f.name}={_shown(_field_default(f))}"
                                                   for f in dataclasses.fields(cls) if f.name != "seed")
        parts.append(f"{name} ({fields or 'settings checked when it starts'})")
    return "; ".join(parts)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else None


def tree_from_args(args: argparse.Namespace, name: str, base: DonnaConfig) -> DonnaConfig:
    """The config tree of parsed arguments: ``base`` (defaults or ``--config``), the flags, then ``--set``.

    Raises:
        ValueError: a ``--set`` pair that names no setting, a shared one, or a bad value.
    """
    command = COMMANDS[name]
    values = {s.path: getattr(args, s.path) for s in tree_settings(command)}
    searcher = {k.partition(".")[2]: v for k, v in vars(args).items() if k.startswith("searcher.")}
    searcher_pairs = []
    for pair in getattr(args, "set", []):
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set bkd.epochs=2")
        path = _set_path(key, command)
        if path is None:
            searcher_pairs.append(f"{key.removeprefix('searcher.')}={text}")
            continue
        try:
            values[path] = value_parser(_setting(path, command))(text)
        except argparse.ArgumentTypeError as err:
            raise ValueError(f"--set {pair}: {err}") from None
    top = {k: v for k, v in values.items() if "." not in k}
    sections = {}
    for section in SECTIONS:
        fields = dataclasses.asdict(getattr(base, section))
        fields.update({k.partition(".")[2]: v for k, v in values.items() if k.startswith(section + ".")})
        sections[section] = fields
    if "search" in command.sections:
        sections["search"]["settings"] = _search_settings(sections["search"], searcher, searcher_pairs,
                                                          top.get("seed", base.seed))
    keep = {f.name: getattr(base, f.name) for f in dataclasses.fields(DonnaConfig) if f.name not in SECTIONS}
    return DonnaConfig(**{**keep, **top}, **{s: section_from_dict(_section_class(s), v) for s, v in sections.items()})


def _search_settings(search: dict[str, Any], flags: dict[str, Any], pairs: list[str], seed: int) -> dict[str, Any]:
    """The searcher's own settings: the base's, then ``--pop-size`` / ``--generations``, then ``--set KEY=VALUE``;
    each typed against the searcher's config, then checked with its schedule preset by building it once.

    Raises:
        ValueError: a setting the searcher does not have, a wrong type or range, or ``seed`` (the run's).
    """
    from donna.search_stage import searcher_plan
    from search import searcher_spec

    searcher, run_settings = search["searcher"], searcher_spec(search["searcher"]).run_settings
    flags = {k: v for k, v in flags.items() if k in run_settings}  # --pop-size: searchers that take one, as before
    settings = {**search["settings"], **flags}
    settings.update(searcher_options(pairs, searcher, {**settings, "seed": seed}))
    if "seed" in settings:
        raise ValueError("--set seed: the searcher's seed is the run's one seed; use --seed")
    config_cls = _searcher_config_class(searcher) if settings else None
    hints = typing.get_type_hints(config_cls) if config_cls else {}
    unknown = sorted(set(settings) - set(hints)) if config_cls else []
    if unknown:
        raise ValueError(f"{unknown[0]} is not a setting of searcher {searcher!r} (--{unknown[0].replace('_', '-')} "
                         f"or --set {unknown[0]}=...); its settings: {', '.join(hints)}")
    searcher_plan(section_from_dict(SearchConfig, {**search, "settings": settings, "seed": seed}))
    return settings


def _set_path(key: str, command: Command) -> str | None:
    """The tree path ``--set KEY=...`` addresses, or None for a searcher setting.

    Raises:
        ValueError: a key that names nothing this command has.
    """
    section, dot, name = key.partition(".")
    if key.startswith("searcher.") and "search" in command.sections:
        return None
    if key == "plugins":
        raise ValueError("--set plugins: plugins are imported before the flags are read; use --plugin MODULE")
    if not dot:
        if key in command.top or key in SHARED:
            return key
        if "search" in command.sections:
            return None
        raise ValueError(f"--set {key}: name a setting as section.field, e.g. --set {command.sections[0]}.{key}; "
                         f"sections here: {', '.join(command.sections)}")
    if section not in command.sections:
        raise ValueError(f"--set {key}: this command has no section {section!r}; its sections: "
                         f"{', '.join(command.sections)}")
    _setting(key, command)
    return key


def _setting(path: str, command: Command) -> Setting:
    found = {s.path: s for s in tree_settings(command)}
    if path in found:
        return found[path]
    section, _, name = path.rpartition(".")
    if name in SHARED or (not section and name in {f.name for f in dataclasses.fields(DonnaConfig)}):
        raise ValueError(f"--set {path}: {name} is one for the whole run; use --{name.replace('_', '-')}")
    known = [s.name for s in found.values() if s.path.startswith(section + ".")]
    raise ValueError(f"--set {path}: no setting {name!r} in section {section!r}; its settings: {', '.join(known)}")


def load_config_file(path: str, name: str) -> DonnaConfig:
    """The tree a saved ``config.json`` holds, for command ``name`` (its first section gives the seed).

    Raises:
        ValueError: the file is missing, not JSON, or holds sections the tree does not have.
    """
    from donna.runfolder import read_json

    config = read_json(path)
    if not isinstance(config, dict):
        raise ValueError(f"--config {path}: " + ("no such file" if config is None else
                                                 "not a run's config.json (a JSON object of sections)"))
    command = COMMANDS.get(name, COMMANDS["run"])
    try:
        tree = from_sections(config, main=command.sections[0])
    except TypeError as err:
        raise ValueError(f"--config {path}: a section does not fit this version's settings ({err})") from None
    if not isinstance(config.get("search"), dict):  # no search ran: its target is not known (donna search asks)
        tree = dataclasses.replace(tree, search=dataclasses.replace(tree.search, target_ms=None))
    return tree


def predictor_config(tree: DonnaConfig) -> PredictorRunConfig:
    """The ``PredictorRunConfig`` (what ``build_predictor`` takes) of a config tree."""
    return PredictorRunConfig(space=tree.space, data=tree.data, teacher=tree.teacher, bkd=tree.bkd, score=tree.score,
                              labels=tree.labels)


def run_configs(tree: DonnaConfig) -> tuple[PredictorRunConfig, SearchConfig, FinetuneConfig]:
    """The three stage configs of ``donna run``."""
    return predictor_config(tree), tree.search, tree.finetune


def import_plugins(modules: list[str]) -> None:
    """Imports the modules that register data sets or searchers (``--plugin``), and any installed package's
    ``donna.plugins`` entry points, before the registries are read.

    Raises:
        ValueError: a module that does not import.
    """
    import importlib
    from importlib.metadata import entry_points

    for point in entry_points(group="donna.plugins"):
        point.load()
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as err:
            raise ValueError(f"--plugin {module}: cannot import it ({err}); pass an importable module that "
                             "registers data sets or searchers (on PYTHONPATH)") from None


def plugin_module(text: str) -> str:
    """An argparse ``type`` of ``--plugin``: the module was imported before parsing (``import_plugins``)."""
    return text


KINDS.update(train_device=train_device, latency_device=latency_device, data=data_name, space=space_arg,
             arch=arch_ref, name=run_name, searcher=searcher_name, plugins=plugin_module)
