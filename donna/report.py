"""``donna report``: one self-contained HTML page of a whole run (plots embedded as PNG) and a markdown twin.

Reads what the run folder holds and skips, saying so, every section whose inputs are missing. Writes
``report.html`` (no server, no network: images are base64 data URIs), ``report.md`` and the markdown's
images under ``report_files/``.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from common.fileio import atomic_write_bytes, atomic_write_text
from donna.predictor import PREDICTS, predicted_text
from donna.runfolder import RunFolder, read_json, write_json

STAGE_ORDER = ("run", "data", "teacher", "bkd", "score", "labels", "search", "finetune")  # pipeline order
ZOOM = 0.25  # the second front plot spans the target +- this share
COLORS = ("tab:blue", "tab:green", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "fontsize": 8, "borderaxespad": 0.0}


@dataclass
class Table:
    """A table of text cells."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    """A PNG figure with its caption."""

    name: str  # file stem under report_files/
    caption: str
    png: bytes


@dataclass
class Section:
    """One section: paragraphs, tables and images in order, or the reason it is missing."""

    title: str
    blocks: list[str | Table | Image] = field(default_factory=list)
    missing: str | None = None


# ---- reading the run folder ---------------------------------------------------------------------

@dataclass
class Run:
    """What a run folder holds (``None`` or empty for what is missing)."""

    root: Path
    config: dict[str, Any]
    teacher: dict[str, Any] | None
    predictor: dict[str, Any] | None
    labels: pd.DataFrame | None
    nsr: pd.DataFrame | None
    tables: dict[str, dict[str, Any]]  # device -> table.json
    searches: dict[str, dict[str, Any]]  # name -> {"rows", "selected", "info"}
    finetunes: dict[str, dict[str, Any]]  # folder name -> metrics.json

    @functools.cached_property
    def teacher_model(self) -> dict[str, Any]:
        """Params, MACs and training time of our own teacher (``teacher.pt``); empty when there is none."""
        return _teacher_checkpoint(self.root)

    def teacher_latency(self, device: str) -> dict[str, Any] | None:
        """The teacher's latency measured by ``measure_teacher`` on ``device``, if it is of this teacher."""
        data = read_json(RunFolder(self.root).latency(device).teacher_latency_json)
        fp = (self.teacher or {}).get("fingerprint")
        return data if data and fp and data.get("teacher_fingerprint") == fp else None

    @property
    def main_search(self) -> str | None:
        """The search the run's config names (else the first one found)."""
        cfg = self.config.get("search") or {}
        name = cfg.get("name") or cfg.get("searcher")
        return name if name in self.searches else next(iter(self.searches), None)

    @property
    def chosen(self) -> dict[str, Any] | None:
        """Metrics of the finetuned model: the main search's selection if finetuned, else the latest."""
        selected = (self.searches.get(self.main_search or "") or {}).get("selected") or {}
        for metrics in self.finetunes.values():
            if metrics.get("key") == selected.get("key"):
                return metrics
        return list(self.finetunes.values())[-1] if self.finetunes else None

    @property
    def target_ms(self) -> float | None:
        """The latency target of the main search."""
        selected = (self.searches.get(self.main_search or "") or {}).get("selected") or {}
        value = selected.get("target_ms") or (self.config.get("search") or {}).get("target_ms")
        return float(value) if value else None

    def selected_by(self, key: str) -> tuple[str | None, float | None]:
        """The search that selected ``key`` (the main one first) and its target; else (None, main target)."""
        names = [self.main_search] + [n for n in self.searches if n != self.main_search]
        for name in (n for n in names if n):
            selected = self.searches[name].get("selected") or {}
            if selected.get("key") == key:
                return name, selected.get("target_ms")
        return None, self.target_ms


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


