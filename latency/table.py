"""``LatencyTable``: per-block latencies of one device and space, a calibrated sum and its own error."""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import atomic_write_json
from .errors import FingerprintMismatchError, LatencyError

SCHEMA_VERSION = 1
TABLE_FILE = "table.json"


def space_signature(space: Any) -> str:
    """Hash of everything about a space that a latency table depends on (shapes and every option)."""
    data = {"name": space.name, "input": [space.in_channels, space.input_size], "classes": space.num_classes,
            "stem": [str(s) for s in space.stem], "head": repr(space.head),
            "slots": [[list(space.slot_input_shape(i)), [str(o) for o in space.options(i)]]
                      for i in range(space.num_slots)]}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def fit_calibration(sums_ms, measured_ms) -> dict:
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
    return {"intercept_ms": float(intercept), "scale": float(scale), "n": int(s.size)}


def error_metrics(predicted_ms, measured_ms) -> dict:
    """RMSPE, RMSE, shares within +-5% / +-10%, worst error and Spearman rank correlation."""
    from scipy.stats import spearmanr

    p, y = np.asarray(predicted_ms, float), np.asarray(measured_ms, float)
    rel = (p - y) / y
    rho = float(spearmanr(p, y).statistic) if p.size > 2 else math.nan
    return {"n": int(p.size), "rmspe": float(np.sqrt(np.mean(rel**2))),
            "rmse_ms": float(np.sqrt(np.mean((p - y) ** 2))),
            "within_5": float(np.mean(np.abs(rel) <= 0.05)), "within_10": float(np.mean(np.abs(rel) <= 0.10)),
            "max_abs_pct": float(np.max(np.abs(rel)) * 100), "spearman": rho}


