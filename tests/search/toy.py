"""A tiny enumerable genome space and deterministic objectives for search tests (no torch needed)."""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import atomic_write_text
from search import Objective


@dataclass(frozen=True)
class ToyArch:
    """Stands in for ``blocks.Arch``: a genome with the Arch methods search uses."""

    genes: tuple[int, ...]
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def key(self) -> str:
        return hashlib.sha256(str(self.genes).encode()).hexdigest()[:16]

    def to_string(self) -> str:
        return "toy_" + "".join(str(g) for g in self.genes)

    def to_json(self, path: str | Path | None = None) -> str:
        text = json.dumps({"genes": list(self.genes), "provenance": self.provenance})
        if path is not None:
            atomic_write_text(path, text)
        return text

    def with_provenance(self, provenance: dict[str, Any]) -> ToyArch:
        return replace(self, provenance=dict(provenance))


class ToySpace:
    """``n_genes`` genes, gene ``i`` in ``0..sizes[i]-1``; a knob with one choice has xl == xu == 0."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        self.sizes = tuple(sizes)

    def genome_bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return np.zeros(len(self.sizes), dtype=int), np.array(self.sizes) - 1

    def decode(self, genome: np.ndarray) -> ToyArch:
        return ToyArch(tuple(int(g) for g in genome))

    def encode(self, arch: ToyArch) -> np.ndarray:
        return np.array(arch.genes)

    def enumerate(self) -> np.ndarray:
        return np.array(list(itertools.product(*[range(s) for s in self.sizes])), dtype=np.int64)


def toy_objectives(space: ToySpace, seed: int = 0) -> list[Objective]:
    """A conflicting pair: accuracy and latency both grow with 'bigger' genes, with per-gene noise."""
    rng = np.random.default_rng(seed)
    acc_w = [np.sort(rng.uniform(0.0, 1.0, s)) for s in space.sizes]
    lat_w = [np.sort(rng.uniform(0.5, 2.0, s)) * (1 + i % 3) for i, s in enumerate(space.sizes)]

    def accuracy(G: np.ndarray) -> np.ndarray:
        return 50.0 + sum(np.sqrt(w[G[:, i]]) * 3.0 for i, w in enumerate(acc_w))

    def latency(G: np.ndarray) -> np.ndarray:
        return 1.0 + sum(w[G[:, i]] for i, w in enumerate(lat_w))

    return [Objective("accuracy", accuracy, maximize=True), Objective("latency_ms", latency)]


def slot_objectives(space: ToySpace, slots: list[tuple[int, ...]], seed: int = 0, integer: bool = False,
                    n_obj: int = 2) -> list[Objective]:
    """Objectives that are a constant plus one random value per option of each slot (a group of genes).

    ``fn`` indexes plain per-slot arrays by the mixed-radix option index, independently of the
    ``search.Additive`` tables it also carries, so the exact searcher's check compares two paths.
    Accuracy (maximised) and latency grow together, so the objectives conflict; with ``integer`` the
    values are small integers and many members tie.
    """
    from search import Additive, SlotTable

    rng = np.random.default_rng(seed)
    names = ["accuracy", "latency_ms", "params"][:n_obj]
    tables = {name: [] for name in names}
    codes = []
    for genes in slots:
        dims = [space.sizes[g] for g in genes]
        grid = list(itertools.product(*[range(d) for d in dims]))
        codes.append(np.array(grid, dtype=np.int64).reshape(len(grid), len(genes)))
        size = rng.uniform(0, 1, len(codes[-1]))
        for j, name in enumerate(names):
            value = size + rng.uniform(0, 0.6, len(size)) * (j + 1)
            tables[name].append(np.round(value * 4) if integer else value)

    def make(name: str):
        def fn(G: np.ndarray) -> np.ndarray:
            total = np.full(len(G), 1.0)
            for genes, values in zip(slots, tables[name]):
                dims = [space.sizes[g] for g in genes]
                total = total + values[np.ravel_multi_index(G[:, list(genes)].T, dims) if genes else 0]
            return total
        return fn

    return [Objective(name, make(name), maximize=(name == "accuracy"),
                      additive=Additive(tuple(SlotTable(g, c, v) for g, c, v in zip(slots, codes, tables[name])),
                                        constant=1.0))
            for name in names]
