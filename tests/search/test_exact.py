"""The exact searcher: the whole front of additive objectives, checked against brute force."""

import time

import numpy as np
import pytest
from toy import ToySpace, slot_objectives

from search import Additive, Objective, SlotTable, create_searcher, pareto_dp
from search.objectives import GenomeProblem
from search.pareto import non_dominated

SPACE = ToySpace((3, 2, 3, 1, 2, 3, 2, 3))  # 1,296 members
SLOTS = [(0, 1), (2, 3), (4,), (5, 6), (7,)]  # slots of one or two genes; gene 3 has one choice


def brute_force(space, objectives):
    """Distinct points of the front of every member, minimisation form, sorted."""
    every = GenomeProblem(space, objectives).evaluate_genomes(space.enumerate())
    return np.unique(every[non_dominated(every)], axis=0)


def exact(space, objectives, **settings):
    return create_searcher("exact", **settings).search(space, objectives, progress=False)


def min_form(result):
    return result.objectives * np.where(result.maximize, -1.0, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("integer", [False, True])
def test_front_equals_brute_force(seed, integer):
    objectives = slot_objectives(SPACE, SLOTS, seed=seed, integer=integer)
    result = exact(SPACE, objectives)
    truth = brute_force(SPACE, objectives)
    found = min_form(result)
    assert len(found) == len(truth) == len(np.unique(found, axis=0))  # every point once
    np.testing.assert_allclose(np.unique(found, axis=0), truth, rtol=0, atol=1e-12)
    problem = GenomeProblem(SPACE, objectives)
    np.testing.assert_array_equal(problem.evaluate_genomes(result.genomes), found)  # members give their values
    assert result.genomes.dtype == np.int64
    assert [SPACE.encode(a).tolist() for a in result.archs] == result.genomes.tolist()
    assert result.history[0]["front_size"] == len(found) and result.hypervolume > 0
    assert all(a.provenance["searcher"] == "exact" for a in result.archs)


def test_ties_are_broken_the_same_way_every_time():
    objectives = slot_objectives(SPACE, SLOTS, seed=4, integer=True)
    runs = [exact(SPACE, objectives) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].genomes, runs[1].genomes)
    every = GenomeProblem(SPACE, objectives).evaluate_genomes(SPACE.enumerate())
    assert len(runs[0].genomes) < len(non_dominated(every))  # there were members sharing a front point


def test_three_objectives_and_free_gene():
    space = ToySpace((2, 3, 2, 3, 2, 4))
    slots = [(0,), (1, 2), (3,), (4,)]  # gene 5 is in no slot: no objective depends on it
    objectives = slot_objectives(space, slots, seed=5, n_obj=3)
    result = exact(space, objectives)
    np.testing.assert_allclose(np.unique(min_form(result), axis=0), brute_force(space, objectives), atol=1e-12)
    assert np.all(result.genomes[:, 5] == 0)  # the free gene sits at its lower bound


def test_non_decreasing_transform_is_applied_after_the_sum():
    raw, latency = slot_objectives(SPACE, SLOTS, seed=6)
    ceiling = np.quantile(raw.fn(SPACE.enumerate()), 0.9)  # a tenth of the members hit the ceiling

    def clip(values):
        return np.minimum(values, ceiling)

    clipped = Additive(raw.additive.slots, raw.additive.constant, transform=clip)
    accuracy = Objective("accuracy", lambda G: clip(raw.fn(G)), maximize=True, additive=clipped)
    objectives = [accuracy, latency]
    result = exact(SPACE, objectives)
    np.testing.assert_allclose(np.unique(min_form(result), axis=0), brute_force(SPACE, objectives), atol=1e-12)
    assert np.sum(result.objectives[:, 0] == ceiling) == 1  # the clipped plateau keeps only its fastest member
    assert len(exact(SPACE, [raw, latency]).archs) > len(result.archs)