def load_run(workdir: str | Path) -> Run:
    """Reads every file the report uses; a missing folder is a ValueError naming it."""
    root = Path(workdir)
    if not root.is_dir():
        raise ValueError(f"no run folder at {root}; pass the --workdir of a `donna run` or `donna build-predictor`")
    run = RunFolder(root)
    tables = {device: read_json(path) for device, path in run.latency_tables().items()}
    searches = {}
    for folder in run.searches():
        searches[folder.name] = {"rows": pd.read_csv(folder.pareto_csv), "selected": read_json(folder.selected_json),
                                 "info": read_json(folder.search_json) or {}}
    finetunes = {f.root.name: read_json(f.metrics_json) for f in run.finetunes()}
    return Run(root, run.read_config(), read_json(run.teacher_json), read_json(run.predictor_json),
               _csv(run.labels_csv), _csv(run.nsr_csv), tables, searches, finetunes)


def _teacher_checkpoint(root: Path) -> dict[str, Any]:
    """Params, MACs and training time of our own teacher (``teacher.pt``); empty when there is none."""
    path = RunFolder(root).teacher_pt
    if not path.is_file():
        return {}
    import torch

    from blocks import Arch, describe_arch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    out = {"train_seconds": ckpt.get("train_seconds")}
    if "arch" in ckpt:
        info = describe_arch(Arch.from_dict(ckpt["arch"]))
        out.update(params=info["params"], macs=info["macs"])
    return out


# ---- formatting and plots -----------------------------------------------------------------------

