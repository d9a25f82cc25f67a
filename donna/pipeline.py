"""``donna build-predictor``: teacher -> BKD -> NSR scoring -> labels -> ridge predictor.

Every stage skips its work when its outputs in the run folder exist and are complete, so a killed
run resumes where it stopped when the same command is run again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from blocks import SearchSpace, get_space
from donna.bkd import run_bkd
from donna.config import BKDConfig, DataConfig, ScoreConfig, TeacherConfig
from donna.data import load_data
from donna.labels import LabelConfig, make_labels
from donna.nsr import score_library
from donna.predictor import AccuracyPredictor, fit_predictor, nsr_columns
from donna.runfolder import read_json, save_config
from donna.teacher import get_teacher


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


def _record_run(workdir: Path, space: SearchSpace, cfg: PredictorRunConfig) -> None:
    run = {"space": cfg.space, "num_classes": space.num_classes}
    old = (read_json(workdir / "config.json") or {}).get("run")
    if old and old != run:
        raise ValueError(f"{workdir} was built for space {old['space']!r} with {old['num_classes']} classes; "
                         "use a new --workdir for another space or data set")
    save_config(workdir, "run", run)


def build_predictor(workdir: str | Path, cfg: PredictorRunConfig | None = None,
                    progress: bool = True) -> PredictorRun:
    """Runs every stage up to ``predictor.json`` in ``workdir``, resuming finished stages."""
    cfg = cfg or PredictorRunConfig()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        seconds[stage] = time.perf_counter() - clock
        clock = time.perf_counter()

    base = get_space(cfg.space)
    data = load_data(cfg.data, base.input_size, base.in_channels)
    space = base.with_classes(data.num_classes)
    _record_run(workdir, space, cfg)
    save_config(workdir, "data", cfg.data)
    teacher = get_teacher(cfg.teacher, space, data, workdir, progress)
    lap("teacher")
    run_bkd(cfg.bkd, space, teacher, data, workdir, progress)
    lap("bkd")
    nsr = score_library(cfg.score, space, teacher, data, workdir, progress)
    lap("scoring")
    save_config(workdir, "labels", cfg.labels)
    labels = make_labels(cfg.labels, space, teacher, data, workdir, nsr, progress)
    lap("labels")
    predictor = fit_predictor(labels, nsr_columns(space.num_slots), space=cfg.space)
    predictor.to_json(workdir / "predictor.json")
    lap("fit")
    return PredictorRun(predictor, labels, nsr, seconds)
