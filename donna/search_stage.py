"""``donna search``: the predictor and a device latency estimate as objectives, a searcher, the front
measured on the device, and the choice under the latency target (DONNA step 5)."""

from __future__ import annotations

import logging
import math
import re
import sys
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from blocks import Arch, SearchSpace
from common.log import FILE_ONLY
from donna.config import SearchConfig
from donna.predictor import AccuracyPredictor
from donna.runfolder import RunFolder, fingerprint, save_config
from latency import LatencyError, LatencyEstimator, LatencyTable, MeasuredLatency, build_latency_table
from latency.cache import file_sha256
from latency.cli import table_executor
from latency.devices import unreachable_reason
from latency.table import validation_check
from search import (
    Objective,
    RunSize,
    SearcherSpec,
    SearchOutputs,
    check_searcher,
    create_searcher,
    finalize_search,
    needs_additive,
    searcher_spec,
)
from search.additive import Additive, slot_tables_from_lookup
from search.objectives import hv_reference_for

log = logging.getLogger(__name__)

def run_space(workdir: Path) -> SearchSpace:
    """The search space a run folder was built for (recorded by ``donna build-predictor``)."""
    from blocks import get_space

    folder = RunFolder(workdir)
    run = folder.read_config().get("run")
    if not run:
        raise ValueError(f"{workdir} holds no DONNA run; run `donna build-predictor --workdir {workdir}` first")
    source = folder.space_json if run.get("space_file") else run["space"]  # a space file is read from its copy
    return get_space(source).with_classes(run["num_classes"])


def latency_table_for(workdir: Path, space: SearchSpace, device: str, force: bool = False,
                      progress: bool = True, executor: Any = None) -> LatencyTable:
    """The device's latency table in ``workdir/latency/<device>/``, built (resumably) on first use, here or
    through ``executor`` (``latency.cli.table_executor``: Ray tasks on the node that advertises the device).

    A table copied in from the device's own machine is used as recorded when the device is not
    reachable here (``table.note`` says so); without one, such a device is an error naming both ways on.
    """
    latency = RunFolder(workdir).latency(device)
    folder = latency.root
    if latency.table_json.is_file():
        return LatencyTable.load(folder, device=device, force=force)
    if executor is not None:  # measured where the executor runs its jobs (the device's host on Ray)
        return build_latency_table(space, device, folder, progress=progress, force=force,
                                   cache_dir=RunFolder(workdir).exports, executor=executor)
    reason = unreachable_reason(device)
    if reason is not None:
        short = re.split(r": |; ", reason, maxsplit=1)[0]  # `latency devices` prints the whole reason and fix
        raise LatencyError(f"device {device!r} is not reachable here ({short}): build its table on the device "
                           f"machine (`{table_command(device, space)} --out DIR`) and copy DIR/table.json into "
                           f"{folder}/, or search another device")
    return build_latency_table(space, device, folder, progress=progress, force=force,
                               cache_dir=RunFolder(workdir).exports)


def table_command(device: str, space: SearchSpace) -> str:
    """The ``latency table`` command that builds this space's table for ``device`` on its machine."""
    from blocks import get_space

    command = f"latency table --device {device} --space {space.name}"
    try:
        default_classes = get_space(space.name).num_classes
    except ValueError:
        default_classes = None
    if default_classes != space.num_classes:
        command += f" --num-classes {space.num_classes}"
    return command


def bench_command(workdir: Path, out: Path, archs: list[Arch], device: str) -> str:
    """The ``latency bench`` command that measures ``archs`` (their IR files under ``out/pareto``) on ``device``."""
    files = " ".join(str(RunFolder(workdir).search(out.name).member_json(a.key).relative_to(workdir)) for a in archs)
    return f"cd {workdir} && latency bench {files} --device {device}"


