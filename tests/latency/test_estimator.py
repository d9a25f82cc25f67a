"""The latency-estimator interface: a table, live measurements and a corrected table answer alike."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from latency import CorrectedLatency, LatencyEstimator, LatencyTable, MeasuredLatency, build_latency_table

FAST = {"min_time_s": 0.02, "max_time_s": 0.2, "target_ci": 0.05, "warmup_max_s": 0.1}


@pytest.fixture(scope="module")
def table(mini_space, tmp_path_factory):
    out = tmp_path_factory.mktemp("table")
    return build_latency_table(mini_space, "cpu", out, protocol=FAST, progress=False, n_calibration=2,
                               n_validation=0, n_repeat=0)


def test_the_table_is_typed_immutable_and_round_trips(table):
    assert isinstance(table, LatencyEstimator) and table.path.name == "table.json"
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.stem_ms = 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        table.calibration.scale = 2.0
    again = LatencyTable.from_dict(json.loads(table.path.read_text()), table.path)
    assert again == table and again.to_dict() == table.to_dict()
    assert table.measurable and table.note is None


def test_every_estimator_answers_archs_and_genomes_alike(table, mini_space, tmp_path):
    archs = mini_space.sample_many(3, seed=1)
    genomes = np.stack([mini_space.encode(a) for a in archs])
    measured = MeasuredLatency("cpu", tmp_path / "measured.csv")
    corrected = CorrectedLatency(table, measured)
    for estimator in (table, measured, corrected):
        by_arch = estimator.predict_many(archs)
        assert by_arch.shape == (3,) and np.all(by_arch > 0)
        np.testing.assert_allclose(estimator.predict_genomes(genomes, mini_space), by_arch)


def test_measurements_are_cached_and_survive_a_restart(mini_space, tmp_path):
    arch = mini_space.sample(2)
    first = MeasuredLatency("cpu", tmp_path / "measured.csv")
    assert first.known(arch) is None
    ms = first.predict(arch)
    again = MeasuredLatency("cpu", tmp_path / "measured.csv")  # a killed search comes back
    assert again.known(arch) == first.known(arch) and again.predict(arch) == ms
    assert set(again.known(arch)) == {"measured_ms", "measured_ms_ci_low", "measured_ms_ci_high", "noisy"}


def test_corrected_table_uses_measurements_and_their_drift(table, mini_space, tmp_path):
    measured = MeasuredLatency("cpu", tmp_path / "measured.csv")
    corrected = CorrectedLatency(table, measured)
    a, b = mini_space.sample_many(2, seed=7)
    assert corrected.correction == 1.0 and corrected.predict(b) == table.predict(b)
    [ms] = corrected.measure([a])
    assert corrected.predict(a) == ms  # measured: the measurement itself
    ratio = ms / table.predict(a)
    assert corrected.correction == pytest.approx(ratio)
    assert corrected.predict(b) == pytest.approx(ratio * table.predict(b))  # unmeasured: the corrected table
    with pytest.raises(ValueError, match="measurements of its own device"):
        CorrectedLatency(table, MeasuredLatency("s20", tmp_path / "other.csv"))


def test_a_fresh_process_measurement_is_its_own_and_cached(mini_space, tmp_path, monkeypatch):
    import latency.measure

    arch = mini_space.sample(3)
    measured = MeasuredLatency("cpu", tmp_path / "measured.csv")
    fresh = measured.measure_fresh(arch)  # a real `latency bench` in a child process
    assert measured.fresh_file == tmp_path / "measured_fresh.csv" and measured.fresh_file.is_file()
    assert 0 < fresh["measured_ms_ci_low"] <= fresh["measured_ms"] <= fresh["measured_ms_ci_high"]
    assert measured.known(arch) is None  # the in-process cache is not touched

    def no_second_process(*args, **kwargs):
        raise AssertionError("measured twice")

    monkeypatch.setattr(latency.measure, "measure_in_fresh_process", no_second_process)
    again = MeasuredLatency("cpu", tmp_path / "measured.csv").measure_fresh(arch)  # a restart reads the file
    assert again == fresh
