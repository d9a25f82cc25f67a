"""The measurement protocol every backend shares: warm-up until stable, then adaptive sampling."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields

import numpy as np

from .errors import DeviceDisconnectedError, LatencyError
from .stats import NoiseRules, summarize

Runner = Callable[[int], Sequence[float]]
"""Runs the prepared model ``n`` times and returns the ``n`` per-run latencies in milliseconds."""


@dataclass(frozen=True)
class ProtocolConfig:
    """How long and how often to run; a device profile overrides any field under ``"protocol"``."""

    warmup_window: int = 10  # runs per warm-up window
    warmup_tol: float = 0.05  # warm-up ends when two consecutive window medians differ by less than this
    warmup_max_s: float = 1.0  # warm-up gives up (and flags the result) after this long
    min_samples: int = 30  # never fewer samples than this
    max_samples: int = 20000  # never more samples than this
    min_time_s: float = 0.1  # measure at least this long (trtexec: 3 s)
    max_time_s: float = 10.0  # stop after this long even when the CI is wide (the result is flagged)
    batch: int = 10  # smallest number of runs asked of the backend at once
    target_ci: float = 0.02  # stop when the 95% CI of the median is within +-target_ci of it
    max_cov: float | None = 0.25  # see stats.NoiseRules (None: CoV reported but not used for the flag)
    max_robust_cov: float = 0.05  # see stats.NoiseRules
    max_spike_share: float = 0.05  # see stats.NoiseRules

    @classmethod
    def from_dict(cls, data: dict | None) -> ProtocolConfig:
        """Build from a dict, refusing unknown keys with the list of known ones."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LatencyError(f"unknown protocol option(s) {unknown}; known: {sorted(known)}")
        return cls(**data)

    def replace(self, **changes) -> ProtocolConfig:
        """Copy with some fields changed (unknown names raise)."""
        return ProtocolConfig.from_dict({**asdict(self), **changes})

    def noise_rules(self) -> NoiseRules:
        """The noisy-flag thresholds implied by this protocol."""
        return NoiseRules(target_ci=self.target_ci, max_cov=self.max_cov,
                          max_robust_cov=self.max_robust_cov, max_spike_share=self.max_spike_share,
                          min_samples=self.min_samples)


@dataclass
class ProtocolRun:
    """Raw outcome of one protocol run."""

    samples_ms: list[float]
    warmup_ms: list[float] = field(default_factory=list)
    warmup_stable: bool = True
    stop_reason: str = ""
    measure_s: float = 0.0


def _warm_up(runner: Runner, cfg: ProtocolConfig) -> tuple[list[float], bool]:
    """Run windows until two consecutive window medians agree within ``warmup_tol``."""
    warm: list[float] = []
    previous = None
    start = time.perf_counter()
    while True:
        window = [float(v) for v in runner(cfg.warmup_window)]
        warm.extend(window)
        med = float(np.median(window))
        if previous is not None and abs(med - previous) <= cfg.warmup_tol * previous:
            return warm, True
        if time.perf_counter() - start > cfg.warmup_max_s:
            return warm, False
        previous = med


def _stop_reason(samples: list[float], elapsed: float, cfg: ProtocolConfig) -> str:
    """Why sampling should stop now, or an empty string to go on."""
    n = len(samples)
    if n >= cfg.max_samples:
        return f"max samples ({cfg.max_samples})"
    if elapsed >= cfg.max_time_s:
        return f"time cap ({cfg.max_time_s:g} s)"
    if n < cfg.min_samples or elapsed < cfg.min_time_s:
        return ""
    if summarize(samples).ci_rel_halfwidth <= cfg.target_ci:
        return f"CI of median within +-{cfg.target_ci:.1%}"
    return ""


def run_protocol(runner: Runner, cfg: ProtocolConfig | None = None) -> ProtocolRun:
    """Warm up, then sample in growing batches until the stop rule fires.

    Args:
        runner: the prepared model; ``runner(n)`` returns ``n`` latencies in ms.
        cfg: protocol settings (defaults when None).

    Returns:
        The raw samples and how the run went.

    Raises:
        DeviceDisconnectedError: the device went away; ``partial_samples_ms`` holds what was measured.
    """
    cfg = cfg or ProtocolConfig()
    samples: list[float] = []
    try:
        warm, stable = _warm_up(runner, cfg)
        start = time.perf_counter()
        while True:
            elapsed = time.perf_counter() - start
            reason = _stop_reason(samples, elapsed, cfg)
            if reason:
                return ProtocolRun(samples, warm, stable, reason, elapsed)
            want = max(cfg.batch, len(samples) // 4)
            want = min(want, cfg.max_samples - len(samples))
            samples.extend(float(v) for v in runner(want))
    except DeviceDisconnectedError as err:
        err.partial_samples_ms = samples
        raise
