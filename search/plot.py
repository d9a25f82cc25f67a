"""``pareto.png``: predicted accuracy against measured latency, the target as a line, the choice marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.fileio import atomic_path


def _latency_errors(rows: pd.DataFrame, latency_column: str) -> np.ndarray | None:
    low, high = f"{latency_column}_ci_low", f"{latency_column}_ci_high"
    if low not in rows or high not in rows:
        return None
    lat = rows[latency_column].to_numpy(float)
    errors = np.vstack([lat - rows[low].to_numpy(float), rows[high].to_numpy(float) - lat])
    return np.nan_to_num(np.clip(errors, 0.0, None))


def _draw_front(ax: Any, rows: pd.DataFrame, latency_column: str, accuracy_column: str,
                predicted_latency_column: str | None) -> None:
    predicted = predicted_latency_column
    if predicted and predicted in rows and predicted != latency_column and rows[predicted].notna().any():
        for _, row in rows.iterrows():  # grey link: how far the measurement moved each point
            ax.plot([row[predicted], row[latency_column]], [row[accuracy_column]] * 2, color="0.8", lw=0.8)
        ax.scatter(rows[predicted], rows[accuracy_column], s=18, facecolors="none", edgecolors="0.55",
                   label=f"{predicted} (table)")
    ax.errorbar(rows[latency_column], rows[accuracy_column], xerr=_latency_errors(rows, latency_column),
                fmt="o", ms=4, color="tab:blue", ecolor="tab:blue", elinewidth=0.8,
                label=f"front ({latency_column})")


def plot_pareto(
    rows: pd.DataFrame,
    path: str | Path,
    target_ms: float | None = None,
    selected_key: str | None = None,
    latency_column: str = "measured_ms",
    accuracy_column: str = "predicted_accuracy",
    predicted_latency_column: str | None = "predicted_ms",
    title: str | None = None,
) -> Path:
    """Draws the front and writes it atomically as a PNG (matplotlib's Agg canvas, no display needed).

    Args:
        rows: front table with ``key``, the latency and accuracy columns (CI columns
            ``<latency_column>_ci_low`` / ``_ci_high`` drawn as error bars when present).
        path: output file.
        target_ms: drawn as a vertical dashed line when given.
        selected_key: the chosen architecture's key, marked with a star.
        latency_column: x axis; rows without a value there are left out.
        accuracy_column: y axis.
        predicted_latency_column: drawn as hollow grey points when present, to show the table's error.
        title: figure title.

    Returns:
        The path written.
    """
    rows = rows[rows[latency_column].notna()]
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    _draw_front(ax, rows, latency_column, accuracy_column, predicted_latency_column)
    if target_ms is not None:
        ax.axvline(target_ms, color="tab:red", ls="--", lw=1, label=f"target {target_ms:g} ms")
    chosen = rows[rows["key"] == selected_key] if selected_key else rows.iloc[:0]
    if len(chosen):
        ax.scatter(chosen[latency_column], chosen[accuracy_column], marker="*", s=220, color="tab:orange",
                   edgecolors="k", zorder=5, label=f"selected {selected_key}")
    ax.set_xlabel(f"latency, ms ({latency_column})")
    ax.set_ylabel(accuracy_column.replace("_", " "))
    ax.set_title(title or "Pareto front")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return Path(path)
