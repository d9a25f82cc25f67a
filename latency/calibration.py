"""Calibrating a latency table's sum of parts against networks measured whole, with the model chosen by CV.

One family of models: ``measured ~ c + sum_i s_i * block_i [+ w * weights]`` (stem and head are the same
in every network, so the intercept holds them). A ridge penalty ``lam * sum_i (s_i - mean(s))^2`` shrinks
the per-slot scales toward one common scale; ``lam = inf`` is the single-scale model
``intercept + scale * sum of parts``. The optional weight term charges every million parameters of a
network's blocks ``w`` ms: a block measured alone keeps its weights in the core's cache between runs,
while a whole network that holds more weights than the cache reloads them on every run, so the sum of
parts under-predicts large networks (on the 2-core development machine, 4 MiB of L2 per core, the
residual of the sum-of-parts model correlated -0.82 with the network's weights). The term is additive
over slots, so a calibrated table stays a sum of per-slot costs. Leave-one-out error on the calibration
networks picks ``lam`` and whether the term is used; the held-out validation networks are never used to
fit or to choose.
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
    cv: dict | None = None  # leave-one-out RMSPE on the calibration networks of each model tried
    per_mparam_ms: float = 0.0  # what every million block parameters adds (ms); 0: no weight term

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
                   None if ridge is None else float(ridge), data.get("cv"), float(data.get("per_mparam_ms") or 0.0))

    @property
    def model(self) -> str:
        """In words: which calibration model this is."""
        scales = f"per-slot scales (ridge {self.ridge:g})" if self.slot_scales else "one scale"
        return f"{scales} + {self.per_mparam_ms:.4f} ms per million weights" if self.per_mparam_ms else scales


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


def _solve(blocks: np.ndarray, y: np.ndarray, lam: float, weights: np.ndarray | None = None) -> np.ndarray | None:
    """``(c, s_1..s_S, w)`` minimising relative squared error plus the shrinkage penalty (``w`` 0 without
    ``weights``); None if a scale is <= 0 or ``w`` < 0 (a network with more weights is never faster)."""
    n, k = blocks.shape
    extra = np.zeros((n, 0)) if weights is None else np.asarray(weights, float).reshape(n, 1)
    if math.isinf(lam):
        design = np.c_[np.ones(n), blocks.sum(axis=1), extra] / y[:, None]
        theta = np.linalg.lstsq(design, np.ones(n), rcond=None)[0]
        theta = np.r_[theta[0], np.full(k, theta[1]), theta[2:]]
    else:
        design = np.c_[np.ones(n), blocks, extra] / y[:, None]
        gram = design.T @ design
        penalty = np.zeros_like(gram)
        penalty[1:k + 1, 1:k + 1] = np.eye(k) - 1.0 / k
        unit = float(np.trace(gram[1:k + 1, 1:k + 1])) / k  # makes lam comparable across spaces and latency ranges
        theta = np.linalg.lstsq(gram + lam * unit * penalty, design.T @ np.ones(n), rcond=None)[0]
    if weights is None:
        theta = np.r_[theta, 0.0]
    return theta if np.all(theta[1:k + 1] > 0) and theta[-1] >= 0 else None


def _loo_rmspe(blocks: np.ndarray, y: np.ndarray, lam: float, weights: np.ndarray | None = None) -> float:
    """Leave-one-out RMSPE of one model (inf when a fold's fit is invalid, see :func:`_solve`)."""
    w = np.zeros(len(y)) if weights is None else np.asarray(weights, float)
    errors = []
    for i in range(len(y)):
        keep = np.arange(len(y)) != i
        theta = _solve(blocks[keep], y[keep], lam, None if weights is None else w[keep])
        if theta is None:
            return math.inf
        errors.append((theta[0] + blocks[i] @ theta[1:-1] + theta[-1] * w[i] - y[i]) / y[i])
    return float(np.sqrt(np.mean(np.square(errors))))


def fit_slot_calibration(fixed_ms: float, blocks_ms, measured_ms, grid=RIDGE_GRID, mparams=None) -> Calibration:
    """Per-slot scales shrunk toward one scale, with or without a weight term, chosen by leave-one-out RMSPE.

    Args:
        fixed_ms: uncalibrated stem + head latency (the same in every network).
        blocks_ms: ``[n, slots]`` uncalibrated latency of each network's block in each slot.
        measured_ms: the ``n`` networks measured whole.
        grid: penalties to try (``inf`` is the single-scale model; it is always tried).
        mparams: the ``n`` networks' block parameters in millions; None: no weight term is tried.

    Returns:
        The chosen :class:`Calibration`, with ``cv`` holding every model's LOO RMSPE (keys: the penalty,
        ``+weights`` when the model has the weight term). With fewer than ``MIN_PER_PARAM`` networks per
        parameter a model is not tried; the single-scale model without the weight term always is.
    """
    x, y = np.asarray(blocks_ms, float), np.asarray(measured_ms, float)
    single = fit_calibration(fixed_ms + x.sum(axis=1), y)
    grid = sorted({*grid, math.inf}, reverse=True)  # largest penalty first: ties keep the simpler model
    def size(lam: float, with_weights: bool) -> int:  # fitted parameters: intercept, one or S scales, w
        return 1 + (1 if math.isinf(lam) else x.shape[1]) + with_weights

    models = [(lam, w) for w in ((False, True) if mparams is not None else (False,)) for lam in grid
              if (lam, w) == (math.inf, False) or len(y) >= MIN_PER_PARAM * size(lam, w)]
    weights = None if mparams is None else np.asarray(mparams, float)
    cv = {m: _loo_rmspe(x, y, m[0], weights if m[1] else None) if len(y) > 2 else math.nan for m in models}
    best = min(models, key=lambda m: (cv[m] if math.isfinite(cv[m]) else math.inf))
    cv_out = {f"{lam}{'+weights' if w else ''}": (round(v, 6) if math.isfinite(v) else None)
              for (lam, w), v in cv.items()}
    theta = None if best == (math.inf, False) else _solve(x, y, best[0], weights if best[1] else None)
    if theta is None:
        return Calibration(single.intercept_ms, single.scale, single.n, cv=cv_out)
    scales, w = tuple(float(v) for v in theta[1:-1]), float(theta[-1])
    scale = float(np.mean(scales))
    per_slot = not math.isinf(best[0])
    return Calibration(float(theta[0]) - scale * fixed_ms, scale, len(y), slot_scales=scales if per_slot else (),
                       ridge=float(best[0]) if per_slot else None, cv=cv_out, per_mparam_ms=w)