def fmt(value: Any, spec: str = ".4f", none: str = "n/a") -> str:
    """A number formatted with ``spec``; ``none`` for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, spec) if isinstance(value, int | float | np.number) else str(value)


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def _figure(width: float = 8.0, height: float = 4.6) -> tuple[Figure, Any]:
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.grid(alpha=0.3)
    return fig, ax


def _settings_text(settings: dict[str, Any]) -> str:
    parts = [f"{k}={json.dumps(v) if isinstance(v, list | dict) else v}" for k, v in settings.items()]
    return ", ".join(parts)


# ---- sections -----------------------------------------------------------------------------------

def stages_section(run: Run) -> Section:
    """Every stage recorded in ``config.json`` with its settings and, where recorded, its time."""
    if not run.config:
        return Section("Stages", missing="no config.json in the run folder")
    times = _stage_times(run)
    order = sorted(run.config, key=lambda n: (STAGE_ORDER.index(n) if n in STAGE_ORDER else len(STAGE_ORDER), n))
    rows = [[name, _settings_text(run.config[name]) if isinstance(run.config[name], dict) else str(run.config[name]),
             fmt(times.get(name), ".0f", "not recorded")] for name in order]
    extra = [[name, "", fmt(seconds, ".0f")] for name, seconds in times.items() if name not in run.config]
    return Section("Stages", [Table(["stage", "settings (config.json)", "time, s"], rows + extra)])


def _stage_times(run: Run) -> dict[str, float]:
    times: dict[str, float] = {}
    teacher = run.teacher_model
    if teacher.get("train_seconds") is not None:
        times["teacher"] = float(teacher["train_seconds"])
    bkd = [read_json(p).get("seconds") for p in RunFolder(run.root).slot_manifests()]
    if bkd and all(s is not None for s in bkd):
        times["bkd"] = float(sum(bkd))
    chosen = run.chosen
    if chosen and chosen.get("train_seconds") is not None:
        times["finetune"] = float(chosen["train_seconds"])
    return times


def teacher_section(run: Run) -> Section:
    """Teacher against the finetuned chosen model."""
    model = run.chosen
    if model is None:
        return Section("Teacher and chosen model", missing="no finetune/<key>/metrics.json (run `donna finetune`)")
    device = model.get("latency_device", "cpu")
    teacher = {**(run.teacher_latency(device) or {}), **(run.teacher or {}), **run.teacher_model}
    t_ms, m_ms = teacher.get("measured_ms"), model.get("measured_ms")
    ci = model.get("measured_ms_ci") or [None, None]
    search, target = run.selected_by(model.get("key", ""))
    target = model.get("target_ms") or target
    met = model.get("target_met", None if target is None or m_ms is None else m_ms <= target)

    def ratio(a: Any, b: Any, spec: str = ".2f", suffix: str = "") -> str:
        return f"{a / b:{spec}}x{suffix}" if a and b else "n/a"

    rows = [
        ["val accuracy", fmt(teacher.get("val_accuracy")), fmt(model.get("val_accuracy")),
         fmt(model["val_accuracy"] - teacher["val_accuracy"], "+.4f") if teacher.get("val_accuracy") else "n/a"],
        ["test accuracy", fmt(teacher.get("test_accuracy")), fmt(model.get("test_accuracy")), ""],
        [f"measured latency on {device}, ms",
         fmt(t_ms, ".4f", "not measured") + (" NOISY" if teacher.get("noisy") else ""),
         f"{fmt(m_ms)} (95% CI {fmt(ci[0])}-{fmt(ci[1])})" + (" NOISY" if model.get("measured_noisy") else ""),
         "speed-up " + ratio(t_ms, m_ms)],
        ["params", fmt(teacher.get("params"), ",", "n/a"), fmt(model.get("params"), ","),
         ratio(teacher.get("params"), model.get("params"), ".1f", " fewer")],
        ["MACs", fmt(teacher.get("macs"), ",", "n/a"), fmt(model.get("macs"), ","),
         ratio(teacher.get("macs"), model.get("macs"), ".1f", " fewer")],
    ]
    blocks: list[str | Table | Image] = [
        f"Chosen model `{model.get('arch', model.get('key'))}` (key {model.get('key')}, selected by "
        f"{search or 'no search in this folder'}), finetuned "
        f"{model.get('epochs')} epochs from {model.get('init')} weights; teacher `{teacher.get('name', '?')}` "
        f"({teacher.get('kind', '?')}).",
        Table(["", "teacher", "chosen model", "chosen vs teacher"], rows)]
    if target is not None:
        verdict = "PASS" if met else "FAIL"
        blocks.append(f"Latency target {fmt(target)} ms: measured {fmt(m_ms)} ms -> {verdict}.")
    if t_ms is None:
        blocks.append("The teacher's latency is not measured, so no speed-up is given "
                      f"(`donna report --workdir {run.root} --measure-teacher` measures it).")
    return Section("Teacher and chosen model", blocks)


def front_section(run: Run) -> Section:
    """Every searcher's whole predicted front, the measured members, the target, the selections."""
    if not run.searches:
        return Section("Pareto front", missing="no search/<name>/pareto.csv (run `donna search`)")
    fig, ax = _figure(9.0, 5.2)
    _draw_fronts(ax, run)
    ax.set_title("Predicted Pareto fronts, measured members and selections")
    ax.legend(**LEGEND_OUTSIDE)
    blocks: list[str | Table | Image] = [
        _front_table(run),
        f"The predictor predicts {PREDICTS}. Beyond the labels' range its linear fit passes 1 (shown as 1.00+ "
        "with the raw value): there it still ranks networks, and the search uses it so, but it is not an accuracy. "
        "The finetuned model's accuracy is in the table above.",
        Image("pareto", "every searcher's whole front", _png(fig))]
    if run.target_ms and _zoom(run) is not None:
        fig, ax = _figure(9.0, 5.2)
        _draw_fronts(ax, run)
        ax.set_xlim(*_zoom(run)[0])
        ax.set_ylim(*_zoom(run)[1])
        ax.set_title(f"Near the target: {ZOOM:.0%} either side of {run.target_ms:g} ms")
        ax.legend(**LEGEND_OUTSIDE)
        blocks.append(Image("pareto_target", f"near the target: {ZOOM:.0%} either side of {run.target_ms:g} ms",
                            _png(fig)))
    return Section("Pareto front", blocks)


def _draw_fronts(ax: Any, run: Run) -> None:
    for k, (color, (name, search)) in enumerate(zip(COLORS, run.searches.items())):
        _draw_search(ax, name, search, color, star=max(90, 320 - 80 * k))  # shrinking: coinciding stars stay visible
    _draw_references(ax, run)
    ax.set_xlabel("latency, ms (hollow: table-predicted; filled: measured on the device)")
    ax.set_ylabel("predicted accuracy (accuracy predictor)")