def test_refuses_objectives_that_are_not_additive():
    accuracy, latency = slot_objectives(SPACE, SLOTS, seed=0)
    measured = Objective("latency_ms", latency.fn)  # no tables: e.g. measured on the device
    with pytest.raises(ValueError, match="'latency_ms' gives no per-slot tables"):
        exact(SPACE, [accuracy, measured])
    interacting = Objective("latency_ms", lambda G: latency.fn(G) + 0.01 * G[:, 0] * G[:, 2],
                            additive=latency.additive)
    with pytest.raises(ValueError, match="'latency_ms' is not additive over its slot tables"):
        exact(SPACE, [accuracy, interacting])


def test_refuses_inconsistent_tables():
    accuracy, _ = slot_objectives(SPACE, SLOTS, seed=0)
    _, other_slots = slot_objectives(SPACE, [(0,), (1, 2, 3), (4,), (5, 6), (7,)], seed=0)
    with pytest.raises(ValueError, match="different slots"):
        exact(SPACE, [accuracy, other_slots])
    partial = Additive((SlotTable((0,), np.array([[0], [1]]), np.array([0.0, 1.0])),))
    short = Objective("short", lambda G: G[:, 0].astype(float), additive=partial)
    with pytest.raises(ValueError, match=r"lists 2 options, but the genome bounds allow 3"):
        exact(ToySpace((3,)), [short])
    with pytest.raises(ValueError, match="max_states"):
        exact(SPACE, slot_objectives(SPACE, SLOTS, seed=0), max_states=10)
    with pytest.raises(ValueError, match="same option code twice"):
        SlotTable((0,), np.array([[0], [0]]), np.array([1.0, 2.0]))


def test_dp_alone_on_a_space_of_1e10_members_in_seconds():
    rng = np.random.default_rng(0)
    values = []
    for _ in range(5):  # the shape of mbconv-tiny: 5 slots of 108 options, 1.47e10 members
        size = rng.uniform(0, 1, 108)
        values.append(np.column_stack([-(size + rng.normal(0, 0.2, 108)), size * rng.lognormal(0, 0.3, 108)]))
    start = time.perf_counter()
    F, options, formed = pareto_dp(np.zeros(2), values)
    elapsed = time.perf_counter() - start
    assert elapsed < 30 and formed > len(F) > 10
    again = sum(values[k][options[:, k]] for k in range(5))
    np.testing.assert_allclose(again, F, atol=1e-12)  # back-pointers lead to the members of those points
    assert np.all(np.diff(F[:, 0]) > 0) and np.all(np.diff(F[:, 1]) < 0)  # a strict 2-D staircase
    sample = sum(v[rng.integers(0, 108, 200_000)] for v in values)  # no random member beats the front
    position = np.searchsorted(F[:, 0], sample[:, 0], side="right") - 1
    covered = position >= 0
    assert np.all(F[position[covered], 1] <= sample[covered, 1] + 1e-12) and np.all(sample[~covered, 0] >= F[0, 0])


def test_exact_searcher_on_a_space_shaped_like_mbconv_tiny():
    sizes = (1, 3, 3, 3, 2, 2) * 5  # 5 slots of 108 options: 1.47e10 members
    space = ToySpace(sizes)
    objectives = slot_objectives(space, [tuple(range(6 * s, 6 * s + 6)) for s in range(5)], seed=7)
    start = time.perf_counter()
    result = exact(space, objectives)
    assert time.perf_counter() - start < 30
    front = min_form(result)
    sample = GenomeProblem(space, objectives).evaluate_genomes(
        np.random.default_rng(0).integers(0, np.array(sizes), size=(50_000, len(sizes))))
    beaten = (sample[:, None, :] <= front[None, :, :]).all(axis=2) & (sample[:, None, :] < front[None]).any(axis=2)
    assert not beaten.any()  # no random member dominates a point of the exact front
    random_front = create_searcher("random", pop_size=100, generations=10).search(
        space, objectives, progress=False, hv_reference=result.hv_reference)
    assert random_front.hypervolume < result.hypervolume
