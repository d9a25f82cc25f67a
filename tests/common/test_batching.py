"""The one batching path: seeded orders, the in-memory fast path equal to item-by-item reads."""

from __future__ import annotations

import torch
from torch.utils.data import Subset, TensorDataset

from common.batching import SeededBatches, batches, index_batches, take


def test_index_batches_cover_every_example_once_in_a_seeded_order():
    order = torch.cat(index_batches(10, 3, seed=4))
    assert sorted(order.tolist()) == list(range(10)) and order.tolist() != list(range(10))
    assert torch.equal(order, torch.cat(index_batches(10, 3, seed=4)))
    assert [len(b) for b in index_batches(10, 3)] == [3, 3, 3, 1]
    assert [len(b) for b in index_batches(10, 3, drop_last=True)] == [3, 3, 3]
    assert [len(b) for b in index_batches(2, 3, drop_last=True)] == [2]  # a single short batch is kept


def test_fast_path_and_item_reads_give_the_same_batches():
    from donna.data import TensorSplit

    split = TensorSplit(torch.randint(0, 255, (7, 1, 4, 4), dtype=torch.uint8), torch.arange(7) % 3, (0.5,), (0.2,))
    index = torch.tensor([5, 0, 3])
    fast, slow = take(split, index), take(Subset(split, range(7)), index)  # Subset has no get_batch
    assert torch.allclose(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
    assert [y.tolist() for _, y in batches(split, 3, shuffle=True, seed=1)] == \
           [y.tolist() for _, y in batches(Subset(split, range(7)), 3, shuffle=True, seed=1)]


def test_seeded_batches_draw_a_new_order_each_pass_that_depends_on_the_seed_only():
    data = TensorDataset(torch.arange(20).float().view(20, 1), torch.arange(20))
    labels = lambda loader: [y.tolist() for _, y in loader]  # noqa: E731 - one pass of labels
    a, b = SeededBatches(data, range(4, 20), 5, seed=3), SeededBatches(data, range(4, 20), 5, seed=3)
    first, second = labels(a), labels(a)
    assert first == labels(b) and second == labels(b) and first != second
    assert [len(y) for y in first] == [5, 5, 5] and set(sum(first, [])) <= set(range(4, 20))
    assert labels(SeededBatches(data, range(4, 20), 5, seed=4)) != first
