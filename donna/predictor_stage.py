"""``donna build-predictor``: teacher -> BKD -> NSR scoring -> labels -> ridge predictor.

Every stage skips its work when its outputs in the run folder exist and are complete, so a killed
run resumes where it stopped when the same command is run again.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from blocks import SearchSpace, get_space, list_spaces
from common.log import FILE_ONLY
from donna.bkd import run_bkd
from donna.config import BKDConfig, DataConfig, ScoreConfig, TeacherConfig
from donna.data import load_data
from donna.labels import LabelConfig, make_labels
from donna.nsr import convergence_check, score_library, write_convergence
from donna.predictor import AccuracyPredictor, fit_predictor, nsr_columns
from donna.runfolder import RunFolder, read_json, save_config
from donna.stages import StageClock, count, predictor_plan, shipped_teacher
from donna.teacher import get_teacher

log = logging.getLogger(__name__)


@dataclass
class PredictorRunConfig:
    """Every setting of ``donna build-predictor``."""

    space: str = "mbconv-tiny"  # search space name or JSON file
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    bkd: BKDConfig = field(default_factory=BKDConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)


@dataclass
class PredictorRun:
    """What ``build_predictor`` made."""

    predictor: AccuracyPredictor
    labels: pd.DataFrame
    nsr: pd.DataFrame
    seconds: dict[str, float]  # wall time of every stage in this call
    cpu_seconds: dict[str, float] = field(default_factory=dict)  # CPU time (this process and its workers)
    convergence: dict = field(default_factory=dict)  # NSR of the teacher-identical options (library/convergence.json)
    teacher: dict = field(default_factory=dict)  # teacher.json: what the teacher is and its val accuracy
    warnings: list[str] = field(default_factory=list)  # weak stages: read them before trusting the predictor


def _record_run(workdir: Path, space: SearchSpace, cfg: PredictorRunConfig) -> None:
    """Records the run's space and classes; a space file is copied in, so later stages read the copy."""
    folder = RunFolder(workdir)
    run = {"space": str(cfg.space), "num_classes": space.num_classes}
    if is_space_file(cfg.space):
        run.update(folder.space_record(cfg.space))
    old = folder.read_config().get("run")
    legacy = old == {"space": run["space"], "num_classes": run["num_classes"]}  # recorded before files were copied
    if old and old != run and not legacy:
        changed = " (the file changed since)" if old.get("space_sha256") not in (None, run.get("space_sha256")) else ""
        raise ValueError(f"{workdir} was built for space {old['space']!r}{changed} with {old['num_classes']} classes; "
                         "use a new --workdir for another space or data set")
    if is_space_file(cfg.space):
        folder.copy_space(cfg.space)
    save_config(workdir, "run", run)


def is_space_file(space: str | Path) -> bool:
    """Whether ``--space`` names a JSON file rather than a shipped space."""
    return str(space) not in list_spaces() and Path(space).suffix == ".json" and Path(space).is_file()


def build_predictor(workdir: str | Path, cfg: PredictorRunConfig | None = None,
                    progress: bool = True, clock: StageClock | None = None) -> PredictorRun:
    """Runs every stage up to ``predictor.json`` in ``workdir``, resuming finished stages.

    Args:
        workdir: the run folder (created when missing).
        cfg: every setting of the stages (default: the embedded default, ``PredictorRunConfig()``).
        progress: show progress bars.
        clock: logs each stage's start and end (default: a clock of these stages; ``donna run`` passes the
            clock of the whole pipeline, for its ETA).

    Returns:
        The predictor, the labels, the NSR table, stage times, the convergence check and warnings
        (``summary(result)`` is what ``donna build-predictor`` prints).

    Raises:
        ValueError: the run folder was built for another space, data set or teacher.
    """
    cfg = cfg or PredictorRunConfig()
    clock = clock or StageClock(predictor_plan(cfg))
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    cpu: dict[str, float] = {}
    clock_s, cpu_clock = time.perf_counter(), cpu_time()

    def lap(stage: str, following: str | None = None, detail: str = "") -> None:
        nonlocal clock_s, cpu_clock
        clock.end(stage)
        seconds[stage], cpu[stage] = time.perf_counter() - clock_s, cpu_time() - cpu_clock
        clock_s, cpu_clock = time.perf_counter(), cpu_time()
        if following:
            clock.begin(following, detail)

    base = get_space(cfg.space)
    data = load_data(cfg.data, base.input_size, base.in_channels)
    log.info("data %s: %d train, %d val, %d test examples, %d classes", cfg.data.name, len(data.train),
             len(data.val), len(data.test), data.num_classes)
    space = base.with_classes(data.num_classes)
    _record_run(workdir, space, cfg)
    save_config(workdir, "data", cfg.data)
    clock.begin("teacher", _teacher_detail(cfg))  # its summary time also counts the data loading above
    teacher = get_teacher(cfg.teacher, space, data, workdir, progress)
    lap("teacher", "bkd", f"{count(cfg.bkd.epochs, 'epoch')}, {count(space.num_slots, 'slot')}")
    run_bkd(cfg.bkd, space, teacher, data, workdir, progress)
    lap("bkd", "scoring", count(sum(len(space.options(s)) for s in range(space.num_slots)), "option"))
    nsr = score_library(cfg.score, space, teacher, data, workdir, progress)
    convergence = convergence_check(nsr, getattr(teacher, "arch", None))
    write_convergence(workdir, convergence)
    lap("scoring", "labels", f"{count(cfg.labels.num_labels, 'architecture')} x {count(cfg.labels.epochs, 'epoch')}")
    save_config(workdir, "labels", cfg.labels)
    labels = make_labels(cfg.labels, space, teacher, data, workdir, nsr, progress)
    lap("labels", "fit", f"ridge on {len(labels)} labels")
    predictor = fit_predictor(labels, nsr_columns(space.num_slots), space=cfg.space)
    predictor.to_json(RunFolder(workdir).predictor_json)
    lap("fit")
    info = read_json(RunFolder(workdir).teacher_json) or {}
    result = PredictorRun(predictor, labels, nsr, seconds, cpu, convergence, info,
                          stage_warnings(info, convergence, labels, predictor, data.num_classes))
    log.info("build-predictor summary:\n%s", summary(result), extra=FILE_ONLY)
    return result


