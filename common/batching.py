"""The one batching path: seeded index batches over a data set, gathered in one slice where it can.

The order of a shuffled pass depends only on its seed, so a run killed after any pass and resumed
sees the same batches as an uninterrupted one. A data set with a ``get_batch(index)`` method (an
in-memory split) answers a whole batch in one slice; any other torch ``Dataset`` is read item by item.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Dataset


def index_batches(n: int, batch_size: int, seed: int | None = None, drop_last: bool = False) -> list[torch.Tensor]:
    """Index batches over ``n`` examples: in order when ``seed`` is None, else a seeded permutation.

    Args:
        n: number of examples.
        batch_size: examples per batch (the last batch may be smaller).
        seed: seed of the permutation; None keeps the order.
        drop_last: drop a last, smaller batch (kept when there is only one batch).
    """
    order = torch.arange(n) if seed is None else torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    return list(order[:stop].split(batch_size))


def take(split: Dataset, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Images and integer labels of ``split`` at ``index`` (in-memory splits answer in one slice)."""
    if hasattr(split, "get_batch"):
        return split.get_batch(index)
    items = [split[int(i)] for i in index]
    return torch.stack([torch.as_tensor(x) for x, *_ in items]), torch.as_tensor([int(y) for _, y, *_ in items])


def batches(split: Dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
            device: torch.device | str = "cpu", drop_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yields ``(images, labels)`` batches on ``device``; a shuffled order depends on ``seed`` only."""
    for index in index_batches(len(split), batch_size, seed if shuffle else None, drop_last):
        x, y = take(split, index)
        yield x.to(device), y.long().to(device)


class SeededBatches:
    """Shuffled ``(images, labels)`` batches over ``indices`` of a data set, a new order on every pass.

    Pass ``k`` (counting from 0) is shuffled with seed ``seed * 1_000_003 + k``, so its order depends on
    ``seed`` and ``k`` alone. A last, smaller batch is dropped when there is more than one batch.

    Args:
        split: the data set.
        indices: the examples to batch (e.g. one half of a split).
        batch_size: examples per batch.
        seed: seed of the sequence of passes.
    """

    def __init__(self, split: Dataset, indices: Sequence[int], batch_size: int, seed: int) -> None:
        self.split, self.batch_size, self.seed = split, batch_size, int(seed)
        self.indices = torch.as_tensor(list(map(int, indices)), dtype=torch.long)
        self.passes = 0  # passes started so far

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed, self.passes = self.seed * 1_000_003 + self.passes, self.passes + 1
        for index in index_batches(len(self.indices), self.batch_size, seed, drop_last=True):
            x, y = take(self.split, self.indices[index])
            yield x, y.long()
