"""The predictor study's statistics on synthetic rankings with known answers."""

from __future__ import annotations

import numpy as np
from scipy import stats

from donna.rankstats import bootstrap_taus, kendall, kendall_many, noise_ceiling, paired_difference


def test_vectorised_tau_b_equals_scipy_with_ties():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 5, size=(40, 25)).astype(float)  # many ties
    y = x + rng.normal(0, 2, size=x.shape)
    y[:, :6] = 0.0
    expected = [stats.kendalltau(a, b).statistic for a, b in zip(x, y)]
    assert np.allclose(kendall_many(x, y), expected)
    assert np.isnan(kendall_many(np.ones((1, 5)), np.arange(5.0)[None]))[0]
    assert np.isnan(kendall([1, 1, 1], [1, 2, 3]))


def test_bootstrap_interval_of_a_perfect_and_a_reversed_ranker():
    truth = np.linspace(0.5, 0.9, 30)
    out = bootstrap_taus(truth, {"perfect": truth * 2, "reversed": -truth}, n_boot=300)
    assert out["perfect"] == {"kendall_tau": 1.0, "tau_low": 1.0, "tau_high": 1.0}
    assert out["reversed"]["tau_high"] == -1.0


def test_bootstrap_interval_covers_the_population_tau():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=60)
    score = truth + rng.normal(0, 1.0, 60)  # population tau = 2/pi * asin(1/sqrt(2)) = 0.5
    out = bootstrap_taus(truth, {"noisy": score}, n_boot=1000)["noisy"]
    assert out["tau_low"] < 0.5 < out["tau_high"]
    assert 0.1 < out["tau_high"] - out["tau_low"] < 0.5  # about +-0.1 at 60 architectures


def test_paired_difference_tells_better_from_indistinguishable():
    rng = np.random.default_rng(2)
    truth = rng.normal(size=50)
    good, bad = truth + rng.normal(0, 0.3, 50), truth + rng.normal(0, 3.0, 50)
    better = paired_difference(truth, good, bad, n_boot=500)
    assert better["low"] > 0 and better["difference"] > 0
    same = paired_difference(truth, good, good * 3 + 1, n_boot=200)  # same ranking, other scale
    assert same == {"difference": 0.0, "low": 0.0, "high": 0.0}


def test_noise_ceiling_follows_the_repeat_noise():
    truth = np.linspace(0, 1, 40)
    exact = noise_ceiling(truth, truth[:5], truth[:5])
    assert exact["label_noise_sd"] == 0.0 and exact["ceiling_tau"] == 1.0
    noisy = noise_ceiling(truth, np.zeros(5), np.full(5, 0.5))  # sd = 0.5 / sqrt(2), about the whole range
    assert np.isclose(noisy["label_noise_sd"], 0.5 / np.sqrt(2)) and noisy["ceiling_tau"] < 0.5
