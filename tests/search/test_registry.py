"""The searcher registry and searcher settings."""

import pytest

from search import NSGA2Searcher, RandomSearcher, create_searcher, list_searchers, register_searcher


def test_builtin_searchers_are_registered():
    assert {"nsga2", "random"} <= set(list_searchers())
    assert isinstance(create_searcher("nsga2"), NSGA2Searcher)
    assert isinstance(create_searcher("random", pop_size=4, generations=2), RandomSearcher)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="nsga2.*random"):
        create_searcher("simulated-annealing")


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        register_searcher("nsga2", NSGA2Searcher)


def test_unknown_setting_lists_the_allowed_ones():
    with pytest.raises(ValueError, match="mutation_prob"):
        create_searcher("nsga2", mutaton_prob=0.1)


@pytest.mark.parametrize("settings", [{"pop_size": 1}, {"generations": 0}, {"mutation_prob": 1.5},
                                      {"crossover_prob": -0.1}, {"operators": "de"}])
def test_bad_nsga2_settings_are_refused(settings):
    with pytest.raises(ValueError, match="nsga2"):
        create_searcher("nsga2", **settings)


def test_defaults_follow_once_for_all():
    settings = create_searcher("nsga2").settings()
    assert (settings["pop_size"], settings["mutation_prob"], settings["seed"]) == (100, 0.1, 0)
    assert settings["generations"] >= 50


def test_settings_are_part_of_provenance():
    searcher = create_searcher("random", pop_size=8, generations=3, seed=5)
    assert searcher.provenance() == {"searcher": "random", "seed": 5,
                                     "settings": {"pop_size": 8, "generations": 3, "seed": 5}}
