"""What search asks for: a latency estimator, and its live and corrected implementations.

Three estimators answer the same questions (``predict``, ``predict_many``, ``predict_genomes``), so a
searcher or a stage takes one object: a :class:`~latency.table.LatencyTable` (a calibrated sum of
measured parts, fast), a :class:`MeasuredLatency` (each architecture measured on the device, cached),
or a :class:`CorrectedLatency` (a table whose predictions measurements replace and correct).
"""

from __future__ import annotations

import csv
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from common.fileio import atomic_path

if TYPE_CHECKING:
    from .table import LatencyTable

MEASURED_COLUMNS = ("key", "measured_ms", "measured_ms_ci_low", "measured_ms_ci_high", "noisy")


class LatencyEstimator(ABC):
    """Latency of architectures on one device, in ms. Subclasses implement :meth:`predict`.

    Attributes:
        device: the latency profile the estimates are for (see ``latency devices``).
    """

    device: str

    @abstractmethod
    def predict(self, arch: Any) -> float:
        """Latency of ``arch`` (a ``blocks.Arch``) in ms."""

    def predict_many(self, archs) -> np.ndarray:
        """Latencies of several architectures (ms)."""
        return np.array([self.predict(a) for a in archs], dtype=float)

    def predict_genomes(self, genomes: np.ndarray, space: Any) -> np.ndarray:
        """Latencies of integer genomes of ``space`` (rows are candidates), in ms: the search objective."""
        return self.predict_many(space.decode(g) for g in np.atleast_2d(genomes))


class MeasuredLatency(LatencyEstimator):
    """Latency measured on the device for every new architecture, cached by ``arch.key`` in a CSV file.

    The file is rewritten atomically after each measurement, so a killed search resumes without
    measuring anything twice.

    Args:
        device: the latency profile to measure on.
        cache_file: the CSV of measurements (``key``, ``measured_ms``, its CI, ``noisy``).
        export_dir: the export cache of the measured models (default: ``exports/`` beside ``cache_file``).
        fresh_processes: the processes :meth:`measure_fresh` measures a model in.
    """

    def __init__(self, device: str, cache_file: Path | str, export_dir: Path | str | None = None,
                 fresh_processes: int = 1) -> None:
        self.device, self.cache_file, self.fresh_processes = device, Path(cache_file), fresh_processes
        self.export_dir = Path(export_dir) if export_dir is not None else self.cache_file.parent / "exports"
        self.cache: dict[str, dict[str, Any]] = _read_measured(self.cache_file)

    def known(self, arch: Any) -> dict[str, Any] | None:
        """The cached measurement of ``arch`` (``measured_ms``, its CI, ``noisy``), or None; never measures."""
        row = self.cache.get(arch.key)
        return None if row is None else {k: v for k, v in row.items() if k != "key"}

    def measure(self, arch: Any) -> dict[str, Any]:
        """``measured_ms`` with its confidence interval and noisy flag for ``arch``, measured once."""
        if arch.key not in self.cache:
            from .measure import measure_model

            result = measure_model(arch, self.device, cache_dir=self.export_dir)
            self.cache[arch.key] = {"key": arch.key, "measured_ms": result.median_ms,
                                    "measured_ms_ci_low": result.ci_low_ms, "measured_ms_ci_high": result.ci_high_ms,
                                    "noisy": bool(result.noisy)}
            self._flush()
        return self.known(arch)

    @property
    def fresh_file(self) -> Path:
        """The cache of fresh-process measurements (:meth:`measure_fresh`), beside ``cache_file``; one file per
        process count (``_fresh_x3`` for three), so a figure of one process never stands for three."""
        count = "" if self.fresh_processes == 1 else f"_x{self.fresh_processes}"
        return self.cache_file.with_name(f"{self.cache_file.stem}_fresh{count}{self.cache_file.suffix}")

    def measure_fresh(self, arch: Any) -> dict[str, Any]:
        """``measured_ms`` with its CI for ``arch`` measured again in ``fresh_processes`` new Python processes
        (``latency bench``), as a user re-checks a model: more samples of the machine's state. With several, the
        median of their medians and a CI from the lowest to the highest end of theirs
        (``measure_in_fresh_processes``). Cached by key in :attr:`fresh_file`, so a resumed search does not
        measure twice."""
        fresh = _read_measured(self.fresh_file)
        if arch.key not in fresh:
            from .export import export_onnx
            from .measure import measure_in_fresh_processes

            result = measure_in_fresh_processes(export_onnx(arch, cache_dir=self.export_dir), self.device,
                                                self.fresh_processes)
            fresh[arch.key] = {"key": arch.key, "measured_ms": result["median_ms"],
                               "measured_ms_ci_low": result["ci_low_ms"], "measured_ms_ci_high": result["ci_high_ms"],
                               "noisy": bool(result["noisy"])}
            _write_measured(self.fresh_file, fresh)
        return {k: v for k, v in fresh[arch.key].items() if k != "key"}

    def predict(self, arch: Any) -> float:
        """Measured median latency of ``arch`` (measured on first use)."""
        return float(self.measure(arch)["measured_ms"])

    def _flush(self) -> None:
        _write_measured(self.cache_file, self.cache)


