"""Pareto fronts, the hypervolume indicator, and choosing an architecture under a latency target.

Convention: internally every objective is *minimised*. An objective that is maximised (accuracy)
is negated before sorting or hypervolume (``to_min_form``); values shown to people stay in their
natural units.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pymoo.indicators.hv import HV
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

DEFAULT_REF_POINT = 1.1  # reference point per objective in normalised coordinates (nadir + 10% of range)


class NoArchMeetsTarget(ValueError):
    """No front member meets the latency target; carries the fastest one so the caller can report it.

    Attributes:
        target_ms: the target that was asked for.
        fastest: the row (dict) of the fastest architecture with a latency.
        latency_column: the column that was compared with the target.
    """

    def __init__(self, target_ms: float, fastest: dict[str, Any], latency_column: str) -> None:
        self.target_ms = target_ms
        self.fastest = fastest
        self.latency_column = latency_column
        name = fastest.get("arch") or fastest.get("key") or "?"
        super().__init__(
            f"no architecture on the front meets the target of {target_ms:g} ms ({latency_column}); "
            f"the fastest is {name} (key {fastest.get('key', '?')}) at {fastest[latency_column]:.4g} ms. "
            f"Raise the target to at least {fastest[latency_column]:.4g} ms, or search a space with "
            "faster options."
        )


def to_min_form(F: np.ndarray, maximize: Sequence[bool]) -> np.ndarray:
    """Negates the columns of ``F`` that are maximised, so that every column is minimised.

    Args:
        F: objective values, shape (n, m), natural units.
        maximize: one flag per column.

    Returns:
        A float array of the same shape (a new array; the input is untouched).
    """
    F = np.asarray(F, dtype=float)
    signs = np.where(np.asarray(maximize, dtype=bool), -1.0, 1.0)
    if F.ndim != 2 or F.shape[1] != signs.size:
        raise ValueError(f"objective array has shape {F.shape}; expected (n, {signs.size})")
    return F * signs


def non_dominated(F_min: np.ndarray) -> np.ndarray:
    """Indices (ascending) of the rows of a minimisation array that no other row dominates.

    Rows with identical values do not dominate each other, so all of them are kept.
    """
    F_min = np.asarray(F_min, dtype=float)
    if len(F_min) == 0:
        return np.zeros(0, dtype=int)
    front = NonDominatedSorting().do(F_min, only_non_dominated_front=True)
    return np.sort(np.asarray(front, dtype=int))


def pareto_front(F: np.ndarray, maximize: Sequence[bool] | None = None) -> np.ndarray:
    """Indices of the non-dominated rows of ``F``.

    Args:
        F: objective values, shape (n, m), in natural units.
        maximize: which columns are maximised; all minimised when omitted.

    Returns:
        Sorted row indices of the Pareto front.
    """
    F = np.asarray(F, dtype=float)
    flags = [False] * F.shape[1] if maximize is None else maximize
    return non_dominated(to_min_form(F, flags))


@dataclass(frozen=True)
class HypervolumeReference:
    """Normalisation and reference point for the hypervolume, in minimisation form.

    Each objective ``j`` is normalised as ``(f_j - ideal_j) / (nadir_j - ideal_j)`` (a maximised
    objective is negated first), and the hypervolume is measured against the point
    ``(ref_point, ..., ref_point)`` in that normalised space. Points that do not dominate the
    reference point add nothing. With ``ref_point=1.1`` a perfect front over the box
    [ideal, nadir] scores at most 1.1**m.
    """

    ideal: tuple[float, ...]  # best value per objective (minimisation form)
    nadir: tuple[float, ...]  # worst value per objective (minimisation form)
    ref_point: float = DEFAULT_REF_POINT  # reference point per objective, normalised units

    def __post_init__(self) -> None:
        if len(self.ideal) != len(self.nadir):
            raise ValueError(f"ideal has {len(self.ideal)} values, nadir {len(self.nadir)}; they must match")
        object.__setattr__(self, "ideal", tuple(float(v) for v in self.ideal))
        object.__setattr__(self, "nadir", tuple(float(v) for v in self.nadir))

    @classmethod
    def from_points(cls, F_min: np.ndarray, ref_point: float = DEFAULT_REF_POINT) -> HypervolumeReference:
        """Ideal and nadir taken as the column minima and maxima of ``F_min`` (minimisation form)."""
        F_min = np.asarray(F_min, dtype=float)
        return cls(tuple(F_min.min(axis=0)), tuple(F_min.max(axis=0)), ref_point)

    def normalise(self, F_min: np.ndarray) -> np.ndarray:
        """Maps minimisation-form values into the normalised space (a zero range counts as 1)."""
        ideal, nadir = np.asarray(self.ideal), np.asarray(self.nadir)
        span = np.where(nadir > ideal, nadir - ideal, 1.0)
        return (np.asarray(F_min, dtype=float) - ideal) / span

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"ideal": list(self.ideal), "nadir": list(self.nadir), "ref_point": self.ref_point}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HypervolumeReference:
        """Inverse of ``to_dict``."""
        return cls(tuple(data["ideal"]), tuple(data["nadir"]), float(data["ref_point"]))


def hypervolume_min(F_min: np.ndarray, reference: HypervolumeReference) -> float:
    """Hypervolume (pymoo's indicator) of minimisation-form points after normalisation."""
    F_min = np.asarray(F_min, dtype=float)
    if len(F_min) == 0:
        return 0.0
    Fn = reference.normalise(F_min)
    ref = np.full(Fn.shape[1], reference.ref_point)
    Fn = Fn[np.all(Fn < ref, axis=1)]
    if len(Fn) == 0:
        return 0.0
    return float(HV(ref_point=ref)(Fn))


def hypervolume(F: np.ndarray, maximize: Sequence[bool], reference: HypervolumeReference) -> float:
    """Hypervolume of points given in natural units.

    Args:
        F: objective values, shape (n, m).
        maximize: which columns are maximised (they are negated before normalising).
        reference: normalisation and reference point (see ``HypervolumeReference``).

    Returns:
        The dominated hypervolume in normalised units (0.0 for no point inside the reference box).
    """
    return hypervolume_min(to_min_form(F, maximize), reference)


def _as_frame(rows: pd.DataFrame | Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    return rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))


