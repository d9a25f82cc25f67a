"""The backend interface and its registry; a backend prepares a model and returns raw samples."""

from __future__ import annotations

import os
import platform
import sys
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from common.registry import Registry

from ..errors import BackendUnavailableError, LatencyError


@dataclass
class Prepared:
    """A model made ready on a device.

    Attributes:
        run: ``run(n)`` runs the model ``n`` times and returns the per-run latencies in ms.
        env: what was prepared and how (hashes, threads, affinity, providers, shapes ...).
        finish: called once after the measurement; returns extra noisy reasons (e.g. thermal).
        close: releases the session / engine.
        keep: references that must live as long as ``run`` (e.g. a bound input array).
    """

    run: Any
    env: dict = field(default_factory=dict)
    finish: Any = None
    close: Any = None
    keep: Any = None  # objects the runner needs alive (bound input buffers, engines)


class Backend(ABC):
    """A way to run a model on a device. Subclasses set ``name`` and ``OPTIONS`` and implement the hooks."""

    name: ClassVar[str] = ""
    input_kind: ClassVar[str] = "onnx"  # "onnx": prepare() takes an .onnx path; "module": an nn.Module
    OPTIONS: ClassVar[dict[str, Any]] = {}  # option name -> default

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise LatencyError(f"backend {self.name!r}: unknown option(s) {unknown}; known: {sorted(self.OPTIONS)}")
        self.options = {**self.OPTIONS, **options}

    @classmethod
    def unavailable_reason(cls, options: dict | None = None) -> str | None:
        """Why this backend cannot run here (None when it can). Cheap: no model is run."""
        return None

    @abstractmethod
    def fingerprint(self) -> dict:
        """What identifies the device and runtime; a latency table is only valid for an equal one."""

    @abstractmethod
    def prepare(self, model: Any, input_shape: Sequence[int]) -> Prepared:
        """Load ``model`` (an .onnx path or a module, per ``input_kind``) for input ``input_shape``."""

    def environment(self) -> dict:
        """Versions and host facts recorded with every result; backends add their own."""
        env = {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
               "backend": self.name, "options": dict(self.options), "fingerprint": self.fingerprint()}
        if hasattr(os, "sched_getaffinity"):
            env["host_affinity"] = sorted(os.sched_getaffinity(0))
        return env


BACKENDS: Registry[type[Backend]] = Registry("backend", error=LatencyError)


def register_backend(cls: type[Backend]) -> type[Backend]:
    """Class decorator adding a backend under ``cls.name``; a duplicate name is an error."""
    if not cls.name:
        raise LatencyError(f"{cls.__qualname__} has no name")
    return BACKENDS.register(cls.name, cls)


def list_backends() -> list[str]:
    """Names of the registered backends."""
    return BACKENDS.names()


def backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name``."""
    return BACKENDS.get(name)


def create_backend(name: str, **options: Any) -> Backend:
    """Instantiate a registered backend with profile options."""
    return BACKENDS.create(name, **options)


def cpu_model() -> str:
    """The host CPU's model name (from /proc/cpuinfo where readable)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_clocks() -> dict:
    """Current and maximum clock of each host core in kHz, where cpufreq is readable."""
    clocks = {}
    for cpu in range(os.cpu_count() or 0):
        base = f"/sys/devices/system/cpu/cpu{cpu}/cpufreq/"
        try:
            with open(base + "scaling_cur_freq") as cur, open(base + "cpuinfo_max_freq") as mx:
                clocks[cpu] = {"cur_khz": int(cur.read()), "max_khz": int(mx.read())}
        except (OSError, ValueError):
            continue
    return clocks


def cuda_gpu_name(device_id: int = 0) -> str | None:
    """Name of CUDA GPU ``device_id`` through CUDA's Python bindings, else torch; None when there is none."""
    from .cuda_rt import gpu_info

    try:
        info = gpu_info(device_id)
    except LatencyError:  # the bindings are not installed: ask torch
        info = None
    if info:
        return info["name"]
    try:
        import torch

        return torch.cuda.get_device_name(device_id) if torch.cuda.is_available() else None
    except Exception:  # a broken CUDA install must not break CPU work
        return None


def check_gpu_match(expected: str | None, actual: str | None, device: str = "", force: bool = False) -> str | None:
    """Refuse a GPU other than the one the profile is for; with ``force`` warn (and return the message).

    Raises:
        BackendUnavailableError: the GPU present is another model, naming both and the override.
    """
    if not expected or actual is None or expected.lower() in actual.lower():
        return None
    msg = f"device profile {device or expected!r} is for a {expected} GPU, but this machine has {actual!r}"
    if not force:
        raise BackendUnavailableError(f"{msg}; use the profile of this GPU (e.g. --device gpu), or set the profile "
                                      "option allow_other_gpu to measure here anyway")
    warnings.warn(msg, stacklevel=2)
    return msg
