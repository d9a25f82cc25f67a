"""The whole DONNA pipeline (``donna run``): build-predictor, search under a latency target, finetune and the
run's report, in one resumable call."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from common.log import FILE_ONLY
from donna.finetune_stage import FinetuneConfig, run_finetune
from donna.predictor_stage import PredictorRunConfig, build_predictor, summary
from donna.search_stage import SearchConfig, latency_table_for, run_search, run_space, searcher_plan
from donna.stages import StageClock, count, pipeline_plan
from latency.cli import table_executor

log = logging.getLogger(__name__)


def default_target_ms(workdir: Path, device: str, quantile: float = 0.3, samples: int = 2000) -> float:
    """A target the space can meet: the ``quantile`` of the table's latency over uniform samples."""
    space = run_space(workdir)
    table = latency_table_for(workdir, space, device)
    genomes = np.stack([space.encode(a) for a in space.sample_many(samples, seed=0)])
    return float(np.round(np.quantile(table.predict_genomes(genomes, space), quantile), 4))


def run_pipeline(workdir: str | Path = "runs/demo", predictor_cfg: PredictorRunConfig | None = None,
                 search_cfg: SearchConfig | None = None, finetune_cfg: FinetuneConfig | None = None,
                 progress: bool = True) -> dict[str, Any]:
    """Runs every stage in ``workdir`` (finished stages are skipped) and returns the finetune metrics.

    Args:
        workdir: the run folder.
        predictor_cfg: settings of build-predictor (default: the embedded default).
        search_cfg: settings of the search; a ``target_ms`` of None (the default here) means the 30th
            percentile of the latency table over the space.
        finetune_cfg: settings of the finetune (default: its recipe, measured on the search's device).
        progress: show progress bars.

    Returns:
        The finetune metrics, with ``seconds`` (this call's wall time), ``report`` (the finetune's
        ``report.md``) and ``run_report`` (the whole run's ``report.html``).
    """
    search_cfg = search_cfg or SearchConfig(target_ms=None)
    finetune_cfg = finetune_cfg or FinetuneConfig(latency_device=search_cfg.latency_device)
    searcher_plan(search_cfg)  # a bad searcher name or setting fails now, not after an hour of distillation
    workdir, start = Path(workdir), time.perf_counter()
    clock = StageClock(pipeline_plan(predictor_cfg or PredictorRunConfig(), finetune_cfg))
    print("\n" + summary(build_predictor(workdir, predictor_cfg, progress, clock)) + "\n")
    device = search_cfg.latency_device
    with clock.stage("latency table", device):  # built on first use, then read by the search
        latency_table_for(workdir, run_space(workdir), device, search_cfg.force, progress,
                          table_executor(search_cfg.table_executor, device, search_cfg.ray_address))
    if search_cfg.target_ms is None:
        search_cfg = replace(search_cfg, target_ms=default_target_ms(workdir, device))
        print(f"latency target: {search_cfg.target_ms} ms on {device} (30th percentile of the space)")
        log.info("latency target: %s ms on %s (30th percentile of the space)", search_cfg.target_ms, device,
                 extra=FILE_ONLY)
    with clock.stage("search", f"{search_cfg.searcher}, target {search_cfg.target_ms} ms on {device}"):
        run_search(workdir, search_cfg, progress)
    with clock.stage("finetune", count(finetune_cfg.epochs, "epoch")):
        metrics = run_finetune(workdir, finetune_cfg, progress)
    from donna.report import write_report  # the one page of the whole run: report.html, report.md

    with clock.stage("report"):
        metrics["run_report"] = str(write_report(workdir, measure_teacher_latency=True).html)
    return {**metrics, "seconds": time.perf_counter() - start, "report": f"{metrics['out']}/report.md"}