def front_to_measure(result, cfg: SearchConfig, predicted_ms: np.ndarray) -> list[int]:
    """Indices of the front members worth measuring (see :func:`_front_measure`), most accurate first."""
    if cfg.measure_max <= 0:
        return []
    order = np.argsort(-result.objectives[:, 0])
    under = [i for i in order if predicted_ms[i] <= cfg.target_ms]
    above = sorted((i for i in order if cfg.target_ms < predicted_ms[i] <= 1.25 * cfg.target_ms),
                   key=lambda i: predicted_ms[i])
    n_under = max(1, (2 * cfg.measure_max) // 3)
    chosen = {int(np.argmin(predicted_ms)), *under[:n_under]}
    chosen |= set(above[: max(0, cfg.measure_max - len(chosen))])
    return sorted(chosen, key=lambda i: -result.objectives[i, 0])


def _front_measure(result, cfg: SearchConfig, measured: MeasuredLatency, predicted_ms: np.ndarray):
    """Measures up to ``measure_max`` front members: the fastest; the most accurate predicted under the
    target (two thirds of the budget); and those predicted just above it, closest first (the table
    can be a few percent off either way)."""
    keys = {result.archs[i].key for i in front_to_measure(result, cfg, predicted_ms)}
    nan = {"measured_ms": math.nan, "measured_ms_ci_low": math.nan, "measured_ms_ci_high": math.nan}
    return lambda arch: measured.measure(arch) if arch.key in keys else nan


def run_search(workdir: str | Path, cfg: SearchConfig | None = None, progress: bool = True,
               searcher_options: dict[str, Any] | None = None) -> SearchOutputs:
    """Runs one search in ``workdir`` and writes ``search/<name>/`` (``RunFolder.search``).

    ``cfg`` defaults to ``SearchConfig()``; ``searcher_options`` are the searcher's own settings
    (``--set KEY=VALUE``). Returns the front, its files and the selected architecture (``.selected``).

    Raises:
        ValueError: no predictor yet (names the command to run first) or a bad setting.
        search.NoArchMeetsTarget: nothing on the measured front meets ``cfg.target_ms``.
    """
    workdir, cfg = Path(workdir), cfg or SearchConfig()
    if cfg.target_ms is None:
        raise ValueError("search: no latency target; pass --target-ms (donna run computes one when it is None)")
    spec, settings = searcher_plan(cfg, searcher_options)  # name, schedule and settings checked before any work
    run = RunFolder(workdir)
    predictor = AccuracyPredictor.load(run.predictor_json)
    space = run_space(workdir)
    nsr = pd.read_csv(run.nsr_csv)
    save_config(workdir, "search", asdict(cfg))
    table = latency_table_for(workdir, space, cfg.latency_device, cfg.force, progress,
                              table_executor(cfg.table_executor, cfg.latency_device, cfg.ray_address))
    measure_here = table.measurable and not cfg.no_measure and cfg.measure_max > 0
    if table.note:
        print(f"note: {table.note}", file=sys.stderr)
    line, warning = validation_check(table)  # every search states how far the table's predictions can be trusted
    print(line)
    if warning:
        print(warning, file=sys.stderr)
    if cfg.latency == "measure" and not measure_here:
        raise LatencyError(f"--latency measure needs device {cfg.latency_device!r} here; it is not reachable (or "
                           "measuring is switched off): use --latency table")
    measured = MeasuredLatency(cfg.latency_device, run.latency(cfg.latency_device).measured_csv,
                               fresh_processes=cfg.confirm_processes)
    estimator: LatencyEstimator = measured if cfg.latency == "measure" else table
    latency_fn = partial(estimator.predict_genomes, space=space)
    additive = additive_forms(cfg, space, predictor, nsr, table)  # (None, None) unless the searcher needs them
    accuracy = Objective("accuracy", predictor.genome_predictor(nsr, space), maximize=True, additive=additive[0])
    objectives = [accuracy, Objective("latency_ms", latency_fn, maximize=False, additive=additive[1])]
    # one hypervolume reference from the cheap table objectives, so searchers and modes compare
    reference = hv_reference_for(space, [accuracy,
                                         Objective("latency_ms", partial(table.predict_genomes, space=space))])
    given = searcher_inputs(spec, cfg, workdir, space, table)
    searcher = create_searcher(cfg.searcher, **settings, **given)
    print(schedule_line(cfg, searcher_options, space, given))
    folder = run.search(cfg.name or cfg.searcher)
    out = folder.root
    # a killed search resumes from the checkpoint of the same settings and inputs; others start afresh
    inputs = {"predictor.json": file_sha256(run.predictor_json), "nsr.csv": file_sha256(run.nsr_csv)}
    inputs["table"] = file_sha256(table.path) if table.path else None
    state = folder.state(fingerprint({**asdict(cfg), "target_ms": cfg.target_ms if spec.latency == "table" else None,
                                      "options": searcher_options or {}, **inputs}))
    result = searcher.search(space, objectives=objectives, checkpoint_dir=state if spec.resumable else None,
                             progress=progress, hv_reference=reference)
    predicted = table.predict_genomes(np.stack([space.encode(a) for a in result.archs]), space)
    if measure_here:
        # the margin is the measurement's noise: a member is chosen only when the upper end of the 95% CI of its
        # median meets the target, here and again in each of confirm_processes fresh processes (the noise between
        # processes on a shared machine dwarfs one process's CI), so the delivered model's re-measurement rarely
        # lands above it; cfg.margin asks for more room still
        selection_target = round(cfg.target_ms * (1 - cfg.margin), 6)
        if cfg.margin:
            print(f"selection target {selection_target:g} ms: the target {cfg.target_ms:g} ms less the margin "
                  f"{cfg.margin:.1%}")
        outputs = finalize_search(out, result, selection_target,
                                  measure=_front_measure(result, replace(cfg, target_ms=selection_target), measured,
                                                         predicted),
                                  latency_column="measured_ms_ci_high", progress=progress,
                                  confirm=measured.measure_fresh if cfg.confirm_max else None,
                                  confirm_max=cfg.confirm_max)
        if cfg.confirm_max:
            line = confirmation_line(outputs.rows, outputs.selected, selection_target, cfg.confirm_processes)
            print(line)
            log.info(line, extra=FILE_ONLY)
        return outputs
    outputs = finalize_search(out, result, cfg.target_ms, measure=None, progress=progress)
    chosen = [result.archs[i] for i in front_to_measure(result, cfg, predicted) or range(len(result.archs))]
    print(f"selected on predicted latency (not measured here); measure the front on the {cfg.latency_device} "
          "machine with:\n"
          f"  {bench_command(workdir, out, chosen, cfg.latency_device)}")
    return outputs


def confirmation_line(rows: pd.DataFrame, selected: dict[str, Any], target_ms: float, processes: int = 1) -> str:
    """What the fresh-process confirmation of the choice found, in one line."""
    tried = rows[rows["fresh_ms"].notna()]
    rejected = len(tried) - 1
    before = f"; {rejected} more accurate member(s) measured over the target there first" if rejected > 0 else ""
    where = "a fresh process" if processes == 1 else f"{processes} fresh processes (median of their medians)"
    return (f"confirmed in {where}: {selected['key']} {selected['fresh_ms']:.4f} ms (CI to "
            f"{selected['fresh_ms_ci_high']:.4f}) against {selected['measured_ms']:.4f} ms in this one; the slowest "
            f"bound, {selected['selection_ms']:.4f} ms, meets the target {target_ms:g} ms{before}")


def additive_forms(cfg: SearchConfig, space: SearchSpace, predictor: AccuracyPredictor, nsr: pd.DataFrame,
                   table: LatencyTable) -> tuple[Additive | None, Additive | None]:
    """The predictor and the latency table as per-slot tables, for a searcher that needs them (``exact``).

    The predictor is linear in per-slot NSR and the table's calibration is affine in the sum of its
    rows, so both are a constant plus one value per slot.
    """
    if not needs_additive(cfg.searcher):
        return None, None
    base, genes, codes = space.sample(0), [], []
    for i in range(space.num_slots):
        G = np.stack([space.encode(base.with_blocks(base.blocks[:i] + (o,) + base.blocks[i + 1:]))
                      for o in space.options(i)])
        genes.append(tuple(np.flatnonzero((G[0] != G).any(axis=0)).tolist()))
        codes.append(G[:, list(genes[-1])])
    ms = [[table.calibrated_block_ms(i, o) for o in space.options(i)] for i in range(space.num_slots)]
    fixed = table.calibrated_fixed_ms
    return (Additive(slot_tables_from_lookup(genes, codes, predictor.nsr_lookup(nsr, space)), predictor.intercept),
            Additive(slot_tables_from_lookup(genes, codes, ms), fixed))


def searcher_plan(cfg: SearchConfig, options: dict[str, Any] | None = None) -> tuple[SearcherSpec, dict[str, Any]]:
    """The searcher's declaration and its settings: the run's (``spec.run_settings`` that ``SearchConfig`` has:
    the seed), then the schedule preset's, then ``cfg.settings`` and ``options``, each overriding the one before;
    checked by building the searcher once.

    Raises:
        ValueError: unknown searcher or schedule (one line listing the known ones), a bad setting, or a
            searcher that needs a latency table with ``--latency measure``.
    """
    check_searcher(cfg.searcher)
    spec = searcher_spec(cfg.searcher)
    preset = spec.schedule(cfg.schedule, cfg.searcher)
    settings = {name: getattr(cfg, name) for name in spec.run_settings if hasattr(cfg, name)}
    settings = {**settings, **preset.settings, **cfg.settings, **(options or {})}  # explicit settings win
    if spec.latency == "additive" and cfg.latency != "table":
        raise ValueError(f"--searcher {cfg.searcher} needs a latency that adds up over slots, but --latency "
                         f"{cfg.latency} measures every candidate whole; use --latency table")
    create_searcher(cfg.searcher, **settings)  # refuses an unknown or out-of-range setting now, not after the table
    return spec, settings


def searcher_inputs(spec: SearcherSpec, cfg: SearchConfig, workdir: Path, space: SearchSpace,
                    table: LatencyTable) -> dict[str, Any]:
    """What the searcher declares it needs besides its settings: the run's training data, the latency table."""
    inputs: dict[str, Any] = {}
    if spec.needs_data:
        from donna.config import DataConfig, section_from_dict
        from donna.data import load_data

        data_cfg = section_from_dict(DataConfig, RunFolder(workdir).read_config()["data"])
        inputs["data"] = load_data(data_cfg, space.input_size, space.in_channels)
    if spec.latency == "table":
        inputs.update(latency_table=table, latency_target_ms=cfg.target_ms)
    return inputs


SECONDS_PER_EVALUATION = {"table": 1e-3, "measure": 2.0}  # rough: a table lookup batch; one device measurement


def schedule_line(cfg: SearchConfig, options: dict[str, Any] | None, space: SearchSpace,
                  inputs: dict[str, Any]) -> str:
    """One line naming the searcher, its schedule preset and its cost, and what the other presets would cost."""
    train = inputs.get("data")
    train = getattr(train, "train", train)
    size = RunSize(n_train=len(train) if train is not None else 0,
                   seconds_per_evaluation=SECONDS_PER_EVALUATION.get(cfg.latency, 1.0))

    def cost(schedule: str) -> str:
        _, settings = searcher_plan(replace(cfg, schedule=schedule), options)
        return create_searcher(cfg.searcher, **settings).cost(space, size).describe()

    spec = searcher_spec(cfg.searcher)
    line = f"search: {cfg.searcher}, schedule {cfg.schedule} ({spec.schedule(cfg.schedule).description}): "
    others = [name for name in sorted(spec.schedules)
              if dict(spec.schedules[name].settings) != dict(spec.schedule(cfg.schedule).settings)]
    return line + cost(cfg.schedule) + "".join(f"; --schedule {name}: {cost(name)}" for name in others)
