"""Every registered genome searcher on a tiny enumerable space: contract, seeding, golden fronts, exactness."""

import numpy as np
import pytest
from toy import ToySpace, toy_objectives

from search import GenomeSearcher, Objective, create_searcher, list_searchers, pareto_front
from search.objectives import GenomeProblem
from search.pareto import HypervolumeReference, hypervolume_min, non_dominated

GENOME_SEARCHERS = [n for n in list_searchers() if issubclass(type(create_searcher(n)), GenomeSearcher)]
SMALL = {"pop_size": 16, "generations": 6}


def run(name, space, objectives, **settings):
    return create_searcher(name, **{**SMALL, **settings}).search(space, objectives, progress=False)


def digits(genomes):
    return ["".join(str(int(g)) for g in row) for row in genomes]


@pytest.mark.parametrize("name", GENOME_SEARCHERS)
def test_result_contract(name, tiny_space, tiny_objectives):
    result = run(name, tiny_space, tiny_objectives, seed=1)
    n = len(result.archs)
    assert n > 0 and result.objectives.shape == (n, 2) and result.genomes.shape == (n, 9)
    assert result.objective_names == ("accuracy", "latency_ms") and result.maximize == (True, False)
    assert result.n_evaluations == 16 * 6  # same budget for every searcher on a space this size
    assert [h["generation"] for h in result.history] == list(range(1, 7))
    assert [h["evaluations"] for h in result.history] == [16 * g for g in range(1, 7)]
    hvs = [h["hypervolume"] for h in result.history]
    assert all(b >= a for a, b in zip(hvs, hvs[1:])) and hvs[-1] > 0  # the archive only improves
    assert result.history[-1]["front_size"] == n
    assert pareto_front(result.objectives, result.maximize).tolist() == list(range(n))  # non-dominated
    problem = GenomeProblem(tiny_space, tiny_objectives)
    np.testing.assert_allclose(problem.evaluate_genomes(result.genomes) * [-1, 1], result.objectives)
    for arch, genome in zip(result.archs, result.genomes):
        assert arch == tiny_space.decode(genome)
        assert arch.provenance == {"searcher": name, "settings": result.settings, "seed": 1}
    frame = result.to_frame()
    assert list(frame.columns) == ["arch", "key", "accuracy", "latency_ms", "genome"] and len(frame) == n


@pytest.mark.parametrize("name", GENOME_SEARCHERS)
def test_same_seed_same_front_other_seed_other_run(name, tiny_space, tiny_objectives):
    a = run(name, tiny_space, tiny_objectives, seed=3)
    b = run(name, tiny_space, tiny_objectives, seed=3)
    c = run(name, tiny_space, tiny_objectives, seed=4)
    np.testing.assert_array_equal(a.genomes, b.genomes)
    np.testing.assert_array_equal(a.objectives, b.objectives)
    assert a.history == b.history
    assert a.history != c.history


# Fronts recorded from pymoo 0.6.2 with the settings above and seed 0; a change means the search changed.
GOLDEN = {
    "nsga2": ["221022111", "221021111", "220011121", "221011111", "221012110", "221011110", "221011100",
              "220011100", "201012111", "201011111", "200011111", "220010110", "200011120", "201011100",
              "200011100", "200010110", "200010100", "000010100", "000010000"],
    "random": ["220012121", "221012111", "221011120", "211011120", "121012110", "111011110", "220011010",
               "201022110", "210002110", "220001110", "100021100", "201020110", "200010011", "211000000",
               "011000100", "200000101", "200000100"],
}


@pytest.mark.parametrize("name", GENOME_SEARCHERS)
def test_golden_front(name, tiny_space, tiny_objectives):
    if name not in GOLDEN:
        pytest.skip(f"no golden front recorded for {name}")
    result = run(name, tiny_space, tiny_objectives, seed=0)
    assert digits(result.genomes) == GOLDEN[name]


def test_nsga2_finds_the_exact_front_of_an_enumerable_space():
    space = ToySpace((3, 3, 3, 2, 2, 3, 3, 2, 2, 3))  # 11,664 genomes
    objectives = toy_objectives(space)
    problem = GenomeProblem(space, objectives)
    every = problem.evaluate_genomes(space.enumerate())
    exact = every[non_dominated(every)]
    span = exact.max(axis=0) - exact.min(axis=0)
    budget = {"pop_size": 100, "generations": 20}  # 2,000 evaluations, 17% of the space

    def worst_gap(result):  # additive epsilon: how far the worst-covered exact point is, in front ranges
        found = result.objectives * [-1, 1]
        return np.max(np.min(np.max(np.maximum(found[None] - exact[:, None], 0) / span, axis=2), axis=1))

    reference = HypervolumeReference.from_points(exact)
    for seed in range(3):
        result = create_searcher("nsga2", seed=seed, **budget).search(space, objectives, progress=False)
        assert worst_gap(result) <= 0.02, seed
        assert hypervolume_min(result.objectives * [-1, 1], reference) >= 0.995 * hypervolume_min(exact, reference)
    baseline = create_searcher("random", seed=0, **budget).search(space, objectives, progress=False)
    assert worst_gap(baseline) > 0.02  # the same budget spent at random does not get there


def test_objective_errors_are_clear(tiny_space):
    bad_shape = Objective("acc", lambda G: np.zeros((len(G), 1)), maximize=True)
    with pytest.raises(ValueError, match=r"'acc' returned shape"):
        run("nsga2", tiny_space, [bad_shape])
    not_finite = Objective("lat", lambda G: np.full(len(G), np.nan))
    with pytest.raises(ValueError, match="non-finite"):
        run("random", tiny_space, [not_finite])
    same = Objective("x", lambda G: G.sum(axis=1).astype(float))
    with pytest.raises(ValueError, match="unique"):
        run("nsga2", tiny_space, [same, same])
    with pytest.raises(ValueError, match="at least one Objective"):
        run("nsga2", tiny_space, [])


def test_random_search_never_repeats_a_genome(tiny_space):
    seen = []
    counting = Objective("sum", lambda G: seen.extend(map(tuple, G)) or G.sum(axis=1).astype(float))
    reference = HypervolumeReference(ideal=(0.0,), nadir=(20.0,))  # no sampling for the reference
    result = create_searcher("random", pop_size=50, generations=8).search(
        tiny_space, [counting], progress=False, hv_reference=reference)
    assert result.n_evaluations == len(seen) == 400 == len(set(seen))


def test_single_objective_and_single_choice_genes(tiny_space):
    result = run("nsga2", tiny_space, [Objective("sum", lambda G: G.sum(axis=1).astype(float))])
    assert result.objectives[:, 0].tolist() == [0.0]  # the all-zero genome, found
    assert np.all(result.genomes[:, 3] == 0)  # the gene with one choice never moves
