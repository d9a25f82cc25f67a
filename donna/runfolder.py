"""The run folder: one type that owns every path of a DONNA run, plus its small shared file helpers.

Every stage asks :class:`RunFolder` where its inputs and outputs are; no other module spells a path
inside the run folder. ``RunFolder.entry(path)`` names the layout entry any file in a run folder belongs
to (a test lists a finished run and checks every file against it).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from common.fileio import atomic_write_text


def write_json(path: str | Path, data: Any) -> Path:
    """Writes ``data`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def read_json(path: str | Path) -> Any | None:
    """The JSON content of ``path``, or ``None`` when the file does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err}); delete it to rebuild this stage") from None


def fingerprint(data: Any) -> str:
    """A short stable hash of JSON-able ``data`` (names the inputs a stage's outputs came from)."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_config(workdir: str | Path, section: str, config: Any) -> Path:
    """Merges one stage's resolved config (a dataclass or dict) into ``workdir/config.json``."""
    return RunFolder(workdir).save_config(section, config)


def _space_copy_text(source: Path) -> str:
    """The text of the copy of a space file: ``{name: space}``, the name ``blocks.get_space`` gives the file."""
    try:
        data = json.loads(source.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{source}: not valid JSON ({err.msg} at line {err.lineno})") from None
    if isinstance(data, dict) and "slots" in data:  # a flat file is named for its stem
        data = {source.stem: data}
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


# Every path of a run folder, relative to its root, as (pattern, what it is). Patterns use fnmatch:
# ``*`` matches within one path part. The properties below build exactly these paths.
LAYOUT: tuple[tuple[str, str], ...] = (
    ("config.json", "resolved settings of every stage that ran"),
    ("run.log", "every command's log, appended: stage start and end lines with times and ETA, warnings"),
    ("space.json", "copy of a user-supplied --space FILE.json (the run reads this copy)"),
    (".lock", "the lock of the stage working in the folder (pid, command, start time)"),
    ("teacher.pt", "teacher weights (trained here, adapted, or copied from donna/pretrained)"),
    ("teacher.json", "what the teacher is, its fingerprint and val accuracy; written last"),
    ("teacher.ckpt-*.pt", "per-epoch teacher checkpoint of one set of settings (removed when done)"),
    ("library/slot*.pt", "BKD weights of one slot"),
    ("library/slot*.json", "manifest of one slot (fingerprint, history); written last"),
    ("library/slot*.ckpt.pt", "per-epoch BKD checkpoint of one slot (removed when done)"),
    ("library/bn_slot*.pt", "BatchNorm statistics of every option of one slot, recalibrated while scoring"),
    ("library/nsr_slot*.json", "NSR rows of one slot (merged into nsr.csv)"),
    ("library/convergence.json", "NSR of the teacher-identical options against the threshold"),
    ("nsr.csv", "NSR of every (slot, option) on the val split, with params and MACs"),
    ("labels.csv", "labelled architectures: accuracy, accuracy before finetuning, NSR, MACs, params"),
    ("predictor.json", "ridge coefficients and held-out ranking quality"),
    ("study/heldout-*of*.csv", "held-out labels of benchmarks/predictor_study.py, one file per shard"),
    ("study/report.json", "the predictor study's tables"),
    ("report.html", "the whole run on one self-contained page"),
    ("report.md", "the markdown twin of report.html"),
    ("report_files/*.png", "the images of report.md"),
    ("latency/exports/*/*", "cached ONNX exports and their sidecars"),
    ("latency/*/table.json", "latency table of one device"),
    ("latency/*/rows.jsonl", "measured rows of a latency table (resumable build)"),
    ("latency/*/measured.csv", "candidates measured whole on one device, by arch key"),
    ("compress/model.pt", "donna compress: the model it was given, as a teacher checkpoint"),
    ("compress/space.json", "donna compress: the space of the model's cheaper versions"),
    ("compress/original.json", "donna compress: the model's latency as first measured (the targets' base)"),
    ("compress/compress.csv", "donna compress: the model and each compressed version side by side"),
    ("compress/compress.md", "donna compress: the same as a table to read"),
    ("latency/*/measured_fresh*.csv", "chosen candidates measured again in fresh processes (the search's confirmation; "
     "_xN: in N processes)"),
    ("latency/*/teacher_latency.json", "the teacher measured on one device (for the report's speed-up)"),
    ("latency/*/exports/*/*", "cached exports of candidates measured whole"),
    ("search/*/pareto.csv", "the front of one search"),
    ("search/*/pareto/*.json", "the IR of every front member"),
    ("search/*/pareto.png", "the front against the latency target"),
    ("search/*/selected.json", "the member selected under the target"),
    ("search/*/history.csv", "per-generation history of the search"),
    ("search/*/search.json", "the searcher's settings and run information"),
    ("search/*/state/*/*", "resume checkpoints of one search, per settings and inputs"),
    ("finetune/*/model.pt", "finetuned weights (state_dict)"),
    ("finetune/*/model.onnx", "the finetuned model exported to ONNX"),
    ("finetune/*/arch.json", "the finetuned architecture's IR"),
    ("finetune/*/metrics.json", "accuracy, latency, ONNX check and the stage's fingerprint; written last"),
    ("finetune/*/curve.png", "the training curve"),
    ("finetune/*/report.md", "predicted against achieved"),
    ("finetune/*/checkpoint-*.pt", "per-epoch finetune checkpoint of one recipe (removed when done)"),
)
# ``extend/<space>/``: what ``donna extend`` made, itself a run folder of the extended space (``LAYOUT`` applies
# inside it; ``donna search`` and ``donna finetune`` take it as --workdir), plus these files and ``added/``, the run
# folder of the options the extension trained (its library, NSR and config).
EXTEND_LAYOUT: tuple[tuple[str, str], ...] = (
    ("extend.json", "donna extend: the base run, the options reused and trained per slot, each device's table"),
    ("extend.md", "donna extend: per device, whether the new options are worth it (the verdict)"),
    ("new_labels.csv", "donna extend: the labels it added (merged with the run's into labels.csv)"),
    ("front_before_after.png", "donna extend: each device's front before and after the extension"),
    ("front_before_after.csv", "donna extend: the same fronts, one row per member"),
)


@dataclasses.dataclass(frozen=True)
class LatencyFolder:
    """``latency/<device>/``: a device's latency table and the candidates measured on it."""

    root: Path

    @property
    def table_json(self) -> Path:
        """The latency table (``latency.LatencyTable.load`` reads the folder)."""
        return self.root / "table.json"

    @property
    def measured_csv(self) -> Path:
        """Candidates measured whole on the device, cached by ``arch.key``."""
        return self.root / "measured.csv"

    @property
    def teacher_latency_json(self) -> Path:
        """The teacher measured on the device (``donna report --measure-teacher``)."""
        return self.root / "teacher_latency.json"


@dataclasses.dataclass(frozen=True)
class CompressFolder:
    """``compress/``: what ``donna compress`` adds to its run folder (``donna.compress_stage``)."""

    root: Path

    @property
    def model_pt(self) -> Path:
        """The model to compress, as a teacher checkpoint (the run's ``--teacher``)."""
        return self.root / "model.pt"

    @property
    def space_json(self) -> Path:
        """The space of the model's cheaper versions (the run's ``--space``)."""
        return self.root / "space.json"

    @property
    def original_json(self) -> Path:
        """The model's latency as first measured (the targets' base, kept so a resumed call keeps its targets)."""
        return self.root / "original.json"

    @property
    def compress_csv(self) -> Path:
        """The model and each compressed version side by side."""
        return self.root / "compress.csv"

    @property
    def compress_md(self) -> Path:
        """The same, as a table to read."""
        return self.root / "compress.md"


@dataclasses.dataclass(frozen=True)
class ExtendFolder:
    """``extend/<name>/``: a run folder of the extended space (``run``) with ``donna extend``'s own files."""

    root: Path

    @property
    def run(self) -> RunFolder:
        """The extension as a run folder: its library reuses the run's weights, its predictor is refitted."""
        return RunFolder(self.root)

    @property
    def added(self) -> RunFolder:
        """``added/``: the run folder of the options the extension trained and scored (and nothing else)."""
        return RunFolder(self.root / "added")

    @property
    def extend_json(self) -> Path:
        """What the extension reused, trained, labelled and measured."""
        return self.root / "extend.json"

    @property
    def extend_md(self) -> Path:
        """The verdict per device."""
        return self.root / "extend.md"

    @property
    def new_labels_csv(self) -> Path:
        """The labels the extension added (resumable; merged with the run's into ``labels.csv``)."""
        return self.root / "new_labels.csv"

    @property
    def front_png(self) -> Path:
        """Each device's front before and after."""
        return self.root / "front_before_after.png"

    @property
    def front_csv(self) -> Path:
        """The fronts, one row per member."""
        return self.root / "front_before_after.csv"


@dataclasses.dataclass(frozen=True)
class SearchFolder:
    """``search/<name>/``: what one search wrote (``search.finalize_search`` writes the files)."""

    root: Path

    @property
    def name(self) -> str:
        """The search's name (its searcher's, unless ``--name`` gave another)."""
        return self.root.name

    @property
    def pareto_csv(self) -> Path:
        """The front: one row per member."""
        return self.root / "pareto.csv"

    @property
    def pareto_dir(self) -> Path:
        """The IR of every front member, ``<key>.json``."""
        return self.root / "pareto"

    def member_json(self, key: str) -> Path:
        """The IR of the front member ``key``."""
        return self.pareto_dir / f"{key}.json"

    @property
    def pareto_png(self) -> Path:
        """The front plotted against the latency target."""
        return self.root / "pareto.png"

    @property
    def selected_json(self) -> Path:
        """The member selected under the latency target."""
        return self.root / "selected.json"

    @property
    def search_json(self) -> Path:
        """The searcher's settings and run information."""
        return self.root / "search.json"

    @property
    def history_csv(self) -> Path:
        """Per-generation history."""
        return self.root / "history.csv"

    def state(self, key: str) -> Path:
        """The resume checkpoints of the search whose settings and inputs hash to ``key``."""
        return self.root / "state" / key


@dataclasses.dataclass(frozen=True)
class FinetuneFolder:
    """``finetune/<name>/``: one finetuned model and its report."""

    root: Path

    @property
    def model_pt(self) -> Path:
        """Finetuned weights (a state dict)."""
        return self.root / "model.pt"

    @property
    def model_onnx(self) -> Path:
        """The finetuned model exported to ONNX."""
        return self.root / "model.onnx"

    @property
    def arch_json(self) -> Path:
        """The architecture's IR."""
        return self.root / "arch.json"

    @property
    def metrics_json(self) -> Path:
        """Accuracy, latency and the stage's fingerprint; written last, marks the stage done."""
        return self.root / "metrics.json"

    @property
    def curve_png(self) -> Path:
        """The training curve."""
        return self.root / "curve.png"

    @property
    def report_md(self) -> Path:
        """Predicted against achieved."""
        return self.root / "report.md"

    def checkpoint(self, key: str) -> Path:
        """Per-epoch checkpoint of the recipe that hashes to ``key``."""
        return self.root / f"checkpoint-{key}.pt"

    def checkpoints(self) -> Iterator[Path]:
        """Every per-epoch checkpoint in the folder (removed once the stage is done)."""
        return self.root.glob("checkpoint-*.pt")


class RunFolder:
    """Every path of one DONNA run folder (see the README, "The run folder", and ``LAYOUT``)."""

    def __init__(self, workdir: str | Path) -> None:
        self.root = Path(workdir)

    # --- settings -----------------------------------------------------------------------------

    @property
    def config_json(self) -> Path:
        """Resolved settings of every stage that ran, one section per stage."""
        return self.root / "config.json"

    @property
    def run_log(self) -> Path:
        """The log of every command run in the folder, appended (``common.log.run_logging`` writes it)."""
        return self.root / "run.log"

    def read_config(self) -> dict[str, Any]:
        """``config.json`` as a dict (empty when no stage ran yet)."""
        return read_json(self.config_json) or {}

    def save_config(self, section: str, config: Any) -> Path:
        """Merges one stage's resolved config (a dataclass or dict) into ``config.json``."""
        merged = self.read_config()
        merged[section] = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
        return write_json(self.config_json, merged)

    @property
    def space_json(self) -> Path:
        """The copy of a user-supplied space file; later stages read it, not the user's file."""
        return self.root / "space.json"

    def space_record(self, source: str | Path) -> dict[str, str]:
        """What ``config.json`` records of a user-supplied space file: the copy's name and its SHA-256.

        A run rebuilt after the file changed then differs from the record and is refused, instead of
        mixing two spaces in one folder.
        """
        return {"space_file": self.space_json.name,
                "space_sha256": hashlib.sha256(_space_copy_text(Path(source)).encode()).hexdigest()}

    def copy_space(self, source: str | Path) -> Path:
        """Copies the space file ``source`` into ``space.json`` (which later stages read)."""
        text = _space_copy_text(Path(source))
        if not self.space_json.is_file() or self.space_json.read_text() != text:
            atomic_write_text(self.space_json, text)
        return self.space_json

    # --- teacher ------------------------------------------------------------------------------

    @property
    def teacher_pt(self) -> Path:
        """Teacher weights, when the teacher was trained here."""
        return self.root / "teacher.pt"

    @property
    def teacher_json(self) -> Path:
        """What the teacher is (fingerprint, source, val accuracy); written last, marks the teacher done."""
        return self.root / "teacher.json"

    def teacher_checkpoint(self, key: str) -> Path:
        """Per-epoch checkpoint of the teacher trained with the settings that hash to ``key``."""
        return self.root / f"teacher.ckpt-{key}.pt"

    # --- block library and scoring ------------------------------------------------------------

    @property
    def library(self) -> Path:
        """Block library: BKD weights per slot, checkpoints, recalibrated BatchNorm statistics."""
        return self.root / "library"

    def slot_weights(self, slot: int) -> Path:
        """Final BKD weights of one slot."""
        return self.library / f"slot{slot}.pt"

    def slot_manifest(self, slot: int) -> Path:
        """What the slot's weights are (fingerprint, training history); written last, marks the slot done."""
        return self.library / f"slot{slot}.json"

    def slot_manifests(self) -> list[Path]:
        """Every slot manifest in the library, in slot order."""
        return sorted(self.library.glob("slot*.json"))

    def slot_checkpoint(self, slot: int) -> Path:
        """Per-epoch BKD checkpoint of one slot (removed once the slot is done)."""
        return self.library / f"slot{slot}.ckpt.pt"

    def slot_bn(self, slot: int) -> Path:
        """BatchNorm statistics of every option of one slot, recalibrated while scoring."""
        return self.library / f"bn_slot{slot}.pt"

    def slot_scores(self, slot: int) -> Path:
        """NSR rows of one slot (a scoring job's result; merged into ``nsr.csv``)."""
        return self.library / f"nsr_slot{slot}.json"

    @property
    def convergence_json(self) -> Path:
        """NSR of the teacher-identical options against the convergence threshold."""
        return self.library / "convergence.json"

    @property
    def nsr_csv(self) -> Path:
        """NSR of every (slot, option) on the val split."""
        return self.root / "nsr.csv"

    # --- labels and predictor -----------------------------------------------------------------

    @property
    def labels_csv(self) -> Path:
        """Labelled architectures (finetuned val accuracy, NSR features, MACs, params)."""
        return self.root / "labels.csv"

    @property
    def predictor_json(self) -> Path:
        """The fitted accuracy predictor and its held-out ranking quality."""
        return self.root / "predictor.json"

    @property
    def study(self) -> Path:
        """Outputs of ``benchmarks/predictor_study.py``."""
        return self.root / "study"

    def study_labels(self, shard: int, shards: int) -> Path:
        """Held-out labels of one shard of the predictor study."""
        return self.study / f"heldout-{shard}of{shards}.csv"

    def study_label_files(self) -> list[Path]:
        """Every shard's held-out labels."""
        return sorted(self.study.glob("heldout-*.csv"))

    @property
    def study_report(self) -> Path:
        """The predictor study's tables."""
        return self.study / "report.json"

    # --- latency, search, finetune ------------------------------------------------------------

    def extend(self, name: str) -> ExtendFolder:
        """``extend/<name>/``: ``donna extend``'s run folder of the extended space ``name``."""
        return ExtendFolder(self.root / "extend" / name)

    def extensions(self) -> list[ExtendFolder]:
        """Every extension ``donna extend`` made here, by name."""
        root = self.root / "extend"
        return sorted((ExtendFolder(p) for p in root.iterdir() if p.is_dir()), key=lambda f: f.root.name) \
            if root.is_dir() else []

    @property
    def compress(self) -> CompressFolder:
        """``compress/``: ``donna compress``'s model, space and side-by-side table."""
        return CompressFolder(self.root / "compress")

    def latency(self, device: str) -> LatencyFolder:
        """``latency/<device>/``: the device's table and measurements."""
        return LatencyFolder(self.root / "latency" / device)

    @property
    def exports(self) -> Path:
        """Cache of ONNX exports shared by every stage."""
        return self.root / "latency" / "exports"

    def latency_tables(self) -> dict[str, Path]:
        """Device -> ``table.json`` of every latency table in the run."""
        return {p.parent.name: p for p in sorted(self.root.glob("latency/*/table.json"))}

    @property
    def search_root(self) -> Path:
        """``search/``: one folder per search."""
        return self.root / "search"

    def search(self, name: str) -> SearchFolder:
        """``search/<name>/``."""
        return SearchFolder(self.search_root / name)

    def searches(self) -> list[SearchFolder]:
        """Every search that wrote a front, by name."""
        found = sorted(self.search_root.glob("*/pareto.csv"))  # a hidden sibling is a set still being written
        return [SearchFolder(p.parent) for p in found if not p.parent.name.startswith(".")]

    def finetune(self, name: str) -> FinetuneFolder:
        """``finetune/<name>/`` (``name`` is an arch key, with a suffix for another init or other inputs)."""
        return FinetuneFolder(self.root / "finetune" / name)

    def finetunes(self) -> list[FinetuneFolder]:
        """Every finished finetune, oldest first."""
        done = sorted(self.root.glob("finetune/*/metrics.json"), key=lambda p: p.stat().st_mtime)
        return [FinetuneFolder(p.parent) for p in done]

    # --- report -------------------------------------------------------------------------------

    @property
    def report_html(self) -> Path:
        """The whole run on one self-contained page."""
        return self.root / "report.html"

    @property
    def report_md(self) -> Path:
        """The markdown twin of ``report.html``."""
        return self.root / "report.md"

    REPORT_IMAGES = "report_files"  # images of report.md, linked relative to it

    def report_image(self, name: str) -> Path:
        """An image of ``report.md``."""
        return self.root / self.REPORT_IMAGES / f"{name}.png"

    # --- the layout ---------------------------------------------------------------------------

    def entry(self, path: str | Path) -> str | None:
        """The ``LAYOUT`` pattern a file of this run folder belongs to, or None when it has no place in it.

        A file of an extension (``extend/<name>/...``, or its ``added/`` run folder) gets its pattern inside that
        run folder, prefixed with ``extend/*/`` (``extend/*/added/``)."""
        path = Path(path)
        parts = (path.resolve().relative_to(self.root.resolve()) if path.is_absolute() else path).parts
        if len(parts) > 2 and parts[0] == "extend":
            inner, prefix = parts[2:], "extend/*/"
            if len(inner) > 1 and inner[0] == "added":
                inner, prefix = inner[1:], prefix + "added/"
            elif len(inner) == 1 and inner[0] in dict(EXTEND_LAYOUT):
                return prefix + inner[0]
            found = RunFolder(".").entry(Path(*inner))
            return None if found is None or found.startswith("extend/") else prefix + found
        for pattern, _ in LAYOUT:
            want = Path(pattern).parts
            if len(want) == len(parts) and all(fnmatch.fnmatchcase(p, w) for p, w in zip(parts, want)):
                return pattern
        return None
