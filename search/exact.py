"""``exact``: the Pareto front of a whole space for additive objectives, by dynamic programming over slots.

Every objective must be a constant plus one value per slot (``Objective.additive``). Merging the slots
one at a time and keeping only the non-dominated partial sums gives the exact front: a dominated
partial sum stays dominated whatever the remaining slots add, since they add the same to both.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from search.additive import Additive
from search.base import Searcher, SearchResult, make_config
from search.objectives import GenomeProblem, GenomeSpace, resolve_reference
from search.pareto import hypervolume_min, non_dominated
from search.registry import register_searcher
from search.spec import RunSize, Schedule, ScheduleCost, SearcherSpec


@dataclass(frozen=True)
class ExactConfig:
    """Settings of the exact searcher; the front itself depends on none of them."""

    check_samples: int = 256  # random members whose objective values (fn) are checked against the tables
    seed: int = 0  # seeds those samples
    max_states: int = 20_000_000  # refuse a merge that would hold more partial sums than this (memory)
    rtol: float = 1e-9  # tolerance of the check, relative to max(|value|, 1)

    def __post_init__(self) -> None:
        if int(self.check_samples) < 1:
            raise ValueError(f"exact: check_samples must be >= 1, got {self.check_samples}")
        if int(self.max_states) < 1:
            raise ValueError(f"exact: max_states must be >= 1, got {self.max_states}")


@dataclass
class _Slots:
    """The slot partition shared by every objective, in minimisation form."""

    genes: list[tuple[int, ...]]  # gene positions per slot
    codes: list[np.ndarray]  # per slot: (n_options, n_genes) gene values
    values: list[np.ndarray]  # per slot: (n_options, n_obj) raw contributions, minimisation form
    constant: np.ndarray  # (n_obj,) raw constants, minimisation form


def _additive_of(problem: GenomeProblem) -> list[Additive]:
    forms = []
    for obj in problem.objectives:
        if obj.additive is None:
            raise ValueError(f"objective {obj.name!r} gives no per-slot tables (Objective.additive); the exact "
                             "searcher needs every objective to be a constant plus one value per slot, e.g. a "
                             "linear predictor and a latency table -- not latency measured on the device")
        forms.append(obj.additive)
    return forms


def _common_slots(problem: GenomeProblem) -> _Slots:
    """Aligns every objective's slot tables on the first one's slots and option order."""
    forms = _additive_of(problem)
    signs = np.where(np.asarray(problem.maximize), -1.0, 1.0)
    reference = forms[0].slots
    genes = [s.genes for s in reference]
    values = [np.zeros((len(s.codes), len(forms))) for s in reference]
    for j, form in enumerate(forms):
        by_genes = {s.genes: s for s in form.slots}
        if sorted(by_genes) != sorted(genes):
            raise ValueError(f"objectives {problem.objectives[0].name!r} and {problem.objectives[j].name!r} split "
                             "the genome into different slots; the exact searcher needs one slot partition")
        for k, slot in enumerate(reference):
            other = by_genes[slot.genes]
            index = {tuple(c): i for i, c in enumerate(other.codes.tolist())}
            rows = [index.get(tuple(c)) for c in slot.codes.tolist()]
            if len(other.codes) != len(slot.codes) or None in rows:
                raise ValueError(f"objective {problem.objectives[j].name!r} tables other options for genes "
                                 f"{slot.genes} than {problem.objectives[0].name!r}")
            values[k][:, j] = other.values[rows] * signs[j]
    constant = np.array([form.constant for form in forms]) * signs
    return _Slots(genes, [s.codes for s in reference], values, constant)


def _check_coverage(problem: GenomeProblem, slots: _Slots) -> None:
    """Every genome within the bounds must be a combination of tabled options."""
    for genes, codes in zip(slots.genes, slots.codes):
        low, high = problem.xl[list(genes)], problem.xu[list(genes)]
        allowed = int(np.prod(high - low + 1))
        if len(codes) != allowed or np.any(codes < low) or np.any(codes > high):
            raise ValueError(f"the slot table of genes {genes} lists {len(codes)} options, but the genome bounds "
                             f"allow {allowed} combinations; table every option so the front covers the space")


def _check_tables(problem: GenomeProblem, config: ExactConfig) -> np.ndarray:
    """Compares each objective's ``fn`` with its tables on random members; returns the genomes checked."""
    genomes = problem.sample_genomes(int(config.check_samples), np.random.default_rng(config.seed))
    for obj in problem.objectives:
        direct, tabled = obj(genomes), obj.additive(genomes)
        bad = np.abs(direct - tabled) > config.rtol * np.maximum(np.abs(tabled), 1.0)
        if np.any(bad):
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"objective {obj.name!r} is not additive over its slot tables: for genome "
                             f"{genomes[i].tolist()} it gives {direct[i]:.10g} but its tables sum to "
                             f"{tabled[i]:.10g}; the exact searcher needs additive objectives")
    return genomes


