"""The searcher interface: ``Searcher`` (any method) and ``GenomeSearcher`` (generations over genomes).

``Searcher.search`` does the bookkeeping (validation, provenance) and calls one hook, ``_search``.
``GenomeSearcher`` implements that hook once for every population method: the generation loop,
the archive of non-dominated genomes, the hypervolume history, progress and checkpoints; a
subclass only supplies ``_start``, ``_step``, ``_state`` and ``_restore``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from search import checkpoint as ckpt
from search.objectives import GenomeProblem, GenomeSpace, Objective, resolve_reference
from search.pareto import HypervolumeReference, hypervolume_min, non_dominated
from search.spec import RunSize, Schedule, ScheduleCost, SearcherSpec

POPULATION_SCHEDULES = {
    "paper": Schedule({}, "pop_size x generations as set (default 100 x 50, Once-for-All's finder)"),
    "quick": Schedule({}, "as paper: on a latency table the whole search takes seconds"),
}


@dataclass
class SearchResult:
    """What a search returns: the architectures of its Pareto front and their objective values.

    A gradient-based searcher may return a single architecture and no objectives.
    """

    archs: list[Any]  # front members (blocks.Arch), provenance set
    objectives: np.ndarray  # (n, m) objective values in natural units (accuracy not negated)
    objective_names: tuple[str, ...]  # one per column of ``objectives``
    maximize: tuple[bool, ...]  # per objective: maximised?
    history: list[dict[str, float]] = field(default_factory=list)  # per generation: evaluations, hv, front
    n_evaluations: int = 0  # objective evaluations spent (one per genome evaluated)
    searcher: str = ""  # registry name of the searcher
    settings: dict[str, Any] = field(default_factory=dict)  # resolved searcher settings (seed included)
    genomes: np.ndarray | None = None  # (n, n_genes) integer genomes of ``archs``, when the searcher has them
    hv_reference: HypervolumeReference | None = None  # normalisation used for the history's hypervolume

    @classmethod
    def from_archs(cls, archs: Sequence[Any], searcher: str = "", settings: dict[str, Any] | None = None,
                   **fields: Any) -> SearchResult:
        """A result of architectures without objective values (what a gradient-based searcher returns)."""
        return cls(archs=list(archs), objectives=np.zeros((len(archs), 0)), objective_names=(), maximize=(),
                   searcher=searcher, settings=dict(settings or {}), **fields)

    @property
    def hypervolume(self) -> float | None:
        """Hypervolume of the returned front under ``hv_reference`` (None without a reference)."""
        if self.hv_reference is None or len(self.archs) == 0:
            return None
        signs = np.where(np.asarray(self.maximize), -1.0, 1.0)
        return hypervolume_min(self.objectives * signs, self.hv_reference)

    def to_frame(self) -> pd.DataFrame:
        """One row per front member: ``arch`` (string form), ``key``, one column per objective, ``genome``."""
        frame = pd.DataFrame({
            "arch": [arch.to_string() for arch in self.archs],
            "key": [arch.key for arch in self.archs],
        })
        for j, name in enumerate(self.objective_names):
            frame[name] = self.objectives[:, j] if len(self.archs) else []
        if self.genomes is not None:
            frame["genome"] = [" ".join(str(int(g)) for g in row) for row in self.genomes]
        return frame

    def history_frame(self) -> pd.DataFrame:
        """The per-generation history as a table."""
        return pd.DataFrame(self.history, columns=["generation", "evaluations", "hypervolume", "front_size"])

    def with_provenance(self, provenance: dict[str, Any]) -> SearchResult:
        """A copy whose architectures carry ``provenance`` (merged over what they already carry)."""
        archs = [arch.with_provenance({**getattr(arch, "provenance", {}), **provenance}) for arch in self.archs]
        return dataclasses.replace(self, archs=archs)


class Searcher(ABC):
    """Base class of every searcher; subclasses implement ``_search`` and declare ``spec``."""

    name: ClassVar[str] = ""
    spec: ClassVar[SearcherSpec] = SearcherSpec()  # what the searcher needs and can do (see search.spec)

    @property
    def seed(self) -> int | None:
        """The seed the searcher was created with (None when it has none)."""
        return self.settings().get("seed")

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """The resolved settings, JSON-ready, enough to repeat the search."""

    def provenance(self) -> dict[str, Any]:
        """What every returned architecture records about its origin."""
        return {"searcher": self.name, "settings": self.settings(), "seed": self.seed}

    def cost(self, space: GenomeSpace, size: RunSize) -> ScheduleCost:
        """The work this search does with its settings, and a rough time (unknown unless a subclass says)."""
        return ScheduleCost("work not stated by the searcher", float("nan"))

    def search(
        self,
        space: GenomeSpace,
        objectives: Sequence[Objective] = (),
        checkpoint_dir: str | Path | None = None,
        progress: bool = True,
        hv_reference: HypervolumeReference | None = None,
    ) -> SearchResult:
        """Searches ``space`` and returns the front, each architecture stamped with provenance.

        Args:
            space: the search space (``blocks.SearchSpace`` or anything with ``genome_bounds``/``decode``).
            objectives: vectorised objectives over genomes (accuracy up, latency down, ...).
            checkpoint_dir: when given, state is saved there every generation and a search that
                finds a checkpoint there continues from it.
            progress: show a progress bar per generation.
            hv_reference: hypervolume normalisation; default see ``search.objectives.resolve_reference``.

        Returns:
            A ``SearchResult``.
        """
        result = self._search(space, tuple(objectives), checkpoint_dir, progress, hv_reference)
        return result.with_provenance(self.provenance())

    @abstractmethod
    def _search(
        self,
        space: GenomeSpace,
        objectives: tuple[Objective, ...],
        checkpoint_dir: str | Path | None,
        progress: bool,
        hv_reference: HypervolumeReference | None,
    ) -> SearchResult:
        """The method itself; returns a result without provenance."""


def make_config(config_cls: type, searcher: str, settings: dict[str, Any]) -> Any:
    """Builds a config dataclass, turning an unknown setting into a ValueError listing the allowed ones."""
    allowed = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(settings) - set(allowed))
    if unknown:
        raise ValueError(f"unknown setting(s) {unknown} for searcher {searcher!r}; allowed: {allowed}")
    return config_cls(**settings)


def check_population_settings(searcher: str, pop_size: int, generations: int) -> None:
    """Rejects population sizes and generation counts that cannot run."""
    if int(pop_size) < 2:
        raise ValueError(f"{searcher}: pop_size must be >= 2, got {pop_size}")
    if int(generations) < 1:
        raise ValueError(f"{searcher}: generations must be >= 1, got {generations}")


@dataclass
class _Run:
    """Progress of one genome search: the archive front (minimisation form) and the history."""

    reference: HypervolumeReference
    front_X: np.ndarray
    front_F: np.ndarray
    generation: int = 0
    n_evaluations: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def record(self, X: np.ndarray, F: np.ndarray) -> dict[str, float]:
        """Adds one generation's evaluated genomes and appends a history entry."""
        self.front_X, self.front_F = merge_front(self.front_X, self.front_F, X, F)
        self.generation += 1
        self.n_evaluations += len(X)
        entry = {"generation": self.generation, "evaluations": self.n_evaluations,
                 "hypervolume": hypervolume_min(self.front_F, self.reference), "front_size": len(self.front_X)}
        self.history.append(entry)
        return entry


