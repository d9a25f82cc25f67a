"""What a searcher declares about itself: what it needs, what it can do, its schedules and their cost.

A caller (``donna search``) reads a searcher's ``SearcherSpec`` to decide what to build for it
(a data set, per-op latency costs, per-slot tables), whether to hand it a checkpoint folder, and
what to print before a long run; it never switches on the searcher's name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

LatencyInput = Literal["objective", "table", "additive"]
REFERENCE_MACHINE = "one CPU core"  # what the searchers' time estimates are measured on


@dataclass(frozen=True)
class Schedule:
    """A named preset of searcher settings (``paper``: the published schedule; ``quick``: minutes here)."""

    settings: Mapping[str, Any]  # searcher settings the preset sets; flags and ``--set`` override them
    description: str  # one line: where the numbers come from


@dataclass(frozen=True)
class RunSize:
    """What the cost of a schedule depends on, as the caller knows it before the search starts."""

    n_train: int = 0  # training samples a gradient searcher splits into its halves
    seconds_per_evaluation: float = 1e-4  # one objective evaluation (table: ~0.1 ms; measured: about 1 s)


@dataclass(frozen=True)
class ScheduleCost:
    """The work a schedule does and a rough wall time on the reference machine."""

    work: str  # e.g. "50 epochs x 98 steps of batch 256" or "5000 evaluations"
    seconds: float  # estimate on REFERENCE_MACHINE; a GPU is faster, a bigger space slower

    def describe(self) -> str:
        """``"<work>, about <time> on one CPU core"``."""
        return f"{self.work}, about {format_duration(self.seconds)} on {REFERENCE_MACHINE}"


@dataclass(frozen=True)
class SearcherSpec:
    """A searcher's declaration of its needs and abilities (the class attribute ``spec`` of a searcher).

    The run passes ``run_settings`` from its own config (e.g. ``seed``, ``pop_size``), then the chosen
    schedule's settings, then the user's explicit settings, each overriding the one before.
    """

    needs_data: bool = False  # takes the run's training split as ``data=``
    latency: LatencyInput = "objective"  # objective: a latency callable over genomes among the objectives;
    # table: the device's latency table itself (``latency_table=``) and the run's target (``latency_target_ms=``);
    # additive: objectives carrying per-slot tables (``Objective.additive``), so only a latency table will do
    resumable: bool = False  # continues from ``checkpoint_dir`` after a kill, with the same result
    emits: Literal["front", "single"] = "front"  # a Pareto front or one architecture
    run_settings: tuple[str, ...] = ("seed",)  # settings the run fills from its own config when present
    schedules: Mapping[str, Schedule] = field(default_factory=lambda: MappingProxyType(
        {"paper": Schedule({}, "the searcher's defaults")}))
    default_schedule: str = "paper"  # the preset used when none is named

    def __post_init__(self) -> None:
        if self.default_schedule not in self.schedules:
            raise ValueError(f"default_schedule {self.default_schedule!r} is not one of the schedules "
                             f"{sorted(self.schedules)}")

    def schedule(self, name: str | None, searcher: str = "") -> Schedule:
        """The preset ``name`` (the default one when None).

        Raises:
            ValueError: unknown preset (one line listing this searcher's presets).
        """
        name = name or self.default_schedule
        if name not in self.schedules:
            raise ValueError(f"unknown schedule {name!r} for searcher {searcher!r}; its schedules: "
                             f"{', '.join(sorted(self.schedules))}")
        return self.schedules[name]


def format_duration(seconds: float) -> str:
    """``42 s``, ``7 min``, ``3.5 h``: a rough duration for a person."""
    if not math.isfinite(seconds):
        return "unknown time"
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