def _zoom(run: Run) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Axis limits around the target holding the points there; None when fewer than 3 points are near it."""
    low, high = run.target_ms * (1 - ZOOM), run.target_ms * (1 + ZOOM)
    accuracies = []
    for search in run.searches.values():
        rows = search["rows"]
        for column in ("predicted_ms", "measured_ms"):
            if column in rows:
                accuracies += rows.loc[rows[column].between(low, high), "predicted_accuracy"].tolist()
    chosen = run.chosen or {}
    if chosen.get("measured_ms") is not None and low <= chosen["measured_ms"] <= high:
        accuracies.append(chosen["val_accuracy"])
    if len(accuracies) < 3:
        return None
    pad = 0.08 * (max(accuracies) - min(accuracies) or 0.01)
    return (low, high), (min(accuracies) - pad, max(accuracies) + pad)


def _draw_search(ax: Any, name: str, search: dict[str, Any], color: str, star: float = 260) -> None:
    rows = search["rows"].sort_values("predicted_ms")
    if name == "exact":
        ax.step(rows["predicted_ms"], rows["predicted_accuracy"], where="post", color="k", lw=1.0,
                label=f"exact front ({len(rows)}, predicted)", zorder=2)
    else:
        ax.scatter(rows["predicted_ms"], rows["predicted_accuracy"], s=16, facecolors="none", edgecolors=color,
                   label=f"{name} front ({len(rows)}, predicted)", zorder=3)
    measured = rows[rows["measured_ms"].notna()] if "measured_ms" in rows else rows.iloc[:0]
    if len(measured):
        low = measured.get("measured_ms_ci_low", measured["measured_ms"])
        high = measured.get("measured_ms_ci_high", measured["measured_ms"])
        lat = measured["measured_ms"]
        err = np.nan_to_num(np.clip(np.vstack([lat - low, high - lat]), 0, None))
        ax.errorbar(measured["measured_ms"], measured["predicted_accuracy"], xerr=err, fmt="o", ms=4,
                    color=color, elinewidth=0.8, label=f"{name}: measured ({len(measured)})", zorder=4)
    selected = search.get("selected")
    if selected:
        x = selected.get("measured_ms") if selected.get("measured_ms") is not None else selected.get("predicted_ms")
        ax.scatter([x], [selected["predicted_accuracy"]], marker="*", s=star, color=color, edgecolors="k",
                   zorder=6, label=f"{name} selection {selected['key'][:8]}")


def _latency_range(run: Run) -> tuple[float, float]:
    """Smallest and largest latency drawn on the front plot (predicted, measured, finetuned)."""
    values = [run.searches[n]["rows"].get(c, pd.Series(dtype=float)) for n in run.searches
              for c in ("predicted_ms", "measured_ms")]
    values.append(pd.Series([(run.chosen or {}).get("measured_ms")], dtype=float))
    finite = pd.concat(values).dropna()
    return (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)


def _draw_references(ax: Any, run: Run) -> None:
    low, high = _latency_range(run)
    pad = 0.05 * (high - low or high or 1.0)
    if run.target_ms and low - 3 * pad <= run.target_ms <= high + 0.5 * (high - low) + pad:
        ax.axvline(run.target_ms, color="tab:red", ls="--", lw=1.2, label=f"target {run.target_ms:g} ms")
        low, high = min(low, run.target_ms), max(high, run.target_ms)
    elif run.target_ms:
        ax.plot([], [], color="tab:red", ls="--", lw=1.2, label=f"target {run.target_ms:g} ms (far off this range)")
    ax.set_xlim(low - pad, high + pad)
    teacher = run.teacher or {}
    if teacher.get("val_accuracy") is not None:
        ax.axhline(teacher["val_accuracy"], color="0.4", ls=":", lw=1.2,
                   label=f"teacher val accuracy {teacher['val_accuracy']:.3f}")
    chosen = run.chosen
    if chosen and chosen.get("measured_ms") is not None:
        ax.scatter([chosen["measured_ms"]], [chosen["val_accuracy"]], marker="D", s=70, color="tab:orange",
                   edgecolors="k", zorder=7, label="finetuned model (val accuracy, measured)")


def _front_table(run: Run) -> Table:
    exact_hv = (run.searches.get("exact") or {}).get("info", {}).get("hypervolume")
    rows = []
    for name, search in run.searches.items():
        info, sel = search["info"], search.get("selected") or {}
        hv = info.get("hypervolume")
        share = fmt(hv / exact_hv, ".1%") if hv is not None and exact_hv else "n/a"
        rows.append([name, str(len(search["rows"])), fmt(info.get("n_evaluations"), ","), fmt(hv), share,
                     sel.get("key", "none"), predicted_text(sel.get("predicted_accuracy")),
                     fmt(sel.get("measured_ms"))])
    return Table(["searcher", "front size", "evaluations", "hypervolume", "share of exact", "selected",
                  "predicted label accuracy", "measured ms"], rows)


def latency_section(run: Run) -> Section:
    """Table-predicted against measured latency: the table's held-out validation set and the fronts."""
    if not run.tables:
        return Section("Latency: predicted vs measured", missing="no latency/<device>/table.json")
    fig, ax = _figure(8.0, 4.8)
    blocks: list[str | Table | Image] = []
    rows = []
    for color, (device, table) in zip(COLORS, run.tables.items()):
        val = table.get("validation") or {}
        archs = pd.DataFrame(val.get("archs") or [])
        if len(archs):
            ax.scatter(archs["predicted_ms"], archs["measured_ms"], s=22, color=color,
                       label=f"{device}: table validation ({len(archs)})")
        rows.append([device, str(val.get("n", 0)), fmt(val.get("rmspe"), ".1%"), fmt(val.get("within_5"), ".0%"),
                     fmt(val.get("within_10"), ".0%"), fmt(val.get("max_abs_pct"), ".1f"),
                     fmt(val.get("spearman"), ".3f"), fmt(val.get("noise"), ".1%")])
    for marker, (name, search) in zip("^vsPX", run.searches.items()):
        front = search["rows"]
        front = front[front["measured_ms"].notna()] if "measured_ms" in front else front.iloc[:0]
        if len(front):
            ax.scatter(front["predicted_ms"], front["measured_ms"], marker=marker, s=26, facecolors="none",
                       edgecolors="tab:orange", label=f"{name} front, measured ({len(front)})")
    _identity_lines(ax)
    ax.set_xlabel("predicted by the latency table, ms")
    ax.set_ylabel("measured, ms")
    ax.set_title("Latency table: predicted against measured")
    ax.legend(**LEGEND_OUTSIDE)
    blocks.append(Table(["device", "held-out archs", "RMSPE", "within 5%", "within 10%", "worst, %", "Spearman",
                         "run-to-run noise"], rows))
    blocks.append(Image("latency", "predicted against measured latency", _png(fig)))
    return Section("Latency: predicted vs measured", blocks)


