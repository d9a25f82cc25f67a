"""Search over the real embedded space: genomes decode to valid blocks.Arch, written as IR JSON."""

import numpy as np
import pytest

blocks = pytest.importorskip("blocks")

from search import Objective, create_searcher, finalize_search  # noqa: E402


@pytest.fixture(scope="module")
def space():
    return blocks.get_space("mbconv-tiny")


def objectives(space):
    _, xu = space.genome_bounds()
    weights = np.random.default_rng(0).uniform(0.5, 1.5, size=xu.size)
    return [Objective("accuracy", lambda G: 60 + G @ weights, maximize=True),
            Objective("latency_ms", lambda G: 1 + 0.1 * (G @ weights[::-1]) ** 1.2)]


@pytest.mark.parametrize("name", ["nsga2", "random"])
def test_front_members_are_valid_archs_with_provenance(name, space, tmp_path):
    result = create_searcher(name, pop_size=12, generations=3, seed=0).search(space, objectives(space),
                                                                                progress=False)
    for arch, genome in zip(result.archs, result.genomes):
        assert isinstance(arch, blocks.Arch)
        space.validate(arch)
        np.testing.assert_array_equal(space.encode(arch), genome)
        assert arch.provenance["searcher"] == name and arch.provenance["seed"] == 0
    out = finalize_search(tmp_path, result, 1e9, progress=False)
    first = blocks.Arch.from_json(tmp_path / "pareto" / f"{result.archs[0].key}.json")
    assert first == result.archs[0] and first.provenance["searcher"] == name
    assert out.selected["key"] in {a.key for a in result.archs}
