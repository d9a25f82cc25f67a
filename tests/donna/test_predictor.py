"""The accuracy predictor: coefficient recovery, genome prediction, JSON round trip, quality report."""

import numpy as np
import pandas as pd
import pytest

from blocks import get_space
from donna.predictor import AccuracyPredictor, fit_predictor, nsr_columns, quality_table


def _fake_nsr_table(space, seed=0):
    rng = np.random.default_rng(seed)
    rows = [{"slot": i, "option": str(o), "nsr": rng.uniform(0.05, 0.6), "params": 1, "macs": 1}
            for i in range(space.num_slots) for o in space.options(i)]
    return pd.DataFrame(rows)


def _labels(space, table, coef, intercept, n=30, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    archs = space.sample_many(n, seed=seed)
    lookup = {(r.slot, r.option): r.nsr for r in table.itertuples()}
    rows = []
    for arch in archs:
        feats = [lookup[(i, str(b))] for i, b in enumerate(arch.blocks)]
        acc = intercept + float(np.dot(coef, feats)) + rng.normal(0, noise)
        rows.append({"key": arch.key, "arch": arch.to_string(), "accuracy": acc,
                     "macs": rng.integers(1e5, 1e6), "params": rng.integers(1e4, 1e5),
                     **dict(zip(nsr_columns(space.num_slots), feats))})
    return archs, pd.DataFrame(rows)


def test_exact_linear_labels_recover_the_coefficients():
    space = get_space("mbconv-tiny")
    table = _fake_nsr_table(space)
    coef = np.array([-0.3, -0.1, -0.2, -0.05, -0.4])
    _, labels = _labels(space, table, coef, 0.95)
    predictor = fit_predictor(labels, nsr_columns(5), space=space.name)
    np.testing.assert_allclose(predictor.coef, coef, atol=2e-3)
    assert predictor.intercept == pytest.approx(0.95, abs=2e-3)
    assert predictor.quality["predictor"]["kendall_tau"] > 0.95


def test_genome_prediction_matches_frame_prediction_and_json_round_trips(tmp_path):
    space = get_space("mbconv-tiny")
    table = _fake_nsr_table(space, seed=1)
    archs, labels = _labels(space, table, np.array([-0.3, -0.1, -0.2, -0.05, -0.4]), 0.9, noise=0.01)
    predictor = fit_predictor(labels, nsr_columns(5), space=space.name)
    by_frame = predictor.predict_frame(labels)
    by_genome = predictor.predict_archs(archs, table, space)
    np.testing.assert_allclose(by_frame, by_genome, rtol=1e-10)
    assert by_genome.dtype == np.float64 and by_genome.shape == (len(archs),)
    predictor.to_json(tmp_path / "predictor.json")
    loaded = AccuracyPredictor.load(tmp_path / "predictor.json")
    np.testing.assert_allclose(loaded.predict_frame(labels), by_frame)


def test_quality_table_lists_predictor_and_naive_rankers():
    space = get_space("mbconv-tiny")
    table = _fake_nsr_table(space, seed=2)
    _, labels = _labels(space, table, np.array([-1.0, -0.01, -0.01, -0.01, -0.01]), 0.9, noise=0.002)
    frame = quality_table(fit_predictor(labels, nsr_columns(5)))
    assert list(frame.index) == ["predictor", "sum_nsr (DNA)", "macs", "params"]
    # slot 0 dominates: the weighted predictor must rank better than the unweighted sum
    assert frame.loc["predictor", "kendall_tau"] > frame.loc["sum_nsr (DNA)", "kendall_tau"]


def test_missing_predictor_names_the_command(tmp_path):
    with pytest.raises(ValueError, match="run `donna build-predictor"):
        AccuracyPredictor.load(tmp_path / "predictor.json")


def test_incomplete_nsr_table_is_refused():
    space = get_space("mbconv-tiny")
    table = _fake_nsr_table(space).iloc[5:]
    predictor = AccuracyPredictor(features=nsr_columns(5), coef=[0.1] * 5, intercept=0.0, alpha=1.0)
    with pytest.raises(ValueError, match="no score for slot 0"):
        predictor.genome_predictor(table, space)


def test_genome_predictions_beyond_the_labels_range_still_rank():
    space = get_space("mbconv-tiny")
    table = _fake_nsr_table(space)
    genomes = np.stack([space.encode(a) for a in space.sample_many(50, seed=0)])
    middle = AccuracyPredictor(features=nsr_columns(5), coef=[-0.1] * 5, intercept=0.5, alpha=1.0)
    values = middle.genome_predictor(table, space)(genomes)
    for intercept in (5.0, -5.0):  # far above 1 and below 0: no plateau, the same order as inside [0, 1]
        shifted = AccuracyPredictor(features=nsr_columns(5), coef=[-0.1] * 5, intercept=intercept, alpha=1.0)
        out = shifted.genome_predictor(table, space)(genomes)
        assert np.all(out > 1) if intercept > 0 else np.all(out < 0)
        np.testing.assert_allclose(out - intercept, values - 0.5)
    assert len(np.unique(values)) > 1


def test_a_prediction_beyond_the_labels_range_says_so():
    from donna.predictor import predicted_text

    assert [predicted_text(v) for v in (1.07, 0.93, -0.2)] == [
        "1.00+ (extrapolated 1.0700: ranks, not an accuracy)", "0.9300",
        "0.00- (extrapolated -0.2000: ranks, not an accuracy)"]
    assert predicted_text(None) == predicted_text(float("nan")) == "n/a"