def _identity_lines(ax: Any) -> None:
    low, high = ax.get_xlim()
    low, high = min(low, ax.get_ylim()[0]), max(high, ax.get_ylim()[1])
    grid = np.array([low, high])
    ax.plot(grid, grid, color="k", lw=1, label="measured = predicted")
    ax.fill_between(grid, grid * 0.95, grid * 1.05, color="0.6", alpha=0.25, lw=0, label="within 5%")
    ax.set_xlim(low, high)
    ax.set_ylim(low, high)


def predictor_section(run: Run) -> Section:
    """The accuracy predictor's predictions against the labels it was fitted on, and its held-out quality."""
    if run.predictor is None or run.labels is None:
        return Section("Accuracy predictor", missing="no predictor.json or labels.csv (run `donna build-predictor`)")
    pred = run.predictor
    features = [f for f in pred["features"] if f in run.labels]
    if len(features) != len(pred["features"]):
        return Section("Accuracy predictor", missing="labels.csv lacks the predictor's feature columns")
    fitted = run.labels[features].to_numpy(float) @ np.asarray(pred["coef"]) + pred["intercept"]
    fig, ax = _figure(7.5, 4.6)
    ax.scatter(fitted, run.labels["accuracy"], s=24, label=f"fitted on all {len(fitted)} labels")
    held_out = _held_out(run.labels[features].to_numpy(float), run.labels["accuracy"].to_numpy(float))
    ax.scatter(held_out, run.labels["accuracy"], s=30, facecolors="none", edgecolors="tab:purple",
               label="held out (leave-one-out refit)")
    chosen = run.chosen
    if chosen and chosen.get("predicted_accuracy") is not None:
        ax.scatter([chosen["predicted_accuracy"]], [chosen["val_accuracy"]], marker="D", s=60, color="tab:orange",
                   edgecolors="k", label="finetuned model (val accuracy)")
    low = min(ax.get_xlim()[0], ax.get_ylim()[0])
    high = max(ax.get_xlim()[1], ax.get_ylim()[1])
    ax.plot([low, high], [low, high], color="k", lw=1, label="label = prediction")
    ax.set_xlabel("predicted accuracy")
    ax.set_ylabel("labelled accuracy (short finetune, val)")
    ax.set_title("Accuracy predictor against its labels")
    ax.legend(**LEGEND_OUTSIDE)
    quality = [[name, fmt(q.get("kendall_tau"), ".3f"), _interval(q.get("tau_low"), q.get("tau_high")),
                fmt(q.get("spearman"), ".3f"), fmt(q.get("mae"), ".4f")]
               for name, q in (pred.get("quality") or {}).items() if isinstance(q, dict)]
    return Section("Accuracy predictor", [
        f"Ridge regression on {len(features)} per-slot NSR features, alpha {fmt(pred.get('alpha'), '.3g')}, "
        f"{pred.get('n_labels', len(fitted))} labels. Held-out ranking quality (leave-one-out):",
        Table(["ranker", "Kendall tau", "tau 90% interval", "Spearman", "MAE"], quality),
        Image("predictor", "predicted against labelled accuracy", _png(fig))])


