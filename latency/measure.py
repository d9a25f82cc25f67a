"""``measure_model``: one model on one device through the shared protocol, as a ``LatencyResult``."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from .backends import Backend, create_backend
from .errors import BadModelError
from .export import export_onnx, is_arch, onnx_input_shape
from .measure_lock import child_env, measurement_lock
from .profiles import Profile, get_profile
from .protocol import ProtocolConfig, run_protocol
from .stats import Summary, noise_reasons, summarize


@dataclass(frozen=True, kw_only=True)
class LatencyResult(Summary):
    """One measurement: the :class:`Summary` of its samples, every raw sample and how it was obtained."""

    model: str  # file name, arch key or module class
    device: str  # profile name
    backend: str
    noisy: bool
    noisy_reason: str  # "; "-joined reasons, empty when clean
    stop_reason: str  # why sampling stopped
    samples_ms: list[float] = field(repr=False)
    env: dict = field(repr=False, default_factory=dict)

    def to_dict(self) -> dict:
        """Everything, JSON-ready (the ``latency bench --json`` object); what was measured where comes first."""
        # field by field: asdict would walk every sample (seconds over a table build's millions of samples)
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["samples_ms"], data["env"] = list(self.samples_ms), copy.deepcopy(self.env)
        return {**{k: data.pop(k) for k in ("model", "device", "backend")}, **data}

    @classmethod
    def from_dict(cls, data: dict) -> LatencyResult:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def to_row(self, samples: bool = False) -> dict:
        """A flat, pandas-friendly row: scalars, the fingerprint as ``fp_*`` columns, optionally samples."""
        row = {k: v for k, v in self.to_dict().items() if k not in ("samples_ms", "env")}
        for key, value in (self.env.get("fingerprint") or {}).items():
            row[f"fp_{key}"] = value if isinstance(value, (str, int, float, bool, type(None))) else str(value)
        row["input_shape"] = str(self.env.get("input_shape"))
        row["model_sha256"] = self.env.get("model_sha256")
        if samples:
            row["samples_ms"] = list(self.samples_ms)
        return row


def _label(obj: Any) -> str:
    if isinstance(obj, (str, Path)):
        return Path(obj).name
    if is_arch(obj):
        return f"arch:{obj.key}"
    return type(obj).__name__


def _prepare_input(obj: Any, backend: Backend, input_shape, cache_dir) -> tuple[Any, tuple[int, ...]]:
    """What the backend's ``prepare`` takes (an .onnx path or a module) and the batched input shape."""
    if backend.input_kind == "onnx":
        import onnx

        path = export_onnx(obj, input_shape, cache_dir=cache_dir)
        return path, tuple(onnx_input_shape(onnx.load(str(path), load_external_data=False)))
    if isinstance(obj, (str, Path)):
        raise BadModelError(f"backend {backend.name!r} measures an nn.Module or an Arch, not a file ({obj})")
    from .export import batch_shape

    if is_arch(obj):
        from blocks import build_model

        return build_model(obj), batch_shape(input_shape or (obj.in_channels, obj.input_size, obj.input_size))
    if input_shape is None:
        raise BadModelError("measuring an nn.Module needs input_shape, e.g. (3, 32, 32)")
    return obj, batch_shape(input_shape)


def resolve_profile(device: str | Profile, backend: Backend | None = None) -> tuple[Profile, Backend]:
    """The profile of ``device`` and a backend for it (``backend`` is reused when given)."""
    profile = get_profile(device)
    return profile, backend or create_backend(profile.backend, **profile.options)


