"""The stages of a DONNA command on the log: one line as each starts and ends, with its wall time and an
estimate of the time left for the whole command (``donna run``: build-predictor's stages, then the latency
table, search, finetune and the run's report)."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterator
from typing import Any

from common.log import FILE_ONLY

log = logging.getLogger("donna.stages")

# Wall seconds of every stage of `donna run` on the embedded default (README: glyphs, fresh caches, the shared
# 2-core CPU) and the work they did, in the stage's own unit. Only the shares matter: the ETA rescales them
# with the speed measured in this call.
REFERENCE: dict[str, tuple[float, float]] = {  # stage: (seconds, work)
    "teacher": (1056.0, 20),  # teacher epochs (python -m donna.pretrained.ship, same machine)
    "bkd": (171.0, 2),  # BKD epochs
    "scoring": (49.0, 1),  # one pass over every option of every slot
    "labels": (168.0, 30),  # labels x label epochs
    "fit": (1.0, 1),
    "latency table": (171.0, 1),
    "search": (8.0, 1),  # NSGA-II on the table and the front measured; other searchers can take far longer
    "finetune": (102.0, 3),  # finetune epochs
    "report": (3.0, 1),
}
COUNTED_AFTER_S = 0.5  # a stage that took less did no real work (it resumed from its files): not a speed sample


def expected(stage: str, work: float = 1.0) -> float:
    """Seconds ``stage`` takes at the reference speed for ``work`` (in the stage's unit, see ``REFERENCE``)."""
    seconds, reference_work = REFERENCE[stage]
    return seconds * work / reference_work


def predictor_plan(cfg: Any) -> dict[str, float]:
    """Expected reference seconds of build-predictor's stages under ``cfg`` (a ``PredictorRunConfig``)."""
    source = str(cfg.teacher.source or "")
    trains_teacher = cfg.teacher.weights is None and not source.endswith(".pt") and not shipped_teacher(cfg)
    return {"teacher": expected("teacher", cfg.teacher.epochs) if trains_teacher else 5.0,
            "bkd": expected("bkd", cfg.bkd.epochs),
            "scoring": expected("scoring"),
            "labels": expected("labels", cfg.labels.num_labels * cfg.labels.epochs),
            "fit": expected("fit")}


def shipped_teacher(cfg: Any) -> bool:
    """Whether the run's teacher will probably be copied from ``donna.pretrained`` rather than trained."""
    from donna.pretrained import ships_recipe

    return (cfg.teacher.source in (None, "", "reference") and cfg.teacher.pretrained
            and ships_recipe(json.loads(json.dumps(cfg.teacher.train_settings()))))


def pipeline_plan(predictor_cfg: Any, finetune_cfg: Any) -> dict[str, float]:
    """Expected reference seconds of every stage of ``donna run``, in order."""
    return {**predictor_plan(predictor_cfg), "latency table": expected("latency table"),
            "search": expected("search"), "finetune": expected("finetune", finetune_cfg.epochs),
            "report": expected("report")}


def eta_seconds(plan: dict[str, float], elapsed: dict[str, float]) -> float | None:
    """Seconds left for the stages of ``plan`` not in ``elapsed``, or None before any speed sample.

    The stages finished so far that did real work (``COUNTED_AFTER_S`` or longer; a resumed stage only reads
    its files) took ``sum(elapsed)`` for ``sum(plan)`` expected seconds: their ratio is this machine's and
    data set's speed against the reference run. The remaining stages' expected seconds times that ratio is the
    ETA. It is as good as the reference's shares: a larger data set slows the training stages more than the
    latency table and search, a gradient searcher takes far longer than NSGA-II, and a stage that resumes from
    its files takes almost nothing, so read it as "about", and it sharpens as stages finish.

    Args:
        plan: every stage of the command and its expected seconds at the reference speed.
        elapsed: wall seconds of the stages finished so far.
    """
    counted = [s for s, t in elapsed.items() if t >= COUNTED_AFTER_S and plan.get(s, 0) > 0]
    if not counted:
        return None
    speed = sum(elapsed[s] for s in counted) / sum(plan[s] for s in counted)
    return speed * sum(v for s, v in plan.items() if s not in elapsed)


def duration(seconds: float) -> str:
    """``4.2 s``, ``42 s``, ``3 min 5 s`` or ``2 h 10 min``."""
    if seconds < 10:
        return f"{max(0.0, seconds):.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60} min"


def count(n: int, unit: str) -> str:
    """``1 epoch``, ``2 epochs``."""
    return f"{n} {unit}{'' if n == 1 else 's'}"


def eta_text(seconds: float | None) -> str:
    """``ETA ~N min`` (minutes rounded up), or why there is none yet."""
    if seconds is None:
        return f"ETA known once a stage takes {COUNTED_AFTER_S:g} s or more (so far they resumed from their files)"
    return "ETA < 1 min" if seconds < 60 else f"ETA ~{math.ceil(seconds / 60)} min"


class StageClock:
    """Times the stages of one command and logs a line as each starts and ends (the end line with the stage's
    wall time, the command's so far, and the ETA of the rest, see :func:`eta_seconds`).

    Args:
        plan: the command's stages in order, with their expected seconds at the reference speed.
    """

    def __init__(self, plan: dict[str, float]) -> None:
        self.plan = dict(plan)
        self.elapsed: dict[str, float] = {}  # wall seconds of every finished stage
        self.start = time.perf_counter()
        self._current: tuple[str, float] | None = None

    def _label(self, stage: str) -> str:
        names = list(self.plan)
        return f"[{names.index(stage) + 1}/{len(names)}] {stage}" if stage in names else stage

    def begin(self, stage: str, detail: str = "") -> None:
        """Logs the start of ``stage`` (``detail``: what it will do, e.g. ``6 epochs``)."""
        self._current = (stage, time.perf_counter())
        log.info("%s: started%s", self._label(stage), f" ({detail})" if detail else "")

    def end(self, stage: str) -> float:
        """Logs the end of ``stage`` and returns its wall seconds."""
        started = self._current[1] if self._current and self._current[0] == stage else self.start
        self._current = None
        seconds = self.elapsed[stage] = time.perf_counter() - started
        left = [s for s in self.plan if s not in self.elapsed]
        total = f"; {duration(time.perf_counter() - self.start)} so far"
        eta = f"; {count(len(left), 'stage')} left, {eta_text(eta_seconds(self.plan, self.elapsed))}" if left else ""
        log.info("%s: done in %s%s%s", self._label(stage), duration(seconds), total if len(self.plan) > 1 else "",
                 eta)
        return seconds

    @contextlib.contextmanager
    def stage(self, stage: str, detail: str = "") -> Iterator[None]:
        """``begin`` and ``end`` around the block; a stage that raises gets a line in the run.log only (the
        command's error line says why on the console)."""
        self.begin(stage, detail)
        try:
            yield
        except BaseException:
            log.error("%s: stopped after %s", self._label(stage), duration(time.perf_counter() - self._current[1]),
                      extra=FILE_ONLY)
            raise
        self.end(stage)
