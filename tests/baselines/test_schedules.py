"""Schedule presets and their cost, settings resolution, and the refusal of another search's saved state."""

import pytest

from blocks import get_space
from donna.search_stage import SearchConfig, searcher_plan
from search import RunSize, create_searcher, list_searchers, searcher_spec

GLYPHS_TRAIN = 11_200  # training images of the embedded default (glyphs)


@pytest.mark.parametrize("name", ["pc-darts", "dso-nas"])
def test_quick_fits_minutes_and_paper_is_hours_on_the_embedded_default(name):
    space, size = get_space("mbconv-tiny"), RunSize(n_train=GLYPHS_TRAIN)
    spec = searcher_spec(name)
    paper = create_searcher(name, **spec.schedule("paper").settings).cost(space, size)
    quick = create_searcher(name, **spec.schedule("quick").settings).cost(space, size)
    assert 60 < quick.seconds < 15 * 60 < 3600 < paper.seconds
    assert "epochs" in paper.work and "about" in quick.describe()


@pytest.mark.parametrize("name", list_searchers())
def test_every_searcher_states_paper_and_quick_schedules_with_a_cost(name):
    spec = searcher_spec(name)
    assert {"paper", "quick"} <= set(spec.schedules) and spec.default_schedule == "paper"
    searcher = create_searcher(name, **spec.schedule("quick").settings)
    cost = searcher.cost(get_space("mbconv-tiny"), RunSize(n_train=GLYPHS_TRAIN))
    assert cost.seconds >= 0 and cost.work


def test_settings_resolve_run_then_schedule_then_options():
    cfg = SearchConfig(searcher="pc-darts", schedule="quick", seed=7)
    spec, settings = searcher_plan(cfg, {"epochs": 3})
    assert spec.needs_data and spec.resumable and spec.emits == "single"
    assert settings["seed"] == 7 and "pop_size" not in settings  # only the run settings it declares
    assert settings["epochs"] == 3 and settings["batch_size"] == spec.schedule("quick").settings["batch_size"]
    _, population = searcher_plan(SearchConfig(searcher="nsga2", settings={"pop_size": 8, "generations": 2}))
    assert (population["pop_size"], population["generations"], population["seed"]) == (8, 2, 0)


def test_bad_setting_and_additive_with_measure_are_refused_before_work():
    with pytest.raises(ValueError, match="pc-darts: invalid epochs"):
        searcher_plan(SearchConfig(searcher="pc-darts"), {"epochs": 0})
    with pytest.raises(ValueError, match="use --latency table"):
        searcher_plan(SearchConfig(searcher="exact", latency="measure"))


def test_pc_darts_takes_the_run_target_only_with_its_latency_penalty():
    faithful = create_searcher("pc-darts", latency_target_ms=2.0)
    assert faithful.config.target_ms is None
    penalised = create_searcher("pc-darts", latency_target_ms=2.0, latency_weight=0.5)
    assert penalised.config.target_ms == 2.0
    own = create_searcher("pc-darts", latency_target_ms=2.0, latency_weight=0.5, target_ms=3.0)
    assert own.config.target_ms == 3.0


def test_a_state_of_other_settings_is_refused(tiny_space, digits16, tmp_path):
    quick = {"epochs": 2, "warmup_epochs": 1, "batch_size": 8, "max_steps_per_epoch": 1, "device": "cpu"}
    create_searcher("pc-darts", data=digits16, **quick).search(tiny_space, checkpoint_dir=tmp_path, progress=False)
    assert (tmp_path / "supernet_state.pt").is_file()
    other = create_searcher("pc-darts", data=digits16, **{**quick, "seed": 1})
    with pytest.raises(ValueError, match="belongs to another search \\(its settings differ"):
        other.search(tiny_space, checkpoint_dir=tmp_path, progress=False)