def _teacher_detail(cfg: PredictorRunConfig) -> str:
    """What the teacher stage will do, for its log line."""
    source = cfg.teacher.source or "the space's reference"
    if cfg.teacher.weights is not None or str(source).endswith(".pt"):
        return f"{source}, given weights"
    if shipped_teacher(cfg):
        return f"{source}, shipped with donna for these settings"
    return f"{source}, {count(cfg.teacher.epochs, 'epoch')} if not trained yet"


def cpu_time() -> float:
    """CPU seconds used so far by this process and its finished worker processes (user + system)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def stage_warnings(teacher: dict, convergence: dict, labels: pd.DataFrame, predictor: AccuracyPredictor,
                   num_classes: int) -> list[str]:
    """What a user must know before trusting the predictor: a weak teacher, an under-trained library, flat labels."""
    out = []
    acc = teacher.get("val_accuracy")
    if acc is not None and acc < 2.0 / num_classes:
        out.append(f"teacher val accuracy {acc:.3f} is near chance ({1 / num_classes:.3f}): train it longer "
                   "(--set teacher.epochs=...) or give a better one")
    if acc is not None and len(labels) and labels["accuracy"].max() > acc + 0.01:
        out.append(f"the teacher ({acc:.3f} val) is weaker than its best labelled student "
                   f"({labels['accuracy'].max():.3f}): distillation pulls students towards a worse network")
    if convergence.get("passed") is False:
        worst = convergence["worst_nsr"]
        out.append(f"block library under-trained: a teacher-identical option scores NSR {worst:.3f} "
                   f"(>= {convergence['threshold']}); raise the BKD epochs")
    spread = float(labels["accuracy"].max() - labels["accuracy"].min()) if len(labels) else 0.0
    if spread < 0.02:
        out.append(f"labels spread over {100 * spread:.1f} points only: the data cannot rank architectures")
    tau = predictor.quality.get("predictor", {}).get("kendall_tau", float("nan"))
    if math.isnan(tau) or tau < 0.5:  # undefined or weak
        out.append(f"predictor's held-out Kendall tau is {tau:.3f} (undefined or below 0.5): its ranking is weak")
    return out


def summary(result: PredictorRun) -> str:
    """What ``donna build-predictor`` prints: teacher, convergence check, ranking quality, warnings, times."""
    from donna.predictor import paired_summary, quality_table

    lines = []
    if result.teacher.get("val_accuracy") is not None:
        lines.append(f"teacher: {result.teacher.get('source')} ({result.teacher.get('kind')}), "
                     f"val accuracy {result.teacher['val_accuracy']:.4f}")
    conv = result.convergence
    if conv.get("available"):
        per_slot = ", ".join(f"{s['nsr']:.3f}" if s["nsr"] is not None else "n/a" for s in conv["slots"])
        lines.append(f"convergence check (NSR of the teacher-identical option per slot, must be < "
                     f"{conv['threshold']}): {per_slot} -> {'PASS' if conv['passed'] else 'FAIL'}")
    else:
        lines.append(f"convergence check: not available ({conv.get('why', 'no teacher-identical option')})")
    acc = result.labels["accuracy"] if len(result.labels) else None
    if acc is not None:
        lines.append(f"labels: {len(acc)} architectures, val accuracy {acc.min():.4f} to {acc.max():.4f} "
                     f"(spread {100 * (acc.max() - acc.min()):.1f} points)")
    lines.append(f"predictor fitted on {len(result.labels)} labels (ridge alpha {result.predictor.alpha:.3g}); "
                 "held-out (leave-one-out) ranking quality, tau with its 90% bootstrap interval:")
    lines.append(quality_table(result.predictor).to_string(float_format=lambda v: f"{v:.3f}"))
    lines.append(paired_summary(result.predictor))
    lines.extend(f"WARNING: {w}" for w in result.warnings)
    lines.append("stage times this call (wall / CPU): " + ", ".join(
        f"{k} {v:.0f}s / {result.cpu_seconds.get(k, float('nan')):.0f}s" for k, v in result.seconds.items()))
    return "\n".join(lines)
