"""Calibrating a latency table's sum of parts against networks measured whole, with the model chosen by CV.

Two models, one family: ``measured ~ c + sum_i s_i * block_i`` (stem and head are the same in every
network, so the intercept holds them). A ridge penalty ``lam * sum_i (s_i - mean(s))^2`` shrinks the
per-slot scales toward one common scale; ``lam = inf`` is the single-scale model
``intercept + scale * sum of parts``. Leave-one-out error on the calibration networks picks ``lam``;
the held-out validation networks are never used to fit or to choose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import LatencyError

RIDGE_GRID = (0.0, 0.01, 0.1, 1.0, 10.0, math.inf)  # relative to the mean squared scale feature
MIN_PER_PARAM = 3  # per-slot models are tried only with at least this many networks per parameter


@dataclass(frozen=True)
class Calibration:
    """``measured ~ intercept_ms + scale * (stem + head) + sum_i slot_scale(i) * block_i``.

    With no ``slot_scales`` every slot uses ``scale``: ``intercept_ms + scale * sum of parts``.
    """

    intercept_ms: float = 0.0
    scale: float = 1.0
    n: int = 0
    archs: tuple[str, ...] = ()  # keys of the architectures it was fitted on
    slot_scales: tuple[float, ...] = ()  # per-slot scales of block latencies; empty: ``scale`` for every slot
    ridge: float | None = None  # the chosen penalty of the per-slot scales; None: one scale
    cv: dict | None = None  # leave-one-out RMSPE on the calibration networks of each penalty tried

    def slot_scale(self, slot: int) -> float:
        """The scale of slot ``slot``'s block latencies."""
        return self.slot_scales[slot] if self.slot_scales else self.scale

    def apply(self, part_sum_ms):
        """The single-scale calibrated latency of uncalibrated sums (float or array); stem + head with slot scales."""
        return self.intercept_ms + self.scale * part_sum_ms

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        """Reads a table file's ``calibration`` (files without per-slot scales read as single-scale)."""
        ridge = data.get("ridge")
        return cls(float(data["intercept_ms"]), float(data["scale"]), int(data.get("n", 0)),
                   tuple(data.get("archs", ())), tuple(map(float, data.get("slot_scales") or ())),
                   None if ridge is None else float(ridge), data.get("cv"))

    @property
    def model(self) -> str:
        """In words: which calibration model this is."""
        if not self.slot_scales:
            return "one scale"
        return f"per-slot scales (ridge {self.ridge:g})"


def fit_calibration(sums_ms, measured_ms) -> Calibration:
    """Fit ``measured ~ intercept + scale * sum`` minimising the squared *relative* error.

    The intercept absorbs the per-run overhead that every separately measured part pays once
    (session call, input and output copies) but a whole network pays only once.
    """
    s, y = np.asarray(sums_ms, float), np.asarray(measured_ms, float)
    if s.size < 2:
        raise LatencyError(f"calibration needs at least 2 measured architectures, got {s.size}")
    design = np.stack([1.0 / y, s / y], axis=1)
    (intercept, scale), *_ = np.linalg.lstsq(design, np.ones_like(y), rcond=None)
    if not scale > 0:  # a few noisy architectures can tilt the line; a slower sum is never a faster network
        ratio = s / y
        intercept, scale = 0.0, float(ratio.sum() / (ratio ** 2).sum())
    return Calibration(intercept_ms=float(intercept), scale=float(scale), n=int(s.size))


def _solve(blocks: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray | None:
    """``(c, s_1..s_S)`` minimising relative squared error plus the shrinkage penalty; None if a scale is <= 0."""
    n, k = blocks.shape
    if math.isinf(lam):
        both = _solve(blocks.sum(axis=1, keepdims=True), y, 0.0)
        return None if both is None else np.r_[both[0], np.full(k, both[1])]
    design = np.c_[np.ones(n), blocks] / y[:, None]
    gram = design.T @ design
    penalty = np.zeros((k + 1, k + 1))
    penalty[1:, 1:] = np.eye(k) - 1.0 / k
    unit = float(np.trace(gram[1:, 1:])) / k  # makes lam comparable across spaces and latency ranges
    theta = np.linalg.lstsq(gram + lam * unit * penalty, design.T @ np.ones(n), rcond=None)[0]
    return theta if np.all(theta[1:] > 0) else None


def _loo_rmspe(blocks: np.ndarray, y: np.ndarray, lam: float) -> float:
    """Leave-one-out RMSPE of the model with penalty ``lam`` (inf when a fold has a scale <= 0)."""
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        theta = _solve(blocks[keep], y[keep], lam)
        if theta is None:
            return math.inf
        errors.append((theta[0] + blocks[i] @ theta[1:] - y[i]) / y[i])
    return float(np.sqrt(np.mean(np.square(errors))))


def fit_slot_calibration(fixed_ms: float, blocks_ms, measured_ms, grid=RIDGE_GRID) -> Calibration:
    """Per-slot scales shrunk toward one scale, the penalty chosen by leave-one-out RMSPE.

    Args:
        fixed_ms: uncalibrated stem + head latency (the same in every network).
        blocks_ms: ``[n, slots]`` uncalibrated latency of each network's block in each slot.
        measured_ms: the ``n`` networks measured whole.
        grid: penalties to try (``inf`` is the single-scale model; it is always tried).

    Returns:
        The chosen :class:`Calibration`, with ``cv`` holding every penalty's LOO RMSPE. With fewer than
        ``MIN_PER_PARAM`` networks per parameter only the single-scale model is fitted.
    """
    x, y = np.asarray(blocks_ms, float), np.asarray(measured_ms, float)
    single = fit_calibration(fixed_ms + x.sum(axis=1), y)
    grid = sorted({*grid, math.inf}, reverse=True)  # largest penalty first: ties keep the simpler model
    if len(y) < MIN_PER_PARAM * (x.shape[1] + 1):
        grid = [math.inf]
    cv = {lam: _loo_rmspe(x, y, lam) if len(y) > 2 else math.nan for lam in grid}
    best = min(grid, key=lambda lam: (cv[lam] if math.isfinite(cv[lam]) else math.inf))
    theta = None if math.isinf(best) else _solve(x, y, best)
    cv_out = {str(lam): (round(v, 6) if math.isfinite(v) else None) for lam, v in cv.items()}
    if theta is None:
        return Calibration(single.intercept_ms, single.scale, single.n, cv=cv_out)
    scales = tuple(float(v) for v in theta[1:])
    scale = float(np.mean(scales))
    return Calibration(float(theta[0]) - scale * fixed_ms, scale, len(y), slot_scales=scales, ridge=float(best),
                       cv=cv_out)