def _row_dict(row: pd.Series) -> dict[str, Any]:
    out = {}
    for name, value in row.items():
        out[str(name)] = value.item() if isinstance(value, np.generic) else value
    return out


def choose_under_target(
    rows: pd.DataFrame | Sequence[Mapping[str, Any]],
    target_ms: float,
    latency_column: str = "measured_ms",
    accuracy_column: str = "predicted_accuracy",
) -> dict[str, Any]:
    """The front member with the highest predicted accuracy whose latency meets the target.

    Rows without a latency (NaN) are ignored. Ties in accuracy go to the lower latency.

    Args:
        rows: the front, one row per architecture (a DataFrame or a list of dicts).
        target_ms: latency budget in milliseconds; a row meets it when latency <= target.
        latency_column: the column compared with the target (measured latency by default).
        accuracy_column: the column maximised among rows that meet the target.

    Returns:
        The chosen row as a dict.

    Raises:
        NoArchMeetsTarget: nothing meets the target; the error names the fastest architecture.
        ValueError: a column is missing or no row has a latency.
    """
    frame = _as_frame(rows)
    missing = [c for c in (latency_column, accuracy_column) if c not in frame.columns]
    if missing:
        raise ValueError(f"rows lack column(s) {missing}; columns present: {list(frame.columns)}")
    if not math.isfinite(float(target_ms)) or target_ms <= 0:
        raise ValueError(f"target_ms must be a positive number of milliseconds, got {target_ms!r}")
    frame = frame[frame[latency_column].notna()]
    if frame.empty:
        raise ValueError(f"no row has a value in {latency_column!r}; measure the front first")
    meets = frame[frame[latency_column] <= target_ms]
    if meets.empty:
        fastest = frame.loc[frame[latency_column].idxmin()]
        raise NoArchMeetsTarget(float(target_ms), _row_dict(fastest), latency_column)
    best = meets.sort_values([accuracy_column, latency_column], ascending=[False, True], kind="stable")
    return _row_dict(best.iloc[0])