class LatencyTable:
    """Latency of the stem, the head and every (slot, option) of a space on one device.

    ``predict(arch) = intercept + scale * (stem + head + sum of the arch's block latencies)``.
    Build one with :func:`latency.build_latency_table`; load one with :meth:`load`.
    """

    def __init__(self, data: dict, path: Path | None = None):
        self.data = data
        self.path = path
        self._by_key = [dict(zip(s["options"], s["ms"])) for s in data["slots"]]
        self._luts: tuple[str, list] | None = None
        self.measurable = True  # False when the table was accepted for a device not reachable here
        self.note: str | None = None  # one line saying why the table was accepted without a comparison

    # ---- facts -------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Profile name the table was measured with."""
        return self.data["device"]["name"]

    @property
    def fingerprint(self) -> dict:
        """Fingerprint of the device the table was measured on."""
        return self.data["fingerprint"]

    @property
    def calibration(self) -> dict:
        """``{"intercept_ms", "scale", "n"}`` of the linear calibration."""
        return self.data["calibration"]

    @property
    def validation(self) -> dict:
        """Error on held-out measured architectures: rmspe, within_5, within_10, spearman, noise, ..."""
        return self.data["validation"]

    # ---- prediction --------------------------------------------------------------------------
    def part_sum(self, arch: Any) -> float:
        """Uncalibrated sum of the stem, head and block latencies of ``arch`` (ms)."""
        if [str(s) for s in arch.stem] != self.data["stem"]:
            raise LatencyError(f"architecture stem {[str(s) for s in arch.stem]} is not the table's "
                               f"{self.data['stem']} (space {self.data['space']!r})")
        if len(arch.blocks) != len(self._by_key):
            raise LatencyError(f"architecture has {len(arch.blocks)} blocks; the table has {len(self._by_key)} slots")
        total = self.data["stem_ms"] + self.data["head_ms"]
        for i, spec in enumerate(arch.blocks):
            ms = self._by_key[i].get(str(spec))
            if ms is None:
                raise LatencyError(f"slot {i}: block {spec} is not in the latency table "
                                   f"of space {self.data['space']!r}")
            total += ms
        return float(total)

    def calibrate(self, part_sum_ms):
        """Apply the calibration to uncalibrated sums (float or array)."""
        cal = self.calibration
        return cal["intercept_ms"] + cal["scale"] * part_sum_ms

    def predict(self, arch: Any) -> float:
        """Predicted latency of ``arch`` in ms."""
        return float(self.calibrate(self.part_sum(arch)))

    def predict_many(self, archs) -> np.ndarray:
        """Predicted latencies of several architectures (ms)."""
        return np.array([self.predict(a) for a in archs], dtype=float)

    def _genome_luts(self, space: Any) -> list:
        """Per slot: gene positions, offsets, mixed-radix strides and a lookup array of latencies."""
        sig = space_signature(space)
        if sig != self.data["space_signature"]:
            raise LatencyError(f"space {space.name!r} (signature {sig}) is not the space this table was built "
                               f"for ({self.data['space']!r}, signature {self.data['space_signature']})")
        if self._luts is not None and self._luts[0] == sig:
            return self._luts[1]
        lower, upper = space.genome_bounds()
        base = space.sample(0)
        luts = []
        for i in range(len(self.data["slots"])):
            opts = space.options(i)
            genomes = np.stack([space.encode(base.with_blocks(base.blocks[:i] + (o,) + base.blocks[i + 1:]))
                                for o in opts])
            pos = np.flatnonzero((genomes != genomes[0]).any(axis=0))
            dims = upper[pos] - lower[pos] + 1
            strides = np.cumprod(np.concatenate([[1], dims[::-1][:-1]]))[::-1].astype(np.int64)
            lut = np.full(int(np.prod(dims)), np.nan)
            lut[(genomes[:, pos] - lower[pos]) @ strides] = [self._by_key[i][str(o)] for o in opts]
            luts.append((pos, lower[pos], strides, lut))
        self._luts = (sig, luts)
        return luts

    def predict_genomes(self, genomes: np.ndarray, space: Any) -> np.ndarray:
        """Vectorised prediction for integer genomes of ``space`` (rows are candidates), in ms."""
        g = np.asarray(genomes, dtype=np.int64)
        if g.ndim == 1:
            g = g[None, :]
        lower, upper = space.genome_bounds()
        if g.ndim != 2 or g.shape[1] != lower.size:
            raise LatencyError(f"genomes must have shape (n, {lower.size}) for space {space.name!r}, got {g.shape}")
        if np.any(g < lower) or np.any(g > upper):
            raise LatencyError(f"genome values out of the bounds of space {space.name!r}")
        total = np.full(g.shape[0], self.data["stem_ms"] + self.data["head_ms"])
        for pos, offset, strides, lut in self._genome_luts(space):
            total = total + lut[(g[:, pos] - offset) @ strides]
        missing = np.flatnonzero(np.isnan(total))
        for row in missing:  # genomes the lookup cannot index (not produced by encode): decode them
            total[row] = self.part_sum(space.decode(g[row]))
        return self.calibrate(total)

    # ---- files -------------------------------------------------------------------------------
    def save(self, path: Path | str) -> Path:
        """Write the table as JSON atomically (a directory gets ``table.json``)."""
        path = Path(path)
        target = path / TABLE_FILE if path.suffix != ".json" else path
        atomic_write_json(target, self.data)
        self.path = target
        return target

    @classmethod
    def load(cls, path: Path | str, device: str | None = None, force: bool = False) -> LatencyTable:
        """Load a table and check it belongs to the device in use.

        Args:
            path: a table JSON file or the folder holding ``table.json``.
            device: the profile to check against (default: the table's own profile).
            force: warn instead of failing when the fingerprint differs.

        Raises:
            FingerprintMismatchError: the current device's fingerprint differs (unless ``force``).
            LatencyError: a missing or unreadable file.
        """
        path = Path(path)
        target = path / TABLE_FILE if path.is_dir() else path
        try:
            data = json.loads(target.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise LatencyError(f"cannot read latency table {target}: {err}") from None
        if data.get("schema_version") != SCHEMA_VERSION:
            raise LatencyError(f"{target}: schema_version {data.get('schema_version')} != {SCHEMA_VERSION}")
        table = cls(data, target)
        table.check_device(device or table.device, force=force)
        return table

    def check_device(self, device: str, force: bool = False) -> str | None:
        """Check the table belongs to ``device`` here, or accept it as recorded when the device is elsewhere.

        A table built on the device's own machine and copied here is accepted when ``device`` cannot be
        reached from this machine: its recorded fingerprint is then all there is to go by (it is never
        compared with the empty fingerprint of an absent device). ``self.note`` then says so in one line
        and ``self.measurable`` is False.

        Returns:
            The note, or None when the table was checked against the device here.

        Raises:
            FingerprintMismatchError: another device's table, or a different fingerprint here (unless ``force``).
        """
        from .devices import unreachable_reason
        from .measure import resolve_profile

        reason = unreachable_reason(device)
        if reason is not None:
            return self._accept_remote(device, reason)
        current = resolve_profile(device)[1].fingerprint()
        self.measurable, self.note = True, None
        diff = sorted(k for k in set(current) | set(self.fingerprint) if current.get(k) != self.fingerprint.get(k))
        if not diff:
            return None
        msg = (f"latency table {self.path} was measured on {self.device!r} with a different device fingerprint "
               f"than {device!r} here (differs in {diff}); rebuild it on this machine "
               f"(`latency table --device {device} --out {self.path.parent if self.path else 'DIR'}`) "
               "or accept it with `donna search --force-table` (LatencyTable.load(..., force=True))")
        if not force:
            raise FingerprintMismatchError(msg)
        warnings.warn(msg, stacklevel=2)
        return None

    def _accept_remote(self, device: str, reason: str) -> str:
        name = getattr(device, "name", device)
        if self.device != name:
            raise FingerprintMismatchError(f"latency table {self.path} was built for device {self.device!r}, "
                                           f"not {name!r}; copy the {name} table there")
        recorded = {k: v for k, v in self.fingerprint.items() if k != "backend" and v not in (None, "", [], {})}
        if not recorded:
            raise FingerprintMismatchError(f"latency table {self.path} records no device fingerprint (a build "
                                           f"that never measured?); rebuild it on the {name} machine")
        where = ", ".join(f"{k}={v}" for k, v in recorded.items() if isinstance(v, str))[:160]
        self.measurable = False
        self.note = (f"device {name!r} is not reachable here, so its table {self.path} is used as recorded "
                     f"on its own machine ({where or 'fingerprint recorded'}); nothing is measured here")
        return self.note
