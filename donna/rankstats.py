"""Statistics of rankings: Kendall tau with bootstrap intervals, paired differences, and a label-noise ceiling.

Used by the predictor's quality report (``predictor.json``) and by ``benchmarks/predictor_study.py``. With a few
dozen labels a Kendall tau is uncertain by about +-0.15, so every tau here comes with a percentile bootstrap
interval over architectures, and "is A better than B" is answered by the interval of the paired difference
(both rankers scored on the same resampled architectures).
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def kendall(truth: np.ndarray, score: np.ndarray) -> float:
    """Kendall tau-b of ``score`` against ``truth``; NaN when either is constant (undefined)."""
    truth, score = np.asarray(truth, float), np.asarray(score, float)
    if len(truth) < 2 or np.ptp(truth) == 0 or np.ptp(score) == 0:
        return float("nan")
    return float(stats.kendalltau(truth, score).statistic)


def kendall_many(truth: np.ndarray, score: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Kendall tau-b of every row pair ``(truth[b], score[b])`` of two (B, n) arrays, vectorised (NaN if undefined).

    tau-b = sum_ij sign(x_i - x_j) sign(y_i - y_j) / sqrt(sum_ij |sign(x_i - x_j)| * sum_ij |sign(y_i - y_j)|),
    which is scipy's tau-b with ties; bootstrap resamples are full of ties.
    """
    truth, score = np.atleast_2d(np.asarray(truth, float)), np.atleast_2d(np.asarray(score, float))
    out = np.empty(len(truth))
    for start in range(0, len(truth), chunk):
        x, y = truth[start:start + chunk], score[start:start + chunk]
        sx = np.sign(x[:, :, None] - x[:, None, :])
        sy = np.sign(y[:, :, None] - y[:, None, :])
        denom = np.sqrt(np.abs(sx).sum((1, 2)) * np.abs(sy).sum((1, 2)))
        with np.errstate(invalid="ignore", divide="ignore"):
            out[start:start + chunk] = np.where(denom > 0, (sx * sy).sum((1, 2)) / np.where(denom > 0, denom, 1),
                                                np.nan)
    return out


def _resamples(n: int, n_boot: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def _interval(values: np.ndarray, level: float) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_taus(truth: np.ndarray, scores: dict[str, np.ndarray], n_boot: int = 2000, seed: int = 0,
                   level: float = 0.9) -> dict[str, dict[str, float]]:
    """Per ranker: Kendall tau on all architectures and its percentile bootstrap interval.

    Args:
        truth: the measured accuracies (higher is better).
        scores: ranker name -> score per architecture (higher = predicted better).
        n_boot: bootstrap resamples of the architectures.
        seed: seeds the resampling (the same resamples serve every ranker).
        level: coverage of the interval.

    Returns:
        ``{name: {"kendall_tau", "tau_low", "tau_high"}}``.
    """
    truth = np.asarray(truth, float)
    draws = _resamples(len(truth), n_boot, seed)
    out = {}
    for name, score in scores.items():
        score = np.asarray(score, float)
        boot = kendall_many(truth[draws], score[draws])
        lo, hi = _interval(boot, level)
        out[name] = {"kendall_tau": kendall(truth, score), "tau_low": lo, "tau_high": hi}
    return out


def paired_difference(truth: np.ndarray, score_a: np.ndarray, score_b: np.ndarray, n_boot: int = 2000,
                      seed: int = 0, level: float = 0.9) -> dict[str, float]:
    """tau(a) - tau(b) on the same architectures, with the bootstrap interval of the paired difference.

    An interval above 0 says ``a`` ranks better than ``b`` at that level; one that straddles 0 cannot tell.
    """
    truth, a, b = (np.asarray(v, float) for v in (truth, score_a, score_b))
    draws = _resamples(len(truth), n_boot, seed)
    boot = kendall_many(truth[draws], a[draws]) - kendall_many(truth[draws], b[draws])
    lo, hi = _interval(boot, level)
    return {"difference": kendall(truth, a) - kendall(truth, b), "low": lo, "high": hi}


def noise_ceiling(truth: np.ndarray, repeat_a: np.ndarray, repeat_b: np.ndarray, n_sim: int = 500,
                  seed: int = 0) -> dict[str, float]:
    """The Kendall tau a perfect predictor could reach against labels as noisy as the repeats show.

    ``repeat_a`` and ``repeat_b`` are the same architectures labelled with two seeds; their difference has
    variance 2 sigma^2, which gives the label noise sigma. The ceiling is the mean tau between ``truth`` and
    ``truth`` plus fresh noise of that sigma.

    Returns:
        ``{"label_noise_sd", "ceiling_tau", "repeats"}``.
    """
    diff = np.asarray(repeat_a, float) - np.asarray(repeat_b, float)
    sigma = float(np.sqrt(np.mean(diff ** 2) / 2)) if len(diff) else float("nan")
    truth = np.asarray(truth, float)
    rng = np.random.default_rng(seed)
    noisy = truth + rng.normal(0, sigma, (n_sim, len(truth))) if sigma > 0 else truth[None]
    taus = kendall_many(np.broadcast_to(truth, noisy.shape), noisy)
    return {"label_noise_sd": sigma, "ceiling_tau": float(np.nanmean(taus)), "repeats": int(len(diff))}
