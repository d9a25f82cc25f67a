"""The files a search leaves in ``search/<name>/``: front table, one IR per member, plot, choice, history.

``finalize_search`` is the one call after a search: measure the front, choose under the target,
write everything as one set (the old outputs or the new ones, never a mix).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from common.fileio import atomic_dir, atomic_path, atomic_write_text
from search.base import SearchResult
from search.pareto import NoArchMeetsTarget, choose_under_target
from search.plot import plot_pareto

Measure = Callable[[Any], "Mapping[str, float] | float"]  # arch -> {"measured_ms": ..., ...} or ms


def _measurement(arch: Any, measure: Measure) -> dict[str, float]:
    value = measure(arch)
    out = {"measured_ms": float(value)} if isinstance(value, int | float) else dict(value)
    if "measured_ms" not in out:
        raise ValueError(f"measure({arch.key}) returned {sorted(out)}; it must return 'measured_ms' "
                         "(and may add 'measured_ms_ci_low', 'measured_ms_ci_high', 'params', 'macs')")
    return out


def front_rows(
    result: SearchResult,
    accuracy: str = "accuracy",
    latency: str = "latency_ms",
    measure: Measure | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """The front as a table with the standard columns, measuring each member when ``measure`` is given.

    Columns: ``arch``, ``key``, ``predicted_accuracy`` (objective ``accuracy``), ``predicted_ms``
    (objective ``latency``), ``measured_ms`` (NaN without ``measure``), then whatever else ``measure``
    returns (``measured_ms_ci_low``, ``measured_ms_ci_high``, ``params``, ``macs``), the other
    objectives under their own names, and ``genome``.

    Args:
        result: a search result.
        accuracy: name of the predicted-accuracy objective.
        latency: name of the predicted-latency objective.
        measure: ``arch -> {"measured_ms": ..., ...}`` (or a float in ms), e.g. a device measurement.
        progress: progress bar over the measurements.
    """
    frame = result.to_frame().rename(columns={accuracy: "predicted_accuracy", latency: "predicted_ms"})
    for column in ("predicted_accuracy", "predicted_ms"):
        if column not in frame:
            frame[column] = np.nan
    measured = [_measurement(arch, measure) if measure else {"measured_ms": math.nan}
                for arch in tqdm(result.archs, desc="measure front", disable=not (progress and measure))]
    extra = pd.DataFrame(measured, index=frame.index)
    first = ["arch", "key", "predicted_accuracy", "predicted_ms"]
    rest = [c for c in frame.columns if c not in first]
    return pd.concat([frame[first], extra, frame[rest]], axis=1)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _write_irs(folder: Path, archs: Sequence[Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for arch in archs:
        arch.to_json(folder / f"{arch.key}.json")


def _selected_payload(selected: Mapping[str, Any], target_ms: float, latency_column: str,
                      archs_by_key: Mapping[str, Any]) -> dict[str, Any]:
    payload = {"target_ms": target_ms, "latency_column": latency_column}
    payload.update({name: _jsonable(value) for name, value in selected.items()})
    arch = archs_by_key.get(selected["key"])
    if arch is not None:
        payload["ir"] = json.loads(arch.to_json())
    return payload


OUTPUT_NAMES = ("pareto.csv", "pareto", "pareto.png", "selected.json", "history.csv", "search.json")  # one set


def write_search_outputs(
    out_dir: str | Path,
    rows: pd.DataFrame,
    selected: Mapping[str, Any] | None,
    target_ms: float | None,
    archs: Sequence[Any] = (),
    history: Sequence[Mapping[str, float]] | None = None,
    info: Mapping[str, Any] | None = None,
    latency_column: str = "measured_ms",
    accuracy_column: str = "predicted_accuracy",
) -> dict[str, Path]:
    """Writes a search's outputs as one set: a reader (``donna finetune --arch selected``) finds the old
    set or the new one, never a new front beside an old choice, even when the writer is killed.

    Files: ``pareto.csv`` (``rows``), ``pareto/<key>.json`` (one IR per arch in ``archs``), ``pareto.png``,
    ``selected.json`` (the chosen row plus its IR; absent when ``selected`` is None, so no stale choice
    survives), ``history.csv`` and ``search.json`` (``info``: searcher, settings, evaluations, hypervolume)
    when given. They are written into a fresh sibling folder that then replaces ``out_dir`` in one
    step (``common.fileio.atomic_dir``); other entries of ``out_dir`` (the resume ``state/``) are kept.

    Returns:
        Name -> path of every file written.
    """
    out = Path(out_dir)
    with atomic_dir(out, owned=OUTPUT_NAMES) as new:
        names = _write_outputs(new, rows, selected, target_ms, archs, history, info, latency_column,
                               accuracy_column)
    return {name: out / name for name in names}


def _write_outputs(out: Path, rows: pd.DataFrame, selected: Mapping[str, Any] | None, target_ms: float | None,
                   archs: Sequence[Any], history: Sequence[Mapping[str, float]] | None,
                   info: Mapping[str, Any] | None, latency_column: str, accuracy_column: str) -> list[str]:
    """Writes the outputs into the empty folder ``out``; returns the names written."""
    _write_csv(rows, out / "pareto.csv")
    _write_irs(out / "pareto", archs)
    chosen_key = selected["key"] if selected else None
    has_latency = latency_column in rows and rows[latency_column].notna().any()
    column = latency_column if has_latency else "predicted_ms"
    plot_pareto(rows, out / "pareto.png", target_ms, chosen_key, column, accuracy_column)
    names = ["pareto.csv", "pareto", "pareto.png"]
    if selected is not None:
        payload = _selected_payload(selected, target_ms, latency_column, {a.key: a for a in archs})
        atomic_write_text(out / "selected.json", json.dumps(payload, indent=2) + "\n")
        names.append("selected.json")
    if history is not None:
        _write_csv(pd.DataFrame(list(history)), out / "history.csv")
        names.append("history.csv")
    if info is not None:
        text = json.dumps({k: _jsonable(v) for k, v in info.items()}, indent=2, default=str) + "\n"
        atomic_write_text(out / "search.json", text)
        names.append("search.json")
    return names


def result_info(result: SearchResult) -> dict[str, Any]:
    """What ``search.json`` records about a search, enough to repeat it."""
    reference = result.hv_reference.to_dict() if result.hv_reference else None
    return {"searcher": result.searcher, "settings": result.settings, "n_evaluations": result.n_evaluations,
            "front_size": len(result.archs), "hypervolume": result.hypervolume, "hv_reference": reference,
            "objectives": [{"name": n, "maximize": m} for n, m in zip(result.objective_names, result.maximize)]}


@dataclass
class SearchOutputs:
    """What ``finalize_search`` produced."""

    rows: pd.DataFrame  # the front table as written to pareto.csv
    selected: dict[str, Any]  # the chosen row
    paths: dict[str, Path]  # every file written


SELECTION_COLUMN = "selection_ms"


def confirmed_rows(rows: pd.DataFrame, archs: Sequence[Any], target_ms: float, column: str, confirm: Measure,
                   confirm_max: int = 5) -> pd.DataFrame:
    """The front with the choice confirmed by a second measurement: ``fresh_ms`` and ``fresh_ms_ci_high`` (NaN
    where not confirmed) and ``selection_ms``, the slower of ``column`` and ``fresh_ms_ci_high``.

    The member :func:`choose_under_target` picks on ``selection_ms`` is measured again (``confirm``); when the
    second measurement puts it over the target the next is tried, until a confirmed member meets the target.
    After ``confirm_max`` members the unconfirmed lose their ``selection_ms`` (NaN): the choice is then among
    the confirmed only, and :class:`NoArchMeetsTarget` is raised by the caller's choice when none meets it.
    One process's confidence interval says nothing of the next process's state on a shared machine (the
    same network measured 14% apart in two processes here); the slower of two is what a user re-checking
    the model can expect.
    """
    rows = rows.copy()
    rows["fresh_ms"], rows["fresh_ms_ci_high"] = math.nan, math.nan
    rows[SELECTION_COLUMN] = rows[column]
    by_key = {a.key: a for a in archs}
    for attempt in range(confirm_max + 1):
        try:
            chosen = choose_under_target(rows, target_ms, latency_column=SELECTION_COLUMN)
        except (NoArchMeetsTarget, ValueError):
            return rows
        i = rows.index[rows["key"] == chosen["key"]][0]
        if pd.notna(rows.at[i, "fresh_ms"]):
            return rows
        if attempt == confirm_max:
            rows.loc[rows["fresh_ms"].isna(), SELECTION_COLUMN] = math.nan
            return rows
        second = confirm(by_key[chosen["key"]])
        rows.at[i, "fresh_ms"], rows.at[i, "fresh_ms_ci_high"] = second["measured_ms"], second["measured_ms_ci_high"]
        rows.at[i, SELECTION_COLUMN] = max(float(rows.at[i, column]), float(second["measured_ms_ci_high"]))
    return rows


def finalize_search(
    out_dir: str | Path,
    result: SearchResult,
    target_ms: float,
    measure: Measure | None = None,
    accuracy: str = "accuracy",
    latency: str = "latency_ms",
    latency_column: str | None = None,
    progress: bool = True,
    confirm: Measure | None = None,
    confirm_max: int = 5,
) -> SearchOutputs:
    """Measures the front, chooses under the target and writes every output: the one call after search.

    Args:
        out_dir: ``<workdir>/search/<name>``.
        result: the search result.
        target_ms: latency budget in milliseconds.
        measure: ``arch -> {"measured_ms": ..., ...}`` (see ``front_rows``); without it the choice
            falls back to the predicted latency.
        accuracy: name of the predicted-accuracy objective.
        latency: name of the predicted-latency objective.
        latency_column: column compared with the target; ``measured_ms`` when ``measure`` is given,
            else ``predicted_ms``.
        progress: progress bar over the measurements.
        confirm: ``arch -> {"measured_ms": ..., "measured_ms_ci_high": ...}``, a second measurement of the chosen
            member (a fresh process); see :func:`confirmed_rows`. The choice then compares ``selection_ms``.
        confirm_max: at most this many members are confirmed; when all fail, only they stay candidates.

    Returns:
        ``SearchOutputs`` (rows, selected row, paths).

    Raises:
        NoArchMeetsTarget: nothing meets the target; every other file is still written (and no
            ``selected.json``), and the error names the fastest architecture and its latency.
    """
    column = latency_column or ("measured_ms" if measure else "predicted_ms")
    rows = front_rows(result, accuracy, latency, measure, progress)
    if confirm is not None:
        rows = confirmed_rows(rows, result.archs, target_ms, column, confirm, confirm_max)
        column = SELECTION_COLUMN
    write = {"rows": rows, "target_ms": target_ms, "archs": result.archs, "history": result.history,
             "info": result_info(result), "latency_column": column}
    try:
        selected = choose_under_target(rows, target_ms, latency_column=column)
    except NoArchMeetsTarget:
        write_search_outputs(out_dir, selected=None, **write)
        raise
    paths = write_search_outputs(out_dir, selected=selected, **write)
    return SearchOutputs(rows, selected, paths)
