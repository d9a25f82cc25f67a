"""Objectives as vectorised callables over integer genomes, and the pymoo ``Problem`` that wraps them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from pymoo.core.problem import Problem

from search.additive import Additive
from search.pareto import HypervolumeReference, to_min_form

HV_SAMPLE_SIZE = 512  # genomes sampled to estimate the hypervolume box when objectives give no bounds
HV_SAMPLE_SEED = 0  # fixed, so every searcher and seed on the same space gets the same reference


class GenomeSpace(Protocol):
    """What a genome searcher needs from a search space (``blocks.SearchSpace`` provides it)."""

    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]: ...

    def decode(self, genome: np.ndarray) -> Any: ...


@dataclass(frozen=True)
class Objective:
    """One search objective.

    ``fn`` takes a whole batch of genomes, shape (n, n_genes), integer, and returns n values.
    Keep it vectorised: search calls it once per generation with the whole population.
    ``additive``, when given, states that ``fn`` is a constant plus one value per slot (see
    ``search.additive``); the exact searcher needs it, the others ignore it.
    """

    name: str  # column name in results ("accuracy", "latency_ms")
    fn: Callable[[np.ndarray], np.ndarray]  # genomes (n, n_genes) -> values (n,)
    maximize: bool = False  # True for accuracy, False for latency, params, ...
    bounds: tuple[float, float] | None = None  # (low, high) in natural units; sets the hypervolume box
    additive: Additive | None = None  # the same values as per-slot tables, when the objective is additive

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError(f"an objective needs a non-empty name, got {self.name!r}")
        if not callable(self.fn):
            raise ValueError(f"objective {self.name!r}: fn must be callable, got {type(self.fn).__name__}")
        if self.bounds is not None and (len(self.bounds) != 2 or self.bounds[0] > self.bounds[1]):
            raise ValueError(f"objective {self.name!r}: bounds must be (low, high) with low <= high, "
                             f"got {self.bounds!r}")
        if self.additive is not None and not isinstance(self.additive, Additive):
            raise ValueError(f"objective {self.name!r}: additive must be a search.Additive, "
                             f"got {type(self.additive).__name__}")

    def __call__(self, genomes: np.ndarray) -> np.ndarray:
        """Evaluates the batch and checks the result's shape and finiteness."""
        values = np.asarray(self.fn(genomes), dtype=float)
        if values.shape != (len(genomes),):
            raise ValueError(f"objective {self.name!r} returned shape {values.shape} for {len(genomes)} "
                             f"genomes; expected ({len(genomes)},)")
        if not np.all(np.isfinite(values)):
            bad = int(np.flatnonzero(~np.isfinite(values))[0])
            raise ValueError(f"objective {self.name!r} returned a non-finite value ({values[bad]}) for "
                             f"genome {genomes[bad].tolist()}")
        return values


def check_objectives(objectives: Sequence[Objective]) -> tuple[Objective, ...]:
    """Validates a list of objectives: at least one, all ``Objective``, unique names."""
    objectives = tuple(objectives)
    if not objectives:
        raise ValueError("a genome search needs at least one Objective (e.g. accuracy and latency)")
    for obj in objectives:
        if not isinstance(obj, Objective):
            raise ValueError(f"objectives must be search.Objective instances, got {type(obj).__name__}")
    names = [obj.name for obj in objectives]
    if len(set(names)) != len(names):
        raise ValueError(f"objective names must be unique, got {names}")
    return objectives


def integer_bounds(space: GenomeSpace) -> tuple[np.ndarray, np.ndarray]:
    """The space's inclusive integer genome bounds, checked."""
    xl, xu = (np.asarray(b) for b in space.genome_bounds())
    if xl.shape != xu.shape or xl.ndim != 1 or xl.size == 0:
        raise ValueError(f"genome_bounds() must return two 1-D arrays of equal length, got {xl.shape}, {xu.shape}")
    if np.any(xu < xl):
        raise ValueError(f"genome_bounds(): upper bound below lower bound at genes {np.flatnonzero(xu < xl)}")
    return xl.astype(np.int64), xu.astype(np.int64)


class GenomeProblem(Problem):
    """pymoo ``Problem``: maps a batch of integer genomes to minimisation-form objective values."""

    def __init__(self, space: GenomeSpace, objectives: Sequence[Objective]) -> None:
        self.objectives = check_objectives(objectives)
        self.maximize = tuple(obj.maximize for obj in self.objectives)
        xl, xu = integer_bounds(space)
        super().__init__(n_var=xl.size, n_obj=len(self.objectives), xl=xl, xu=xu, vtype=int)

    def evaluate_genomes(self, genomes: np.ndarray) -> np.ndarray:
        """Objective values in minimisation form, shape (n, n_obj)."""
        G = np.asarray(genomes)
        if G.ndim != 2 or G.shape[1] != self.n_var:
            raise ValueError(f"genomes have shape {G.shape}; this space needs (n, {self.n_var})")
        G = np.rint(G).astype(np.int64)
        if len(G) == 0:
            return np.zeros((0, self.n_obj))
        natural = np.column_stack([obj(G) for obj in self.objectives])
        return to_min_form(natural, self.maximize)

    def _evaluate(self, x: np.ndarray, out: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        out["F"] = self.evaluate_genomes(x)

    def sample_genomes(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` genomes drawn uniformly (with replacement) within the bounds."""
        return rng.integers(self.xl, self.xu + 1, size=(n, self.n_var), dtype=np.int64)


def resolve_reference(problem: GenomeProblem, reference: HypervolumeReference | None = None) -> HypervolumeReference:
    """The hypervolume reference a search records its history with.

    Order of preference: an explicit ``reference``; else every objective's ``bounds``; else the
    ideal and nadir of ``HV_SAMPLE_SIZE`` genomes drawn with the fixed seed ``HV_SAMPLE_SEED``
    (not counted as search evaluations). The same space and objectives thus give every searcher
    and every seed the same reference, so their hypervolumes compare. Pass bounds or a reference
    when objectives are expensive (latency measured on a device).
    """
    if reference is not None:
        if len(reference.ideal) != problem.n_obj:
            raise ValueError(f"hypervolume reference has {len(reference.ideal)} objectives, search has "
                             f"{problem.n_obj}")
        return reference
    objectives = problem.objectives
    if all(obj.bounds is not None for obj in objectives):
        corners = np.array([[obj.bounds[0] for obj in objectives], [obj.bounds[1] for obj in objectives]])
        return HypervolumeReference.from_points(to_min_form(corners, problem.maximize))
    sample = problem.sample_genomes(HV_SAMPLE_SIZE, np.random.default_rng(HV_SAMPLE_SEED))
    return HypervolumeReference.from_points(problem.evaluate_genomes(sample))


def hv_reference_for(space: GenomeSpace, objectives: Sequence[Objective]) -> HypervolumeReference:
    """The default hypervolume reference of a space and objectives (see ``resolve_reference``).

    Compute it with cheap objectives (the latency table) and pass it as ``hv_reference`` to a
    search whose objectives are expensive (latency measured on the device).
    """
    return resolve_reference(GenomeProblem(space, objectives))