def _prune(F: np.ndarray, parent: np.ndarray, option: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows, one per distinct point, sorted by objectives then parent/option.

    Ties are broken deterministically: among equal points the one with the lowest (parent, option) stays.
    """
    order = np.lexsort((option, parent, *F.T[::-1]))
    if F.shape[1] == 2:
        second = F[order, 1]
        best_before = np.minimum.accumulate(second)
        keep = np.concatenate([[True], second[1:] < best_before[:-1]])
        return order[keep]
    sorted_F = F[order]
    front = non_dominated(sorted_F)  # ascending positions in the sorted order
    _, first = np.unique(sorted_F[front], axis=0, return_index=True)
    return order[front[np.sort(first)]]


def pareto_dp(constant: np.ndarray, values: list[np.ndarray], max_states: int = 20_000_000,
              progress: bool = False) -> tuple[np.ndarray, np.ndarray, int]:
    """Exact Pareto front of ``constant + sum_k values[k][option_k]`` over every choice of options.

    Args:
        constant: (m,) constant term, minimisation form.
        values: per slot an (n_options, m) array of contributions, minimisation form.
        max_states: refuse when one merge would form more partial sums than this.
        progress: progress bar over the slots.

    Returns:
        ``(F, options, n_partial)``: the front's points (n, m) sorted by the first objective, the option
        index of every slot for each point (n, n_slots), and how many partial sums were formed.
    """
    F = np.asarray(constant, dtype=float)[None, :]
    back: list[tuple[np.ndarray, np.ndarray]] = []
    formed = 0
    for k, table in enumerate(tqdm(values, desc="exact front", unit="slot", disable=not progress)):
        n_opt = len(table)
        if len(F) * n_opt > max_states:
            raise ValueError(f"merging slot {k} would form {len(F) * n_opt:,} partial sums (over max_states "
                             f"{max_states:,}); raise max_states if memory allows")
        parent = np.repeat(np.arange(len(F)), n_opt)
        option = np.tile(np.arange(n_opt), len(F))
        candidates = (F[:, None, :] + table[None, :, :]).reshape(-1, F.shape[1])
        formed += len(candidates)
        keep = _prune(candidates, parent, option)
        F = candidates[keep]
        back.append((parent[keep], option[keep]))
    options = np.zeros((len(F), len(values)), dtype=np.int64)
    index = np.arange(len(F))
    for k in range(len(values) - 1, -1, -1):
        options[:, k] = back[k][1][index]
        index = back[k][0][index]
    return F, options, formed


def _transformed(problem: GenomeProblem, F_raw: np.ndarray) -> np.ndarray:
    """Minimisation-form values after each objective's non-decreasing transform."""
    signs = np.where(np.asarray(problem.maximize), -1.0, 1.0)
    columns = [obj.additive.apply(F_raw[:, j] * signs[j]) * signs[j] for j, obj in enumerate(problem.objectives)]
    return np.column_stack(columns)


@register_searcher("exact")
class ExactSearcher(Searcher):
    """The exact Pareto front of the whole space, for objectives additive over slots.

    Each distinct point of the front is returned once (when several members share it, the one whose
    options come first in the tables); genes outside every slot are set to their lower bound.

    Args:
        **settings: fields of ``ExactConfig``.
    """

    name = "exact"
    spec = SearcherSpec(latency="additive", schedules={  # objectives must carry per-slot tables
        "paper": Schedule({}, "no schedule: the whole front by dynamic programming over slots"),
        "quick": Schedule({}, "as paper")})

    def __init__(self, **settings: Any) -> None:
        self.config: ExactConfig = make_config(ExactConfig, self.name, settings)

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def cost(self, space: GenomeSpace, size: RunSize) -> ScheduleCost:
        """A dynamic programme over slots: seconds, bounded by ``max_states`` partial sums."""
        return ScheduleCost(f"one pass over the slots, at most {self.config.max_states} partial sums", 10.0)

    def _search(self, space, objectives, checkpoint_dir, progress, hv_reference) -> SearchResult:
        problem = GenomeProblem(space, objectives)
        slots = _common_slots(problem)
        _check_coverage(problem, slots)
        checked = _check_tables(problem, self.config)
        F_raw, options, formed = pareto_dp(slots.constant, slots.values, self.config.max_states, progress)
        if any(obj.additive.transform is not None for obj in problem.objectives):
            F_min = _transformed(problem, F_raw)
            keep = _prune(F_min, np.arange(len(F_min)), np.zeros(len(F_min), dtype=np.int64))
            options = options[keep]
        genomes = np.tile(np.asarray(problem.xl, dtype=np.int64), (len(options), 1))
        for k, (genes, codes) in enumerate(zip(slots.genes, slots.codes)):
            genomes[:, list(genes)] = codes[options[:, k]]
        F_min = problem.evaluate_genomes(genomes)  # each member's values as its objectives compute them
        reference = resolve_reference(problem, hv_reference)
        n_evaluations = len(checked) + len(genomes)
        entry = {"generation": 1, "evaluations": n_evaluations, "hypervolume": hypervolume_min(F_min, reference),
                 "front_size": len(genomes), "partial_sums": formed}
        signs = np.where(np.asarray(problem.maximize), -1.0, 1.0)
        return SearchResult(archs=[space.decode(g) for g in genomes], objectives=F_min * signs,
                            objective_names=tuple(obj.name for obj in problem.objectives),
                            maximize=problem.maximize, history=[entry], n_evaluations=n_evaluations,
                            searcher=self.name, settings=self.settings(), genomes=genomes,
                            hv_reference=reference)