def merge_front(X_old: np.ndarray, F_old: np.ndarray, X_new: np.ndarray, F_new: np.ndarray) -> tuple[
        np.ndarray, np.ndarray]:
    """Non-dominated set of the union, one entry per distinct genome, sorted by objectives then genome."""
    X = np.vstack([X_old, np.asarray(X_new, dtype=np.int64)])
    F = np.vstack([F_old, np.asarray(F_new, dtype=float)])
    _, first = np.unique(X, axis=0, return_index=True)
    X, F = X[first], F[first]  # sorted by genome, first occurrence kept
    keep = non_dominated(F)
    X, F = X[keep], F[keep]
    order = np.lexsort(F.T[::-1])  # primary key: first objective (stable, so ties stay genome-sorted)
    return X[order], F[order]


class GenomeSearcher(Searcher):
    """A population method over integer genomes, run generation by generation.

    Subclasses set ``self.config`` (with ``pop_size``, ``generations``, ``seed``) and implement the
    four hooks. ``_step`` must be deterministic given the restored state, so that a resumed search
    ends exactly where an uninterrupted one does.
    """

    config: Any
    spec: ClassVar[SearcherSpec] = SearcherSpec(
        resumable=True, run_settings=("seed", "pop_size", "generations"), schedules=POPULATION_SCHEDULES)

    def settings(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config)

    def cost(self, space: GenomeSpace, size: RunSize) -> ScheduleCost:
        """``pop_size * generations`` evaluations at ``size.seconds_per_evaluation`` each."""
        evaluations = int(self.config.pop_size) * int(self.config.generations)
        return ScheduleCost(f"{self.config.generations} generations x {self.config.pop_size} = {evaluations} "
                            "evaluations", evaluations * size.seconds_per_evaluation)

    @abstractmethod
    def _start(self, problem: GenomeProblem) -> None:
        """Prepares a fresh search."""

    @abstractmethod
    def _step(self, problem: GenomeProblem) -> tuple[np.ndarray, np.ndarray]:
        """Runs one generation; returns the genomes evaluated in it and their minimisation-form values."""

    @abstractmethod
    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The searcher's own state after a generation: JSON-ready metadata and numeric arrays."""

    @abstractmethod
    def _restore(self, problem: GenomeProblem, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """Rebuilds the state saved by ``_state``."""

    def _search(self, space, objectives, checkpoint_dir, progress, hv_reference) -> SearchResult:
        problem = GenomeProblem(space, objectives)
        run = self._open(problem, resolve_reference(problem, hv_reference), checkpoint_dir)
        total = int(self.config.generations)
        with tqdm(total=total, initial=run.generation, desc=f"{self.name} search", unit="gen",
                  disable=not progress) as bar:
            while run.generation < total:
                X, F = self._step(problem)
                entry = run.record(X, F)
                if checkpoint_dir is not None:
                    self._save(checkpoint_dir, problem, run)
                bar.set_postfix(hv=f"{entry['hypervolume']:.4f}", front=entry["front_size"],
                                evals=entry["evaluations"])
                bar.update(1)
        return self._result(space, problem, run)

    def _identity(self, problem: GenomeProblem, reference: HypervolumeReference) -> dict[str, Any]:
        return {"searcher": self.name, "settings": self.settings(),
                "objectives": [[obj.name, obj.maximize] for obj in problem.objectives],
                "xl": problem.xl.tolist(), "xu": problem.xu.tolist(), "hv_reference": reference.to_dict()}

    def _open(self, problem: GenomeProblem, reference: HypervolumeReference, checkpoint_dir) -> _Run:
        empty = _Run(reference, np.zeros((0, problem.n_var), dtype=np.int64), np.zeros((0, problem.n_obj)))
        saved = ckpt.load_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
        if saved is None:
            self._start(problem)
            return empty
        meta, arrays = saved
        ckpt.check_compatible(checkpoint_dir, meta, self._identity(problem, reference))
        own = {name[len("own_"):]: value for name, value in arrays.items() if name.startswith("own_")}
        self._restore(problem, meta["own"], own)
        return _Run(reference, arrays["front_X"].astype(np.int64), arrays["front_F"].astype(float),
                    int(meta["generation"]), int(meta["n_evaluations"]), list(meta["history"]))

    def _save(self, checkpoint_dir: str | Path, problem: GenomeProblem, run: _Run) -> None:
        own_meta, own_arrays = self._state()
        meta = {**self._identity(problem, run.reference), "generation": run.generation,
                "n_evaluations": run.n_evaluations, "history": run.history, "own": own_meta}
        arrays = {"front_X": run.front_X, "front_F": run.front_F}
        arrays.update({f"own_{name}": value for name, value in own_arrays.items()})
        ckpt.save_checkpoint(checkpoint_dir, meta, arrays)

    def _result(self, space: GenomeSpace, problem: GenomeProblem, run: _Run) -> SearchResult:
        signs = np.where(np.asarray(problem.maximize), -1.0, 1.0)
        return SearchResult(
            archs=[space.decode(genome) for genome in run.front_X],
            objectives=run.front_F * signs,
            objective_names=tuple(obj.name for obj in problem.objectives),
            maximize=problem.maximize,
            history=[dict(entry) for entry in run.history],
            n_evaluations=run.n_evaluations,
            searcher=self.name,
            settings=self.settings(),
            genomes=run.front_X.copy(),
            hv_reference=run.reference,
        )
