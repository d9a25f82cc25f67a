"""``LatencyTable``: per-block latencies of one device and space, a calibrated sum and its own error."""

from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import atomic_write_json

from .calibration import Calibration, fit_calibration, fit_slot_calibration
from .errors import FingerprintMismatchError, LatencyError
from .estimator import LatencyEstimator

__all__ = ["Calibration", "LatencyTable", "SlotLatencies", "error_metrics", "fit_calibration", "fit_slot_calibration",
           "space_signature", "validation_check"]

SCHEMA_VERSION = 3  # 2: per-slot calibration scales and build conditions; 3: options' parameters, weight term
READABLE_SCHEMAS = (1, 2, 3)  # older files load with no weight term
BOUNDS = {"within_5": 0.90, "within_10": 1.0}  # the held-out shares a table should meet (issue 13)
TABLE_FILE = "table.json"


def space_signature(space: Any) -> str:
    """Hash of everything about a space that a latency table depends on (shapes and every option)."""
    data = {"name": space.name, "input": [space.in_channels, space.input_size], "classes": space.num_classes,
            "stem": [str(s) for s in space.stem], "head": repr(space.head),
            "slots": [[list(space.slot_input_shape(i)), [str(o) for o in space.options(i)]]
                      for i in range(space.num_slots)]}
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


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


def validation_check(table: Any) -> tuple[str, str | None]:
    """One line stating a table's held-out error and build conditions, and a warning when it misses ``BOUNDS``.

    Returns:
        ``(line, warning)``; ``warning`` is None when the table meets the bounds, else it says which
        share is short and what to do.
    """
    v, cond = table.validation or {}, table.conditions or {}
    if not v.get("n"):
        return (f"latency table {table.path or ''}: no held-out validation (built with n_validation=0)",
                "the latency table's error is unknown; rebuild it with validation networks (--n-validation 30)")
    load = cond.get("loadavg")
    where = f", load average {load['min']:.2f}-{load['max']:.2f}" if load else ""
    def fmt(key: str, spec: str) -> str:
        return "n/a" if v.get(key) is None else format(v[key], spec)

    line = (f"latency table validation on {v['n']} held-out networks: within +-5% {fmt('within_5', '.0%')}, "
            f"within +-10% {fmt('within_10', '.0%')}, RMSPE {fmt('rmspe', '.1%')}, worst {fmt('max_abs_pct', '.1f')}%, "
            f"Spearman {fmt('spearman', '.3f')}; repeat noise {fmt('noise', '.1%')}{where}; "
            f"calibration: {table.calibration.model}")
    short = [f"{'no share recorded' if v.get(k) is None else format(v[k], '.0%')} within +-{k.split('_')[1]}% "
             f"(< {b:.0%})" for k, b in BOUNDS.items() if v.get(k) is None or v[k] < b]
    if not short:
        return line, None
    return line, (f"warning: the latency table misses its accuracy bounds ({', '.join(short)}); predicted "
                  "latencies may be off by more than that, so the front is measured on the device. Rebuild it "
                  "when the machine is quieter (`latency table --out DIR`, a new DIR) or with more --rounds")


@dataclass(frozen=True)
class SlotLatencies:
    """Measured latency of every option of one slot, at the slot's input shape."""

    input_shape: tuple[int, ...]  # (C, H, W) entering the slot
    options: tuple[str, ...]  # block strings, in the space's option order
    ms: tuple[float, ...]  # median latency of each option
    noisy: tuple[bool, ...]  # whether each measurement was flagged noisy
    mparams: tuple[float, ...] = ()  # parameters of each option in millions (empty in tables built before them)

    @cached_property
    def by_option(self) -> dict[str, float]:
        """Latency of each option by its block string."""
        return dict(zip(self.options, self.ms))

    @cached_property
    def mparams_by_option(self) -> dict[str, float]:
        """Parameters (millions) of each option by its block string; empty for an older table."""
        return dict(zip(self.options, self.mparams))

    @classmethod
    def from_dict(cls, data: dict) -> SlotLatencies:
        """Reads one entry of a table file's ``slots``."""
        n = len(data["options"])
        return cls(tuple(data["input_shape"]), tuple(data["options"]), tuple(map(float, data["ms"])),
                   tuple(map(bool, data.get("noisy") or [False] * n)), tuple(map(float, data.get("mparams") or ())))


