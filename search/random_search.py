"""Random search with the same budget as NSGA-II (pop_size * generations), the baseline to beat."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from search.base import GenomeSearcher, check_population_settings, make_config
from search.objectives import GenomeProblem
from search.registry import register_searcher

MAX_DRAW_ROUNDS = 20  # rounds of drawing before accepting fewer new genomes (space nearly exhausted)


@dataclass(frozen=True)
class RandomSearchConfig:
    """Settings of random search; ``pop_size * generations`` genomes are drawn in all."""

    pop_size: int = 100  # genomes drawn per generation (one history entry each)
    generations: int = 50  # generations; budget = pop_size * generations evaluations
    seed: int = 0  # seeds numpy's generator; same seed, same front

    def __post_init__(self) -> None:
        check_population_settings("random", self.pop_size, self.generations)


def _unseen_rows(candidates: np.ndarray, seen: set[bytes]) -> list[np.ndarray]:
    fresh = []
    for row in candidates:
        token = row.tobytes()
        if token not in seen:
            seen.add(token)
            fresh.append(row)
    return fresh


@register_searcher("random")
class RandomSearcher(GenomeSearcher):
    """Uniform random genomes, never the same genome twice, archive of the non-dominated ones.

    Args:
        **settings: fields of ``RandomSearchConfig``.
    """

    name = "random"

    def __init__(self, **settings: Any) -> None:
        self.config: RandomSearchConfig = make_config(RandomSearchConfig, self.name, settings)
        self._rng: np.random.Generator | None = None
        self._seen: set[bytes] = set()
        self._seen_rows: list[np.ndarray] = []

    def _start(self, problem: GenomeProblem) -> None:
        self._rng = np.random.default_rng(self.config.seed)
        self._seen, self._seen_rows = set(), []

    def _draw(self, problem: GenomeProblem) -> np.ndarray:
        n = self.config.pop_size
        fresh: list[np.ndarray] = []
        for _ in range(MAX_DRAW_ROUNDS):
            fresh += _unseen_rows(problem.sample_genomes(n, self._rng), self._seen)
            if len(fresh) >= n:
                break
        for row in fresh[n:]:  # drawn but not used this generation: may be drawn again later
            self._seen.discard(row.tobytes())
        fresh = fresh[:n]
        self._seen_rows += fresh
        return np.array(fresh, dtype=np.int64).reshape(len(fresh), problem.n_var)

    def _step(self, problem: GenomeProblem) -> tuple[np.ndarray, np.ndarray]:
        X = self._draw(problem)
        return X, problem.evaluate_genomes(X)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        seen = np.array(self._seen_rows, dtype=np.int64)
        return {"rng": self._rng.bit_generator.state}, {"seen": seen}

    def _restore(self, problem: GenomeProblem, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self._rng = np.random.default_rng(self.config.seed)
        self._rng.bit_generator.state = meta["rng"]
        rows = arrays["seen"].astype(np.int64).reshape(-1, problem.n_var)
        self._seen_rows = list(rows)
        self._seen = {row.tobytes() for row in rows}