def measure_model(model_or_arch_or_onnx_path: Any, device: str | Profile = "cpu", input_shape=None, *,
                  protocol: ProtocolConfig | dict | None = None, backend: Backend | None = None,
                  cache_dir: Path | str | None = None) -> LatencyResult:
    """Measure one model on one device.

    Args:
        model_or_arch_or_onnx_path: an ``.onnx`` path, a ``blocks.Arch`` or an ``nn.Module``.
        device: a profile name (see ``latency devices``) or a :class:`Profile`.
        input_shape: ``(C, H, W)`` or ``(N, C, H, W)``; needed for modules and dynamic ONNX inputs.
        protocol: overrides of the profile's protocol (a dict of fields or a full config).
        backend: a backend instance to reuse (keeps pushed files and device facts between models).
        cache_dir: root of the export cache.

    Returns:
        The :class:`LatencyResult` with every raw sample.

    Only one measurement runs at a time on this machine: another one (from any process) is waited
    for, with one line on stderr (``latency.measure_lock``).

    Raises:
        LatencyError: bad model or shape, unknown device, unavailable backend; a
            :class:`DeviceDisconnectedError` carries the samples taken before the device was lost.
    """
    profile, backend = resolve_profile(device, backend)
    cfg = protocol if isinstance(protocol, ProtocolConfig) else profile.protocol_config().replace(**(protocol or {}))
    target, shape = _prepare_input(model_or_arch_or_onnx_path, backend, input_shape, cache_dir)
    label = _label(model_or_arch_or_onnx_path)
    with measurement_lock(f"{label} on {profile.name}"):  # one measurement at a time on this machine
        prepared = backend.prepare(target, shape)
        try:  # a DeviceDisconnectedError propagates with the samples taken so far
            outcome = run_protocol(prepared.run, cfg)
            extra = list(prepared.finish() if prepared.finish else [])
        finally:
            if prepared.close:
                prepared.close()
    summary = summarize(outcome.samples_ms)
    reasons = noise_reasons(summary, cfg.noise_rules()) + extra
    if not outcome.warmup_stable:
        reasons.insert(0, f"warm-up did not settle within {cfg.warmup_max_s:g} s")
    env = {**prepared.env, "protocol": asdict(cfg), "warmup_runs": len(outcome.warmup_ms),
           "measure_s": round(outcome.measure_s, 4)}
    return LatencyResult(model=label, device=profile.name, backend=backend.name,
                         **summary.to_dict(),
                         noisy=bool(reasons), noisy_reason="; ".join(reasons), stop_reason=outcome.stop_reason,
                         samples_ms=list(outcome.samples_ms), env=env)


def measure_in_fresh_process(onnx_path: Path, device: str, timeout_s: float = 900.0) -> dict[str, Any]:
    """``latency bench --json`` on ``onnx_path`` in a new Python process, as a user re-checks a delivered model:
    nothing this process warmed up, allocated or left running (training threads, caches) moves the figure.

    Raises:
        RuntimeError: the measurement failed; the message carries the tool's last error line.
    """
    cmd = [sys.executable, "-m", "latency.cli", "bench", str(onnx_path), "--device", device, "--json"]
    with measurement_lock(f"{onnx_path.name} on {device} (fresh process)"):  # held here, so a wait is seen here
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False, env=child_env())
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"measuring {onnx_path} on {device} in a fresh process failed: {last}")
    return json.loads(done.stdout)[0]


def measure_in_fresh_processes(onnx_path: Path, device: str, processes: int = 3,
                               timeout_s: float = 900.0) -> dict[str, Any]:
    """``onnx_path`` measured in ``processes`` new processes, one after another (``measure_in_fresh_process``).

    One process's interval says nothing of the next one's: on a shared machine one graph measured 0.129-0.145 ms
    in three processes minutes apart, each with a CI under 1%. So the result is the median of the processes'
    medians (``median_ms``), and its interval runs from the lowest to the highest CI end of any process
    (``ci_low_ms``, ``ci_high_ms``): it spans what changed between processes. ``process_ms`` lists each median;
    ``noisy`` is true when any process flagged its measurement.

    Raises:
        ValueError: ``processes`` below 1.
        RuntimeError: a measurement failed (see ``measure_in_fresh_process``).
    """
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    runs = [measure_in_fresh_process(onnx_path, device, timeout_s) for _ in range(processes)]
    if processes == 1:
        return {**runs[0], "process_ms": [float(runs[0]["median_ms"])], "processes": 1}
    medians = [float(r["median_ms"]) for r in runs]
    reasons = [f"process {k + 1}: {r['noisy_reason']}" for k, r in enumerate(runs) if r.get("noisy_reason")]
    return {"model": runs[0].get("model"), "device": runs[0].get("device"), "backend": runs[0].get("backend"),
            "median_ms": float(np.median(medians)), "ci_low_ms": min(float(r["ci_low_ms"]) for r in runs),
            "ci_high_ms": max(float(r["ci_high_ms"]) for r in runs), "noisy": any(bool(r["noisy"]) for r in runs),
            "noisy_reason": "; ".join(reasons), "process_ms": medians, "processes": processes,
            "runs": [{k: v for k, v in r.items() if k != "samples_ms"} for r in runs]}