@dataclass(frozen=True)
class LatencyTable(LatencyEstimator):
    """Latency of the stem, the head and every (slot, option) of a space on one device; immutable.

    ``predict(arch) = intercept + scale * (stem + head) + sum_i (slot_scale_i * block_i + w * mparams_i)`` (one
    scale for every slot unless the calibration chose per-slot scales; ``w`` 0 unless it chose the weight
    term; see :mod:`latency.calibration`).
    Build one with :func:`latency.build_latency_table`; load one with :meth:`load`.
    """

    profile: dict  # the device profile it was measured with (``device`` in the file)
    fingerprint: dict  # fingerprint of the device it was measured on
    space_name: str  # the space it was built for (``space`` in the file)
    space_signature: str  # see :func:`space_signature`
    protocol: dict  # the measurement protocol's settings
    stem: tuple[str, ...]  # block strings of the fixed stem
    stem_ms: float
    head_ms: float
    slots: tuple[SlotLatencies, ...]
    calibration: Calibration = Calibration()
    validation: dict = field(default_factory=dict)  # error on held-out architectures (see ``validation``)
    created: str = ""  # when it was built
    conditions: dict = field(default_factory=dict)  # how the build ran: load average, rounds, canary (see build)
    path: Path | None = field(default=None, compare=False)  # the file it was loaded from or saved to
    note: str | None = field(default=None, compare=False)  # why it was accepted without a comparison here
    _luts: dict = field(default_factory=dict, init=False, repr=False, compare=False)  # genome lookups by space

    # ---- facts -------------------------------------------------------------------------------
    @property
    def device(self) -> str:
        """Profile name the table was measured with."""
        return self.profile["name"]

    @property
    def measurable(self) -> bool:
        """False when the table was accepted for a device not reachable here (``note`` says so)."""
        return self.note is None

    @property
    def fixed_ms(self) -> float:
        """Uncalibrated latency of the parts every architecture has: the stem and the head."""
        return self.stem_ms + self.head_ms

    def block_ms(self, slot: int, spec: Any) -> float:
        """Uncalibrated latency of block ``spec`` in slot ``slot`` (ms).

        Raises:
            LatencyError: the block is not in the table.
        """
        ms = self.slots[slot].by_option.get(str(spec))
        if ms is None:
            raise LatencyError(f"slot {slot}: block {spec} is not in the latency table of space {self.space_name!r}; "
                               "build the table for this space")
        return ms

    # ---- prediction --------------------------------------------------------------------------
    def part_sum(self, arch: Any) -> float:
        """Uncalibrated sum of the stem, head and block latencies of ``arch`` (ms)."""
        if tuple(str(s) for s in arch.stem) != self.stem:
            raise LatencyError(f"architecture stem {[str(s) for s in arch.stem]} is not the table's "
                               f"{list(self.stem)} (space {self.space_name!r})")
        if len(arch.blocks) != len(self.slots):
            raise LatencyError(f"architecture has {len(arch.blocks)} blocks; the table has {len(self.slots)} slots")
        return float(self.fixed_ms + sum(self.block_ms(i, spec) for i, spec in enumerate(arch.blocks)))

    def block_mparams(self, slot: int, spec: Any) -> float:
        """Parameters of block ``spec`` in slot ``slot`` in millions (0 in a table built before they were kept)."""
        return self.slots[slot].mparams_by_option.get(str(spec), 0.0)

    def calibrated_block_ms(self, slot: int, spec: Any) -> float:
        """What block ``spec`` in slot ``slot`` adds to a prediction (ms): its latency times its slot's scale,
        plus the calibration's charge for its weights."""
        cal = self.calibration
        return cal.slot_scale(slot) * self.block_ms(slot, spec) + cal.per_mparam_ms * self.block_mparams(slot, spec)

    @property
    def calibrated_fixed_ms(self) -> float:
        """What every prediction starts from (ms): the intercept plus the scaled stem and head."""
        return float(self.calibration.apply(self.fixed_ms))

    def predict(self, arch: Any) -> float:
        """Predicted latency of ``arch`` in ms."""
        self.part_sum(arch)  # checks the stem and the number of blocks
        return float(self.calibrated_fixed_ms + sum(self.calibrated_block_ms(i, b) for i, b in enumerate(arch.blocks)))

    def _genome_luts(self, space: Any) -> list:
        """Per slot: gene positions, offsets, mixed-radix strides and a lookup array of calibrated block costs."""
        sig = space_signature(space)
        if sig != self.space_signature:
            raise LatencyError(f"space {space.name!r} (signature {sig}) is not the space this table was built "
                               f"for ({self.space_name!r}, signature {self.space_signature})")
        if sig in self._luts:
            return self._luts[sig]
        lower, upper = space.genome_bounds()
        base = space.sample(0)
        luts = []
        for i in range(len(self.slots)):
            opts = space.options(i)
            genomes = np.stack([space.encode(base.with_blocks(base.blocks[:i] + (o,) + base.blocks[i + 1:]))
                                for o in opts])
            pos = np.flatnonzero((genomes != genomes[0]).any(axis=0))
            dims = upper[pos] - lower[pos] + 1
            strides = np.cumprod(np.concatenate([[1], dims[::-1][:-1]]))[::-1].astype(np.int64)
            lut = np.full(int(np.prod(dims)), np.nan)
            lut[(genomes[:, pos] - lower[pos]) @ strides] = [self.calibrated_block_ms(i, o) for o in opts]
            luts.append((pos, lower[pos], strides, lut))
        self._luts[sig] = luts  # a cache of values derived from the frozen fields
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
        total = np.full(g.shape[0], self.calibrated_fixed_ms)
        for pos, offset, strides, lut in self._genome_luts(space):
            total = total + lut[(g[:, pos] - offset) @ strides]
        missing = np.flatnonzero(np.isnan(total))
        for row in missing:  # genomes the lookup cannot index (not produced by encode): decode them
            total[row] = self.predict(space.decode(g[row]))
        return total

    # ---- files -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON form of the table (what :meth:`save` writes)."""
        return {"schema_version": SCHEMA_VERSION, "device": copy.deepcopy(self.profile),
                "fingerprint": copy.deepcopy(self.fingerprint), "space": self.space_name,
                "space_signature": self.space_signature, "protocol": copy.deepcopy(self.protocol),
                "stem": list(self.stem), "stem_ms": self.stem_ms, "head_ms": self.head_ms,
                "slots": [asdict(slot) for slot in self.slots], "created": self.created,
                "calibration": asdict(self.calibration), "validation": copy.deepcopy(self.validation),
                "conditions": copy.deepcopy(self.conditions)}

    @classmethod
    def from_dict(cls, data: dict, path: Path | None = None) -> LatencyTable:
        """Reads the JSON form of a table.

        Raises:
            LatencyError: an unknown schema version, or a field is missing or malformed.
        """
        if data.get("schema_version") not in READABLE_SCHEMAS:
            raise LatencyError(f"{path or 'latency table'}: schema_version {data.get('schema_version')} is not one "
                               f"this version reads ({', '.join(map(str, READABLE_SCHEMAS))}); rebuild it with "
                               "`latency table` (or update donna-nas)")
        try:
            table = cls(profile=data["device"], fingerprint=data["fingerprint"], space_name=data["space"],
                       space_signature=data["space_signature"], protocol=data.get("protocol") or {},
                       stem=tuple(data["stem"]), stem_ms=float(data["stem_ms"]), head_ms=float(data["head_ms"]),
                       slots=tuple(SlotLatencies.from_dict(s) for s in data["slots"]),
                       calibration=Calibration.from_dict(data["calibration"]),
                       validation=data.get("validation") or {}, created=data.get("created", ""),
                       conditions=data.get("conditions") or {}, path=path)
        except (KeyError, TypeError, ValueError) as err:
            raise LatencyError(f"{path or 'latency table'}: missing or malformed field ({type(err).__name__}: "
                               f"{err}); rebuild it with `latency table`") from None
        if table.calibration.slot_scales and len(table.calibration.slot_scales) != len(table.slots):
            raise LatencyError(f"{path or 'latency table'}: {len(table.calibration.slot_scales)} calibration "
                               f"slot scales for {len(table.slots)} slots; rebuild it with `latency table`")
        return table

    def save(self, path: Path | str) -> Path:
        """Write the table as JSON atomically (a directory gets ``table.json``) and return the file's path."""
        path = Path(path)
        target = path / TABLE_FILE if path.suffix != ".json" else path
        atomic_write_json(target, self.to_dict())
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
        table = cls.from_dict(data, target)
        return replace(table, note=table.check_device(device or table.device, force=force))

    def check_device(self, device: str, force: bool = False) -> str | None:
        """Check the table belongs to ``device`` here, or accept it as recorded when the device is elsewhere.

        A table built on the device's own machine and copied here is accepted when ``device`` cannot be
        reached from this machine: its recorded fingerprint is then all there is to go by (it is never
        compared with the empty fingerprint of an absent device).

        Returns:
            None when the table was checked against the device here, else one line saying why it was
            accepted as recorded (:meth:`load` keeps it as ``note``; ``measurable`` is then False).

        Raises:
            FingerprintMismatchError: another device's table, or a different fingerprint here (unless ``force``).
        """
        from .devices import unreachable_reason
        from .measure import resolve_profile

        reason = unreachable_reason(device)
        if reason is not None:
            return self._accept_remote(device, reason)
        current = resolve_profile(device)[1].fingerprint()
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
        return (f"device {name!r} is not reachable here, so its table {self.path} is used as recorded "
                f"on its own machine ({where or 'fingerprint recorded'}); nothing is measured here")
