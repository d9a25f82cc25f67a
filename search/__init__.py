"""Architecture search: searcher registry (NSGA-II via pymoo, random, exact), Pareto fronts, hypervolume, outputs."""

from search import exact as _exact  # noqa: F401  (registers "exact")
from search import nsga2 as _nsga2  # noqa: F401  (registers "nsga2")
from search import random_search as _random_search  # noqa: F401  (registers "random")
from search.additive import Additive, SlotTable
from search.base import GenomeSearcher, Searcher, SearchResult
from search.exact import ExactConfig, ExactSearcher, pareto_dp
from search.nsga2 import NSGA2Config, NSGA2Searcher
from search.objectives import GenomeProblem, Objective, hv_reference_for, resolve_reference
from search.outputs import SearchOutputs, finalize_search, front_rows, write_search_outputs
from search.pareto import (
    HypervolumeReference,
    NoArchMeetsTarget,
    choose_under_target,
    hypervolume,
    pareto_front,
)
from search.plot import plot_pareto
from search.random_search import RandomSearchConfig, RandomSearcher
from search.registry import (
    check_searcher,
    create_searcher,
    list_searchers,
    needs_additive,
    register_searcher,
    searcher_spec,
)
from search.spec import RunSize, Schedule, ScheduleCost, SearcherSpec

__all__ = [
    "Additive",
    "ExactConfig",
    "ExactSearcher",
    "GenomeProblem",
    "GenomeSearcher",
    "HypervolumeReference",
    "NSGA2Config",
    "NSGA2Searcher",
    "NoArchMeetsTarget",
    "Objective",
    "RandomSearchConfig",
    "RunSize",
    "Schedule",
    "ScheduleCost",
    "RandomSearcher",
    "SearchOutputs",
    "SearchResult",
    "Searcher",
    "SearcherSpec",
    "SlotTable",
    "check_searcher",
    "choose_under_target",
    "create_searcher",
    "finalize_search",
    "front_rows",
    "hv_reference_for",
    "hypervolume",
    "list_searchers",
    "needs_additive",
    "pareto_dp",
    "pareto_front",
    "plot_pareto",
    "register_searcher",
    "resolve_reference",
    "searcher_spec",
    "write_search_outputs",
]
