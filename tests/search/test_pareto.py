"""Pareto fronts, hypervolume and choosing under a latency target."""

import itertools

import numpy as np
import pandas as pd
import pytest

from search import HypervolumeReference, NoArchMeetsTarget, choose_under_target, hypervolume, pareto_front


def brute_force_front(F_min: np.ndarray) -> list[int]:
    keep = []
    for i, p in enumerate(F_min):
        dominated = any(np.all(q <= p) and np.any(q < p) for j, q in enumerate(F_min) if j != i)
        if not dominated:
            keep.append(i)
    return keep


def test_front_of_a_hand_example_with_accuracy_maximised():
    # (accuracy up, latency down)
    F = np.array([[70.0, 5.0], [72.0, 6.0], [69.0, 5.5], [72.0, 6.0], [60.0, 1.0], [71.0, 7.0]])
    assert pareto_front(F, maximize=[True, False]).tolist() == [0, 1, 3, 4]  # duplicates both kept


def test_front_matches_brute_force_on_random_points():
    rng = np.random.default_rng(3)
    F = rng.integers(0, 6, size=(60, 3)).astype(float)  # many ties
    assert pareto_front(F).tolist() == brute_force_front(F)


def test_hypervolume_of_known_points():
    ref = HypervolumeReference(ideal=(0.0, 0.0), nadir=(1.0, 1.0), ref_point=1.1)
    assert hypervolume(np.array([[0.0, 0.0]]), [False, False], ref) == pytest.approx(1.21)
    two = np.array([[0.0, 0.5], [0.5, 0.0]])
    assert hypervolume(two, [False, False], ref) == pytest.approx(1.21 - 0.25)
    assert hypervolume(np.array([[2.0, 0.0]]), [False, False], ref) == 0.0  # outside the reference box
    assert hypervolume(np.zeros((0, 2)), [False, False], ref) == 0.0


def test_hypervolume_negates_maximised_objectives_and_normalises():
    # accuracy 80 is the best (ideal -80), 60 the worst (nadir -60); latency 1..3 ms
    ref = HypervolumeReference(ideal=(-80.0, 1.0), nadir=(-60.0, 3.0))
    best = hypervolume(np.array([[80.0, 1.0]]), [True, False], ref)
    middle = hypervolume(np.array([[70.0, 2.0]]), [True, False], ref)
    assert best == pytest.approx(1.21)
    assert middle == pytest.approx(0.6 * 0.6)


def rows():
    return pd.DataFrame({
        "arch": ["a", "b", "c", "d", "e"],
        "key": ["ka", "kb", "kc", "kd", "ke"],
        "predicted_accuracy": [60.0, 70.0, 75.0, 75.0, 90.0],
        "measured_ms": [1.0, 2.0, 3.0, 2.5, np.nan],
    })


def test_choose_under_target_takes_highest_accuracy_then_lowest_latency():
    assert choose_under_target(rows(), 2.2)["key"] == "kb"
    assert choose_under_target(rows(), 3.0)["key"] == "kd"  # ties on accuracy go to the faster one
    assert choose_under_target(rows().to_dict("records"), 100.0)["key"] == "kd"  # NaN latency ignored


def test_nothing_under_target_names_the_fastest():
    with pytest.raises(NoArchMeetsTarget) as info:
        choose_under_target(rows(), 0.5)
    assert info.value.fastest["key"] == "ka"
    assert "ka" in str(info.value) and "1 ms" in str(info.value) and "0.5 ms" in str(info.value)


@pytest.mark.parametrize("kwargs", [{"latency_column": "nope"}, {"accuracy_column": "nope"}])
def test_missing_column_is_a_clear_error(kwargs):
    with pytest.raises(ValueError, match="nope"):
        choose_under_target(rows(), 3.0, **kwargs)


def test_unmeasured_front_is_refused():
    frame = rows().assign(measured_ms=np.nan)
    with pytest.raises(ValueError, match="measure the front"):
        choose_under_target(frame, 3.0)


def test_three_objective_front_brute_force_grid():
    F = np.array(list(itertools.product(range(3), repeat=3)), dtype=float)
    assert pareto_front(F).tolist() == [0]