def _write_measured(path: Path, rows: dict[str, dict[str, Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=MEASURED_COLUMNS)
        writer.writeheader()
        writer.writerows(rows.values())


def _read_measured(path: Path) -> dict[str, dict[str, Any]]:
    """The rows of a measurement cache by key (empty when there is no file)."""
    if not path.is_file():
        return {}
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    floats = [c for c in MEASURED_COLUMNS if c.startswith("measured_ms")]
    return {r["key"]: {"key": r["key"], **{c: float(r[c]) for c in floats}, "noisy": r["noisy"] == "True"}
            for r in rows}


class CorrectedLatency(LatencyEstimator):
    """A latency table corrected by measurements.

    An architecture measured on the device (through :meth:`measure`, or already in the measurement
    cache) has its measured latency; any other gets the table's prediction times the median ratio
    measured / predicted of the architectures measured through this object (1 until one is), which
    removes a drift of the whole device since the table was built.

    Args:
        table: the device's latency table.
        measured: the device's measurements (same device as the table).
    """

    def __init__(self, table: LatencyTable, measured: MeasuredLatency) -> None:
        if table.device != measured.device:
            raise ValueError(f"the table is for device {table.device!r} but the measurements are for "
                             f"{measured.device!r}; correct a table with measurements of its own device")
        self.table, self.measured, self.device = table, measured, table.device
        self._ratios: list[float] = []

    @property
    def correction(self) -> float:
        """The factor applied to the table's predictions of unmeasured architectures."""
        return float(np.median(self._ratios)) if self._ratios else 1.0

    def measure(self, archs) -> list[float]:
        """Measures ``archs`` on the device (cached) and refits the correction; returns their latencies."""
        out = []
        for arch in archs:
            ms = self.measured.predict(arch)
            self._ratios.append(ms / self.table.predict(arch))
            out.append(ms)
        return out

    def predict(self, arch: Any) -> float:
        """The measured latency of ``arch`` when known, else the corrected table prediction (ms)."""
        known = self.measured.known(arch)
        if known is not None and not math.isnan(known["measured_ms"]):
            return float(known["measured_ms"])
        return self.correction * self.table.predict(arch)

    def predict_genomes(self, genomes: np.ndarray, space: Any) -> np.ndarray:
        """Vectorised through the table; rows of measured architectures get their measurement."""
        g = np.atleast_2d(genomes)
        out = self.correction * self.table.predict_genomes(g, space)
        if self.measured.cache:
            for row, genome in enumerate(g):
                known = self.measured.known(space.decode(genome))
                if known is not None and not math.isnan(known["measured_ms"]):
                    out[row] = known["measured_ms"]
        return out