def _interval(low: Any, high: Any) -> str:
    return "n/a" if low is None or high is None else f"{fmt(low, '.3f')} to {fmt(high, '.3f')}"


def _held_out(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each label predicted by a ridge model refitted without it (as ``fit_predictor`` rates the predictor)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.model_selection import LeaveOneOut, cross_val_predict

    from donna.predictor import ALPHAS

    return cross_val_predict(RidgeCV(alphas=ALPHAS), x, y, cv=LeaveOneOut())


def nsr_section(run: Run) -> Section:
    """NSR of every option of every slot against its MACs, the chosen model's options marked."""
    if run.nsr is None or run.nsr.empty:
        return Section("Block library (NSR)", missing="no nsr.csv (run `donna build-predictor`)")
    slots = sorted(run.nsr["slot"].unique())
    cols = min(3, len(slots))
    n_rows = math.ceil(len(slots) / cols)
    fig = Figure(figsize=(4.0 * cols, 3.2 * n_rows))
    FigureCanvasAgg(fig)
    chosen = _chosen_options(run)
    summary = []
    for k, slot in enumerate(slots):
        ax = fig.add_subplot(n_rows, cols, k + 1)
        rows = run.nsr[run.nsr["slot"] == slot]
        ax.scatter(rows["macs"] / 1e6, rows["nsr"], s=10, label="options")
        mine = rows[rows["option"] == chosen.get(int(slot))]
        if len(mine):
            ax.scatter(mine["macs"] / 1e6, mine["nsr"], marker="*", s=160, color="tab:orange", edgecolors="k",
                       label="chosen model")
        ax.set_xlabel("option MACs, millions")
        ax.set_ylabel("NSR (lower is better)")
        ax.set_title(f"slot {slot}: {len(rows)} options")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
        best = rows.loc[rows["nsr"].idxmin()]
        summary.append([str(slot), str(len(rows)), f"`{best['option']}`", fmt(best["nsr"], ".3f"),
                        fmt(rows["nsr"].median(), ".3f"), fmt(rows["nsr"].max(), ".3f")])
    fig.tight_layout()
    return Section("Block library (NSR)", [
        Table(["slot", "options", "best option", "best NSR", "median NSR", "worst NSR"], summary),
        Image("nsr", "NSR per slot and option", _png(fig))])


def _chosen_options(run: Run) -> dict[int, str]:
    selected = (run.searches.get(run.main_search or "") or {}).get("selected") or {}
    blocks = (selected.get("ir") or {}).get("blocks") or []
    if not blocks:
        return {}
    from blocks import Arch

    return {i: str(b) for i, b in enumerate(Arch.from_dict(selected["ir"]).blocks)}


def finetune_section(run: Run) -> Section:
    """Validation accuracy and training loss per epoch of the chosen model's finetune."""
    chosen = run.chosen
    history = (chosen or {}).get("history") or {}
    if not history.get("val_accuracy"):
        return Section("Finetune", missing="no finetune history (finetune/<key>/metrics.json)")
    fig, ax = _figure(7.5, 4.0)
    epochs = np.arange(1, len(history["val_accuracy"]) + 1)
    lines = ax.plot(epochs, history["val_accuracy"], "o-", label="val accuracy")
    ax.set_xlabel("epoch")
    ax.set_ylabel("val accuracy")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if history.get("train_loss"):
        ax2 = ax.twinx()
        lines += ax2.plot(epochs, history["train_loss"], "s--", color="tab:orange", label="train loss")
        ax2.set_ylabel("train loss")
    ax.set_title(f"finetune of {chosen['key']}")
    ax.legend(lines, [ln.get_label() for ln in lines], loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2,
              fontsize=8)
    rows = [[name, str(m.get("epochs")), m.get("init", "?"), fmt(m.get("val_accuracy")), fmt(m.get("test_accuracy")),
             fmt(m.get("measured_ms")), fmt(m.get("onnx_torch_top1_agreement"), ".2%")]
            for name, m in run.finetunes.items()]
    return Section("Finetune", [
        Table(["finetune folder", "epochs", "init", "val accuracy", "test accuracy", "measured ms",
               "ONNX = torch top-1"], rows),
        Image("finetune", "finetune curve", _png(fig))])


def environment_section(run: Run) -> Section:
    """Versions and platform of this machine, and the fingerprint the latency tables were measured with."""
    rows = [["python", sys.version.split()[0]], ["platform", platform.platform()],
            ["processor", platform.processor() or platform.machine()]]
    for package in ("torch", "onnxruntime", "numpy", "pymoo", "scikit-learn", "matplotlib"):
        try:
            rows.append([package, metadata.version(package)])
        except metadata.PackageNotFoundError:
            rows.append([package, "not installed"])
    for device, table in run.tables.items():
        rows.append([f"latency table {device} measured on", _settings_text(table.get("fingerprint") or {})])
    return Section("Environment", ["Where this report was written (the run may have used another machine):",
                                   Table(["", "version"], rows)])


SECTIONS: tuple[Callable[[Run], Section], ...] = (stages_section, teacher_section, front_section, latency_section,
                                                   predictor_section, nsr_section, finetune_section,
                                                   environment_section)


# ---- rendering ----------------------------------------------------------------------------------

def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(title: str, sections: list[Section], image_dir: str = RunFolder.REPORT_IMAGES) -> str:
    """The report as markdown; images are referenced as ``image_dir/<name>.png``."""
    lines = [f"# {title}", ""]
    for section in sections:
        lines += [f"## {section.title}", ""]
        if section.missing:
            lines += [f"*Skipped: {section.missing}.*", ""]
        for block in section.blocks:
            if isinstance(block, Table):
                lines += ["| " + " | ".join(map(_md_cell, block.header)) + " |",
                          "| " + " | ".join("---" for _ in block.header) + " |"]
                lines += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in block.rows] + [""]
            elif isinstance(block, Image):
                lines += [f"![{block.caption}]({image_dir}/{block.name}.png)", ""]
            else:
                lines += [block, ""]
    return "\n".join(lines)


