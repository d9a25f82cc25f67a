"""Statistics of samples and the adaptive protocol, on synthetic sample streams."""

from __future__ import annotations

import numpy as np
import pytest

from latency.protocol import ProtocolConfig, run_protocol
from latency.stats import NoiseRules, median_ci, noise_reasons, summarize


def test_summary_is_coherent():
    x = np.random.default_rng(0).lognormal(0.0, 0.05, 501)
    s = summarize(x)
    assert s.n == 501 and s.median_ms == pytest.approx(np.median(x))
    assert s.min_ms <= s.ci_low_ms <= s.median_ms <= s.ci_high_ms <= s.max_ms
    assert s.median_ms <= s.p90_ms <= s.p99_ms <= s.max_ms
    assert s.cov == pytest.approx(np.std(x, ddof=1) / np.mean(x))
    assert 0.0 < s.ci_rel_halfwidth < 0.01


def test_median_ci_covers_the_true_median_about_95_percent():
    rng = np.random.default_rng(1)
    hits = sum(lo <= 1.0 <= hi for lo, hi in (median_ci(np.sort(rng.lognormal(0, 0.2, 60))) for _ in range(400)))
    assert 0.90 <= hits / 400 <= 0.99


def test_bad_samples_raise():
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])


def test_noise_reasons_name_each_problem():
    clean = summarize(np.full(100, 1.0) + np.linspace(0, 0.001, 100))
    assert noise_reasons(clean, NoiseRules()) == []
    spiky = summarize(np.r_[np.full(90, 1.0), np.full(10, 5.0)])
    reasons = " ".join(noise_reasons(spiky, NoiseRules()))
    assert "CoV" in reasons and "twice the median" in reasons
    assert "only 10 samples" in " ".join(noise_reasons(summarize(np.ones(10)), NoiseRules()))


def _stream(values):
    it = iter(values)
    return lambda n: [next(it) for _ in range(n)]


def test_protocol_stops_on_tight_ci_after_min_samples():
    cfg = ProtocolConfig(min_time_s=0.0, min_samples=30, warmup_window=5, target_ci=0.02)
    run = run_protocol(_stream(iter(lambda: 1.0, None)), cfg)
    assert len(run.samples_ms) >= 30 and run.warmup_stable and run.stop_reason.startswith("CI of median")


def test_protocol_warms_up_until_stable():
    slow_then_fast = [5.0] * 5 + [3.0] * 5 + [1.0] * 10_000  # caches and clocks settling
    cfg = ProtocolConfig(min_time_s=0.0, warmup_window=5, warmup_tol=0.05)
    run = run_protocol(_stream(slow_then_fast), cfg)
    assert len(run.warmup_ms) == 20 and run.warmup_stable and max(run.samples_ms) == 1.0
    never = run_protocol(_stream([float(v) for v in range(1, 100_000)]), cfg.replace(warmup_max_s=0.0))
    assert not never.warmup_stable


def test_protocol_caps_samples_when_noise_never_settles():
    rng = np.random.default_rng(0)
    cfg = ProtocolConfig(min_time_s=0.0, warmup_max_s=0.0, max_samples=200, target_ci=1e-6)
    run = run_protocol(lambda n: list(rng.uniform(1, 3, n)), cfg)
    assert len(run.samples_ms) == 200 and run.stop_reason.startswith("max samples")


def test_unknown_protocol_option_is_refused():
    with pytest.raises(ValueError, match="unknown protocol option"):
        ProtocolConfig.from_dict({"min_sample": 3})
