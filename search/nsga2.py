"""NSGA-II over the integer genome: pymoo runs the algorithm, our ``GenomeProblem`` is the problem."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from pymoo.algorithms.moo.nsga2 import NSGA2
from pymoo.core.mutation import Mutation
from pymoo.core.population import Population
from pymoo.operators.crossover.sbx import SBX
from pymoo.operators.crossover.ux import UniformCrossover
from pymoo.operators.mutation.pm import PM
from pymoo.operators.repair.rounding import RoundingRepair
from pymoo.operators.sampling.rnd import IntegerRandomSampling
from pymoo.termination.max_gen import MaximumGenerationTermination

from search.base import POPULATION_SCHEDULES, GenomeSearcher, check_population_settings, make_config
from search.objectives import GenomeProblem
from search.registry import register_searcher
from search.spec import SearcherSpec

OPERATORS = ("ux-reset", "sbx-pm")


@dataclass(frozen=True)
class NSGA2Config:
    """Settings of the NSGA-II searcher (defaults after Once-for-All's evolutionary finder)."""

    pop_size: int = 100  # individuals per generation; budget = pop_size * generations evaluations
    generations: int = 50  # generations, the initial random population included
    mutation_prob: float = 0.1  # probability that a gene mutates (per gene, as in OFA's finder)
    crossover_prob: float = 0.9  # probability that a pair of parents is recombined
    operators: str = "sbx-pm"  # "sbx-pm": SBX + PM with rounding (pymoo); "ux-reset": uniform + gene reset (OFA)
    eta: float = 15.0  # distribution index of SBX and PM (only for operators="sbx-pm")
    seed: int = 0  # seeds pymoo's random generator; same seed, same front

    def __post_init__(self) -> None:
        check_population_settings("nsga2", self.pop_size, self.generations)
        for name in ("mutation_prob", "crossover_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"nsga2: {name} must lie in [0, 1], got {getattr(self, name)}")
        if self.operators not in OPERATORS:
            raise ValueError(f"nsga2: operators {self.operators!r} unknown; choose one of {OPERATORS}")


class GeneResetMutation(Mutation):
    """Each gene, with probability ``prob_var``, is redrawn uniformly from its range (OFA's mutation)."""

    def _do(self, problem, X, *args, random_state=None, **kwargs):
        X = np.asarray(X).astype(np.int64)
        mutate = random_state.random(X.shape) < self.get_prob_var(problem, size=(len(X), 1))
        fresh = random_state.integers(problem.xl, problem.xu + 1, size=X.shape)
        return np.where(mutate, fresh, X)


def _operators(config: NSGA2Config) -> dict[str, Any]:
    if config.operators == "sbx-pm":
        return {"crossover": SBX(prob=config.crossover_prob, eta=config.eta, vtype=float, repair=RoundingRepair()),
                "mutation": PM(prob=1.0, prob_var=config.mutation_prob, eta=config.eta, vtype=float,
                               repair=RoundingRepair())}
    return {"crossover": UniformCrossover(prob=config.crossover_prob),
            "mutation": GeneResetMutation(prob=1.0, prob_var=config.mutation_prob)}


@register_searcher("nsga2")
class NSGA2Searcher(GenomeSearcher):
    """NSGA-II (pymoo) over integer genomes, with duplicate elimination.

    Args:
        **settings: fields of ``NSGA2Config``.
    """

    name = "nsga2"
    spec = SearcherSpec(resumable=True, run_settings=("seed", "pop_size", "generations", "mutation_prob"),
                        schedules=POPULATION_SCHEDULES)

    def __init__(self, **settings: Any) -> None:
        self.config: NSGA2Config = make_config(NSGA2Config, self.name, settings)
        self._algorithm: NSGA2 | None = None

    def _new_algorithm(self, problem: GenomeProblem) -> NSGA2:
        cfg = self.config
        algorithm = NSGA2(pop_size=cfg.pop_size, sampling=IntegerRandomSampling(), eliminate_duplicates=True,
                          **_operators(cfg))
        algorithm.setup(problem, termination=MaximumGenerationTermination(cfg.generations), seed=cfg.seed)
        return algorithm

    def _start(self, problem: GenomeProblem) -> None:
        self._algorithm = self._new_algorithm(problem)

    def _step(self, problem: GenomeProblem) -> tuple[np.ndarray, np.ndarray]:
        self._algorithm.next()
        off = self._algorithm.off
        if off is None or len(off) == 0:  # duplicate elimination found no new genome (tiny space)
            return np.zeros((0, problem.n_var), dtype=np.int64), np.zeros((0, problem.n_obj))
        return np.asarray(off.get("X")).astype(np.int64), np.asarray(off.get("F"), dtype=float)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        alg = self._algorithm
        pop = alg.pop
        meta = {"rng": alg.random_state.bit_generator.state, "n_iter": int(alg.n_iter),
                "n_eval": int(alg.evaluator.n_eval)}
        arrays = {"X": np.asarray(pop.get("X")).astype(np.int64), "F": np.asarray(pop.get("F"), dtype=float),
                  "rank": np.asarray(pop.get("rank"), dtype=np.int64),
                  "crowding": np.asarray(pop.get("crowding"), dtype=float)}
        return meta, arrays

    def _restore(self, problem: GenomeProblem, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        alg = self._new_algorithm(problem)
        alg.random_state.bit_generator.state = meta["rng"]
        pop = Population.new("X", arrays["X"].astype(np.int64))
        pop.set("F", arrays["F"], "rank", arrays["rank"], "crowding", arrays["crowding"])
        pop.apply(lambda ind: ind.evaluated.update({"F", "G", "H"}))
        alg.pop, alg.opt = pop, pop
        alg.n_iter = int(meta["n_iter"])
        alg.evaluator.n_eval = int(meta["n_eval"])
        alg.start_time = time.time()
        alg.is_initialized = True
        self._algorithm = alg