def _inline(text: str) -> str:
    """HTML of a paragraph: escaped, with `code` spans."""
    parts = html.escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def render_html(title: str, sections: list[Section]) -> str:
    """The report as one HTML page; every image is an embedded base64 PNG."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for section in sections:
        body.append(f"<h2>{html.escape(section.title)}</h2>")
        if section.missing:
            body.append(f'<p class="missing">Skipped: {html.escape(section.missing)}.</p>')
        for block in section.blocks:
            if isinstance(block, Table):
                head = "".join(f"<th>{_inline(h)}</th>" for h in block.header)
                rows = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
            elif isinstance(block, Image):
                data = base64.b64encode(block.png).decode()
                body.append(f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                            f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
            else:
                body.append(f"<p>{_inline(block)}</p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.9em}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
             "th{background:#f0f0f0}img{max-width:100%}.missing{color:#a40}code{font-size:0.9em}")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


@dataclass
class ReportPaths:
    """What ``write_report`` wrote, and the sections it skipped."""

    html: Path
    markdown: Path
    images: list[Path]
    skipped: list[str]  # "title: reason"


def build_sections(run: Run) -> list[Section]:
    """Every section of the report, in order."""
    return [make(run) for make in SECTIONS]


def measure_teacher(workdir: str | Path, device: str, protocol: dict | None = None) -> dict[str, Any] | None:
    """Measures our own teacher (``teacher.pt``'s architecture) on ``device`` once per teacher.

    Writes ``latency/<device>/teacher_latency.json``; returns it, or None when there is no
    ``teacher.pt`` architecture to measure (e.g. a torchvision teacher).
    """
    from latency import measure_model

    run = load_run(workdir)
    cached = run.teacher_latency(device)
    if cached is not None:
        return cached
    path = RunFolder(run.root).teacher_pt
    if run.teacher is None or not path.is_file():
        return None
    import torch

    from blocks import Arch

    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if "arch" not in ckpt:
        return None
    result = measure_model(Arch.from_dict(ckpt["arch"]), device, protocol=protocol,
                           cache_dir=RunFolder(run.root).exports)
    data = {"device": device, "teacher_fingerprint": run.teacher.get("fingerprint"), "measured_ms": result.median_ms,
            "measured_ms_ci": [result.ci_low_ms, result.ci_high_ms], "noisy": bool(result.noisy)}
    write_json(RunFolder(run.root).latency(device).teacher_latency_json, data)
    return data


def write_report(workdir: str | Path, measure_teacher_latency: bool = False) -> ReportPaths:
    """Writes ``report.html``, ``report.md`` and ``report_files/*.png`` in the run folder.

    Args:
        workdir: the run folder.
        measure_teacher_latency: first measure the teacher on the chosen model's latency device (once;
            the result is kept in ``latency/<device>/teacher_latency.json``) so the report gives a speed-up.

    Raises:
        ValueError: ``workdir`` is not a folder.
    """
    run = load_run(workdir)
    if measure_teacher_latency and run.chosen is not None:
        measure_teacher(workdir, run.chosen.get("latency_device", "cpu"))
    sections = build_sections(run)
    title = f"DONNA run report: {run.root.resolve().name} ({time.strftime('%Y-%m-%d %H:%M')})"
    images = []
    for block in (b for s in sections for b in s.blocks if isinstance(b, Image)):
        images.append(atomic_write_bytes(RunFolder(run.root).report_image(block.name), block.png))
    markdown = atomic_write_text(RunFolder(run.root).report_md, render_markdown(title, sections))
    page = atomic_write_text(RunFolder(run.root).report_html, render_html(title, sections))
    return ReportPaths(page, markdown, images, [f"{s.title}: {s.missing}" for s in sections if s.missing])
