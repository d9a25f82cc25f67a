"""Statistics of raw latency samples: median, tails, spread, a CI of the median and the noisy flag."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class NoiseRules:
    """When a measurement is flagged noisy (it is flagged, never dropped)."""

    target_ci: float = 0.02  # relative half-width of the 95% CI of the median that counts as tight
    max_cov: float | None = 0.25  # sd / mean above this is noisy (trtexec warns at 0.025); None: off
    max_robust_cov: float = 0.05  # 1.4826 * MAD / median above this is noisy (interference, two modes)
    max_spike_share: float = 0.05  # share of runs slower than twice the median (preemptions) above this
    min_samples: int = 30  # fewer samples than this is noisy


@dataclass(frozen=True)
class Summary:
    """Summary of one set of samples in milliseconds."""

    n: int
    median_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    sd_ms: float
    cov: float  # sd / mean
    robust_cov: float  # 1.4826 * MAD / median
    spike_share: float  # share of runs slower than twice the median
    ci_low_ms: float  # 95% confidence interval of the median (order statistics)
    ci_high_ms: float

    @property
    def ci_rel_halfwidth(self) -> float:
        """Half the CI width relative to the median."""
        return (self.ci_high_ms - self.ci_low_ms) / 2.0 / self.median_ms if self.median_ms > 0 else math.inf

    def to_dict(self) -> dict:
        """Plain dict of the fields."""
        return asdict(self)


def median_ci(sorted_samples: np.ndarray, z: float = 1.96) -> tuple[float, float]:
    """Distribution-free confidence interval of the median from order statistics.

    Uses the normal approximation of the binomial(n, 1/2) ranks: ranks
    ``n/2 -+ z*sqrt(n)/2`` (1-based), clipped to the sample.

    Args:
        sorted_samples: samples in ascending order.
        z: normal quantile (1.96 for 95%).

    Returns:
        (low, high) bounds; the whole range when there are too few samples.
    """
    n = len(sorted_samples)
    half = z * math.sqrt(n) / 2.0
    lo = max(int(math.floor(n / 2.0 - half)), 1)
    hi = min(int(math.ceil(1 + n / 2.0 + half)), n)
    return float(sorted_samples[lo - 1]), float(sorted_samples[hi - 1])


def summarize(samples_ms) -> Summary:
    """Summarise raw samples.

    Args:
        samples_ms: per-run latencies in milliseconds (at least one).

    Returns:
        The :class:`Summary`.

    Raises:
        ValueError: when there are no samples or some are not finite and positive.
    """
    x = np.sort(np.asarray(samples_ms, dtype=float))
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x < 0):
        raise ValueError(f"need finite non-negative latency samples, got {x.size} values")
    med = float(np.median(x))
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if x.size > 1 else 0.0
    mad = float(np.median(np.abs(x - med)))
    lo, hi = median_ci(x)
    return Summary(
        n=int(x.size), median_ms=med, p90_ms=float(np.percentile(x, 90)), p99_ms=float(np.percentile(x, 99)),
        min_ms=float(x[0]), max_ms=float(x[-1]), mean_ms=mean, sd_ms=sd,
        cov=sd / mean if mean > 0 else math.inf, robust_cov=1.4826 * mad / med if med > 0 else math.inf,
        spike_share=float(np.mean(x > 2.0 * med)),
        ci_low_ms=lo, ci_high_ms=hi,
    )


def noise_reasons(summary: Summary, rules: NoiseRules) -> list[str]:
    """Reasons a summary should be flagged noisy under ``rules`` (empty when it is clean)."""
    reasons = []
    if summary.n < rules.min_samples:
        reasons.append(f"only {summary.n} samples < {rules.min_samples}")
    if summary.ci_rel_halfwidth > rules.target_ci:
        reasons.append(f"95% CI of median +-{summary.ci_rel_halfwidth:.1%} > target +-{rules.target_ci:.1%}")
    if rules.max_cov is not None and summary.cov > rules.max_cov:
        reasons.append(f"CoV {summary.cov:.1%} > {rules.max_cov:.1%}")
    if summary.robust_cov > rules.max_robust_cov:
        reasons.append(f"robust CoV (MAD) {summary.robust_cov:.1%} > {rules.max_robust_cov:.1%}")
    if summary.spike_share > rules.max_spike_share:
        reasons.append(f"{summary.spike_share:.1%} of runs took over twice the median "
                       f"(> {rules.max_spike_share:.1%}; preempted or throttled)")
    return reasons
