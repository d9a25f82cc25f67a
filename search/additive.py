"""Additive objectives: a constant plus one table value per slot (a group of genes), then an optional
non-decreasing map. What the exact searcher needs to compute a whole space's Pareto front."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class SlotTable:
    """The contribution of one slot: every option's gene values (its code) and its value.

    The options must cover every combination of the slot's gene values within the genome bounds.
    """

    genes: tuple[int, ...]  # genome positions of this slot's genes
    codes: np.ndarray  # (n_options, len(genes)) integer gene values of each option
    values: np.ndarray  # (n_options,) what each option adds to the objective

    def __post_init__(self) -> None:
        genes = tuple(int(g) for g in self.genes)
        codes = np.asarray(self.codes, dtype=np.int64).reshape(len(np.asarray(self.values)), len(genes))
        values = np.asarray(self.values, dtype=float)
        if values.ndim != 1 or len(values) == 0:
            raise ValueError(f"a slot table needs a 1-D array of option values, got shape {values.shape}")
        if not np.all(np.isfinite(values)):
            raise ValueError(f"slot table of genes {genes} holds a non-finite value; every option needs a number")
        if np.any(codes < 0):
            raise ValueError(f"slot table of genes {genes} has a negative gene value; codes are genome values >= 0")
        if len(np.unique(codes, axis=0)) != len(codes):
            raise ValueError(f"slot table of genes {genes} lists the same option code twice")
        object.__setattr__(self, "genes", genes)
        object.__setattr__(self, "codes", codes)
        object.__setattr__(self, "values", values)

    def lookup(self, genomes: np.ndarray) -> np.ndarray:
        """The value of each genome's option in this slot (ValueError for a code not in the table)."""
        if not self.genes:
            return np.full(len(genomes), self.values[0])
        sub = np.asarray(genomes, dtype=np.int64)[:, list(self.genes)]
        dims = self.codes.max(axis=0) + 1
        inside = np.all((sub >= 0) & (sub < dims), axis=1)
        lut = np.full(int(np.prod(dims)), -1, dtype=np.int64)
        lut[np.ravel_multi_index(self.codes.T, dims)] = np.arange(len(self.codes))
        rows = np.full(len(sub), -1, dtype=np.int64)
        rows[inside] = lut[np.ravel_multi_index(sub[inside].T, dims)]
        if np.any(rows < 0):
            bad = sub[int(np.flatnonzero(rows < 0)[0])].tolist()
            raise ValueError(f"genes {self.genes} take values {bad}, which no option of the slot table has")
        return self.values[rows]


@dataclass(frozen=True, eq=False)
class Additive:
    """``value(genome) = transform(constant + sum over slots of slot.values[option of genome in slot])``.

    ``transform`` (default: none) must be non-decreasing, e.g. clipping to [0, 1]; the front of the
    sums then maps onto the front of the transformed values.
    """

    slots: tuple[SlotTable, ...]
    constant: float = 0.0
    transform: Callable[[np.ndarray], np.ndarray] | None = None  # non-decreasing map applied to the sum

    def __post_init__(self) -> None:
        slots = tuple(self.slots)
        if not all(isinstance(s, SlotTable) for s in slots):
            raise ValueError("Additive.slots must be SlotTable instances")
        genes = [g for s in slots for g in s.genes]
        if len(set(genes)) != len(genes):
            raise ValueError(f"slot tables share genes {sorted({g for g in genes if genes.count(g) > 1})}; "
                             "each gene belongs to at most one slot")
        object.__setattr__(self, "slots", slots)
        object.__setattr__(self, "constant", float(self.constant))

    def raw(self, genomes: np.ndarray) -> np.ndarray:
        """The sum before ``transform``, one value per genome row."""
        genomes = np.atleast_2d(np.asarray(genomes, dtype=np.int64))
        total = np.full(len(genomes), self.constant)
        for slot in self.slots:
            total = total + slot.lookup(genomes)
        return total

    def apply(self, raw: np.ndarray) -> np.ndarray:
        """``transform(raw)``, or ``raw`` without a transform."""
        return np.asarray(raw, dtype=float) if self.transform is None else np.asarray(self.transform(raw), float)

    def __call__(self, genomes: np.ndarray) -> np.ndarray:
        """The objective's value for each genome row."""
        return self.apply(self.raw(genomes))


def slot_tables_from_lookup(genes: Sequence[Sequence[int]], codes: Sequence[np.ndarray],
                            values: Sequence[Sequence[float]]) -> tuple[SlotTable, ...]:
    """One ``SlotTable`` per slot from parallel lists (genes, option codes, option values)."""
    if not len(genes) == len(codes) == len(values):
        raise ValueError(f"got {len(genes)} gene groups, {len(codes)} code arrays and {len(values)} value "
                         "arrays; they must be one per slot")
    return tuple(SlotTable(tuple(g), np.asarray(c), np.asarray(v, dtype=float))
                 for g, c, v in zip(genes, codes, values))
