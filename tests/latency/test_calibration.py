"""The calibration model choice (one scale or per-slot scales by leave-one-out CV) and the table file format."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from latency import LatencyError, LatencyTable
from latency.calibration import Calibration, fit_slot_calibration
from latency.table import SlotLatencies, validation_check

FIXED = 0.03  # stem + head


def synthetic(scales, n: int, seed: int, noise: float = 0.005, intercept: float = 0.01):
    """Block latencies of ``n`` random networks and their 'measured' latency with per-slot ``scales``."""
    rng = np.random.default_rng(seed)
    blocks = rng.uniform(0.01, 0.12, size=(n, len(scales)))
    y = intercept + FIXED * np.mean(scales) + blocks @ np.asarray(scales)
    return blocks, y * (1 + noise * rng.standard_normal(n))


def predict(cal: Calibration, blocks: np.ndarray) -> np.ndarray:
    return cal.apply(FIXED) + blocks @ np.array([cal.slot_scale(i) for i in range(blocks.shape[1])])


def test_cv_recovers_a_known_per_slot_structure():
    truth = [0.8, 1.6, 1.0, 1.3, 0.9]
    blocks, y = synthetic(truth, 40, seed=0)
    cal = fit_slot_calibration(FIXED, blocks, y)
    assert cal.slot_scales and cal.ridge is not None and math.isfinite(cal.ridge)
    np.testing.assert_allclose(cal.slot_scales, truth, rtol=0.05)
    assert cal.cv[str(cal.ridge)] < cal.cv["inf"] / 3  # the per-slot model is clearly better out of sample
    test_blocks, test_y = synthetic(truth, 200, seed=1, noise=0.0)
    assert np.max(np.abs(predict(cal, test_blocks) / test_y - 1)) < 0.02


def test_cv_keeps_one_scale_when_the_slots_share_it():
    blocks, y = synthetic([1.2] * 5, 40, seed=2, noise=0.02)
    cal = fit_slot_calibration(FIXED, blocks, y)
    scales = np.array([cal.slot_scale(i) for i in range(5)])
    assert np.ptp(scales) / scales.mean() < 0.1  # shrunk toward one scale (or exactly one)
    assert cal.scale == pytest.approx(1.2, rel=0.05)


def test_cv_finds_a_weight_term_and_leaves_it_out_when_absent():
    truth = [0.8, 1.6, 1.0, 1.3, 0.9]
    blocks, y = synthetic(truth, 40, seed=5, noise=0.003)
    weights = np.random.default_rng(6).uniform(0.1, 2.0, 40)  # millions of parameters, unrelated to the blocks
    cal = fit_slot_calibration(FIXED, blocks, y + 0.05 * weights, mparams=weights)
    assert cal.per_mparam_ms == pytest.approx(0.05, rel=0.1) and "ms per million weights" in cal.model
    np.testing.assert_allclose(cal.slot_scales, truth, rtol=0.05)
    assert min(v for k, v in cal.cv.items() if k.endswith("+weights")) < min(
        v for k, v in cal.cv.items() if not k.endswith("+weights")) / 3
    plain = fit_slot_calibration(FIXED, blocks, y, mparams=weights)  # no weight effect: at most a negligible term
    assert plain.per_mparam_ms * weights.max() < 0.01 * y.min()
    inverse = fit_slot_calibration(FIXED, blocks, y * (1 - 0.05 * weights / weights.max()), mparams=weights)
    assert inverse.per_mparam_ms == 0.0  # more weights measured faster is noise, never a negative charge


def test_few_networks_fit_one_scale_only():
    blocks, y = synthetic([0.8, 1.6, 1.0, 1.3, 0.9], 10, seed=3)
    cal = fit_slot_calibration(FIXED, blocks, y)
    assert cal.slot_scales == () and cal.model == "one scale" and list(cal.cv) == ["inf"]


def _table(mini_space, calibration: Calibration, validation: dict | None = None) -> LatencyTable:
    slots = tuple(SlotLatencies(tuple(mini_space.slot_input_shape(i)), tuple(str(o) for o in mini_space.options(i)),
                                tuple(0.01 * (i + 1) + 0.005 * j for j in range(len(mini_space.options(i)))),
                                (False,) * len(mini_space.options(i)),
                                tuple(0.02 * (i + 1) + 0.01 * (j % 3) for j in range(len(mini_space.options(i)))))
                  for i in range(mini_space.num_slots))
    from latency.table import space_signature

    return LatencyTable(profile={"name": "cpu"}, fingerprint={}, space_name=mini_space.name,
                        space_signature=space_signature(mini_space), protocol={},
                        stem=tuple(str(s) for s in mini_space.stem), stem_ms=0.02, head_ms=0.01, slots=slots,
                        calibration=calibration, validation=validation or {})


def test_per_slot_scales_predict_alike_everywhere_and_round_trip(mini_space):
    cal = Calibration(intercept_ms=0.01, scale=1.1, n=40, slot_scales=(0.9, 1.5, 1.0, 1.2, 0.8), ridge=0.1,
                      cv={"0.1": 0.01, "inf": 0.05}, per_mparam_ms=0.03)
    table = _table(mini_space, cal)
    archs = mini_space.sample_many(8, seed=4)
    expected = [0.01 + 1.1 * 0.03 + sum(cal.slot_scales[i] * table.block_ms(i, b) + 0.03 * table.block_mparams(i, b)
                                        for i, b in enumerate(a.blocks)) for a in archs]
    assert all(table.block_mparams(i, b) > 0 for a in archs for i, b in enumerate(a.blocks))
    np.testing.assert_allclose(table.predict_many(archs), expected, rtol=1e-12)
    genomes = np.stack([mini_space.encode(a) for a in archs])
    np.testing.assert_allclose(table.predict_genomes(genomes, mini_space), expected, rtol=1e-12)
    again = LatencyTable.from_dict(json.loads(json.dumps(table.to_dict())))
    assert again.calibration == cal and again.to_dict()["schema_version"] == 3


def test_older_table_files_load_and_unknown_or_malformed_ones_are_refused(mini_space):
    data = _table(mini_space, Calibration(0.01, 1.2, 10)).to_dict()
    old = {k: v for k, v in data.items() if k != "conditions"}
    old.update(schema_version=1, calibration={"intercept_ms": 0.01, "scale": 1.2, "n": 10, "archs": []})
    table = LatencyTable.from_dict(old)
    arch = mini_space.sample(5)
    assert table.calibration.slot_scales == () and table.conditions == {}
    assert table.predict(arch) == pytest.approx(0.01 + 1.2 * table.part_sum(arch))
    with pytest.raises(LatencyError, match="schema_version 4 is not one this version reads"):
        LatencyTable.from_dict({**data, "schema_version": 4})
    v2 = {**data, "schema_version": 2, "slots": [{k: v for k, v in s.items() if k != "mparams"} for s in data["slots"]],
          "calibration": {k: v for k, v in data["calibration"].items() if k != "per_mparam_ms"}}
    two = LatencyTable.from_dict(v2)  # a version-2 file: no parameters, no weight term, the same predictions
    assert two.block_mparams(0, arch.blocks[0]) == 0.0 and two.predict(arch) == pytest.approx(
        LatencyTable.from_dict(data).predict(arch))
    bad = {**data, "calibration": {**data["calibration"], "slot_scales": [1.0, 1.0]}}
    with pytest.raises(LatencyError, match="2 calibration slot scales for 5 slots"):
        LatencyTable.from_dict(bad)


def test_validation_check_warns_only_outside_the_bounds(mini_space):
    good = {"n": 30, "rmspe": 0.02, "within_5": 0.93, "within_10": 1.0, "max_abs_pct": 7.0, "spearman": 0.99,
            "noise": 0.01}
    line, warning = validation_check(_table(mini_space, Calibration(), good))
    assert "within +-5% 93%" in line and warning is None
    line, warning = validation_check(_table(mini_space, Calibration(), {**good, "within_10": 0.97}))
    assert "97% within +-10% (< 100%)" in warning and "within +-5%" not in warning
    assert validation_check(_table(mini_space, Calibration(), {"n": 0}))[1] is not None
