"""Latency tables on the local CPU and on the stand-in phone: build, predict, resume, fingerprints."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from common.fileio import read_jsonl
from latency import DeviceDisconnectedError, FingerprintMismatchError, LatencyTable, build_latency_table

SMALL = {"n_calibration": 4, "n_validation": 4, "n_repeat": 1}


@pytest.fixture(scope="module")
def cpu_table(mini_space, tmp_path_factory):
    out = tmp_path_factory.mktemp("table")
    fast = {"min_time_s": 0.02, "max_time_s": 0.3, "target_ci": 0.02, "warmup_max_s": 0.2}
    return build_latency_table(mini_space, "cpu", out, protocol=fast, progress=False, **SMALL), out


def test_table_covers_every_part_and_validates_itself(cpu_table, mini_space):
    table, out = cpu_table
    assert (out / "table.json").exists() and table.device == "cpu"
    assert [len(s.ms) for s in table.slots] == [len(mini_space.options(i)) for i in range(5)]
    v = table.validation
    assert v["n"] == 4 and {"rmspe", "within_5", "within_10", "spearman", "noise"} <= set(v)
    assert 0.0 <= v["within_5"] <= v["within_10"] <= 1.0 and v["rmspe"] >= 0.0
    assert v["noise_n"] == 1 and v["noise"] is not None
    assert table.calibration.n == 4 and table.calibration.scale > 0
    rows = read_jsonl(out / "rows.jsonl")
    assert rows[0]["job"] == "meta" and all(len(r["samples_ms"]) >= 30 for r in rows[1:])
    assert table.conditions["rounds"] == 5 and table.conditions["loadavg"]["max"] >= 0.0


def test_every_job_is_measured_once_per_round_in_rounds_spread_over_the_build(cpu_table):
    _, out = cpu_table
    rows = [r for r in read_jsonl(out / "rows.jsonl") if r["job"] != "meta"]
    keys = [(r["job"], r["round"]) for r in rows]
    assert len(set(keys)) == len(keys)  # one row per (job, round)
    jobs = [r for r in rows if r["job"] != "canary"]
    names = list(dict.fromkeys(r["job"] for r in jobs))
    assert len(jobs) == 5 * len(names) and {r["round"] for r in jobs} == set(range(5))
    order = [[r["job"] for r in jobs if r["round"] == k] for k in range(5)]
    assert order[0] == order[2] == order[4] == names and order[1] == order[3] == names[::-1]  # every other reversed
    canary = [i for i, r in enumerate(rows) if r["job"] == "canary"]
    assert canary[0] == 0 and canary[-1] == len(rows) - 1 and max(b - a for a, b in zip(canary, canary[1:])) <= 11
    assert [rows[i]["round"] for i in canary] == list(range(len(canary)))
    assert all({"loadavg", "time", "median_ms", "noisy"} <= set(r) for r in rows)


def test_predict_matches_predict_genomes_and_is_fast(cpu_table, mini_space):
    table, _ = cpu_table
    archs = mini_space.sample_many(20, seed=5)
    genomes = np.stack([mini_space.encode(a) for a in archs])
    np.testing.assert_allclose(table.predict_genomes(genomes, mini_space), table.predict_many(archs), rtol=1e-12)
    lower, upper = mini_space.genome_bounds()
    many = np.random.default_rng(0).integers(lower, upper + 1, size=(20_000, lower.size))
    t0 = time.perf_counter()
    pred = table.predict_genomes(many, mini_space)
    assert time.perf_counter() - t0 < 1.0 and np.all(np.isfinite(pred))  # >= 20,000 candidates / s
    with pytest.raises(ValueError, match="out of the bounds"):
        table.predict_genomes(many + 10, mini_space)


def test_calibrated_sum_beats_the_raw_sum(cpu_table):
    v = cpu_table[0].validation
    assert v["rmspe"] < v["uncalibrated"]["rmspe"]


def test_load_checks_the_device_fingerprint(cpu_table, tmp_path):
    table, out = cpu_table
    assert LatencyTable.load(out).predict_many([]).size == 0
    data = json.loads((out / "table.json").read_text())
    data["fingerprint"]["cpu"] = "Some Other CPU 9000"
    (tmp_path / "t.json").write_text(json.dumps(data))
    with pytest.raises(FingerprintMismatchError, match="differs in \\['cpu'\\]"):
        LatencyTable.load(tmp_path / "t.json", device="cpu")
    with pytest.warns(UserWarning, match="different device fingerprint"):
        LatencyTable.load(tmp_path / "t.json", device="cpu", force=True)


def test_killed_build_resumes_without_remeasuring(cpu_table, mini_space, tmp_path):
    _, out = cpu_table
    lines = (out / "rows.jsonl").read_text().splitlines()
    complete = [ln for ln in lines if ln.strip()]
    keep = complete[: len(complete) // 2]
    (tmp_path / "rows.jsonl").write_text("\n".join(keep) + "\n" + complete[len(keep)][:40])  # torn last write
    kept = {(json.loads(ln)["job"], json.loads(ln)["round"]): json.loads(ln)["time"] for ln in keep[1:]}
    fast = {"min_time_s": 0.02, "max_time_s": 0.3, "target_ci": 0.02, "warmup_max_s": 0.2}
    table = build_latency_table(mini_space, "cpu", tmp_path, protocol=fast, progress=False, **SMALL)
    rows = [r for r in read_jsonl(tmp_path / "rows.jsonl") if r["job"] != "meta"]
    assert len(rows) == len(complete) - 1 and len({(r["job"], r["round"]) for r in rows}) == len(rows)
    assert all(r["time"] == kept[r["job"], r["round"]] for r in rows if (r["job"], r["round"]) in kept)
    assert table.validation["n"] == 4


def test_resume_refuses_rows_of_another_protocol(cpu_table, mini_space):
    _, out = cpu_table
    with pytest.raises(FingerprintMismatchError, match="another protocol"):
        build_latency_table(mini_space, "cpu", out, protocol={"min_time_s": 0.5}, progress=False, **SMALL)


def test_resume_under_another_number_of_rounds_names_the_rounds_it_was_started_with(cpu_table, mini_space):
    _, out = cpu_table  # built with the default, 5 rounds
    fast = {"min_time_s": 0.02, "max_time_s": 0.3, "target_ci": 0.02, "warmup_max_s": 0.2}
    with pytest.raises(FingerprintMismatchError, match=r"another schedule; .*latency table --rounds 5"):
        build_latency_table(mini_space, "cpu", out, protocol=fast, progress=False, rounds=3, **SMALL)


def test_resume_refuses_rows_of_another_architecture_sample(cpu_table, mini_space):
    _, out = cpu_table
    fast = {"min_time_s": 0.02, "max_time_s": 0.3, "target_ci": 0.02, "warmup_max_s": 0.2}
    with pytest.raises(FingerprintMismatchError, match="another sample;"):
        build_latency_table(mini_space, "cpu", out, protocol=fast, progress=False, **{**SMALL, "seed": 1})


def test_phone_disconnect_keeps_rows_and_resumes(fake_phone, mini_space, tmp_path, phone_fast):
    fake_phone.set(disconnect_after=60)
    with pytest.raises(DeviceDisconnectedError, match="measurements already made are kept") as info:
        build_latency_table(mini_space, "s20", tmp_path, protocol=phone_fast, progress=False, **SMALL)
    assert "R58N12ABCDE" in str(info.value)
    before = [r for r in read_jsonl(tmp_path / "rows.jsonl") if r["job"] != "meta"]
    assert len(before) >= 3
    fake_phone.set(disconnect_after=None)
    table = build_latency_table(mini_space, "s20", tmp_path, protocol=phone_fast, progress=False, **SMALL)
    after = {(r["job"], r["round"]): r for r in read_jsonl(tmp_path / "rows.jsonl") if r["job"] != "meta"}
    assert all(after[r["job"], r["round"]]["time"] == r["time"] for r in before)  # nothing measured twice
    assert table.fingerprint["model"] == "SM-G981B" and table.fingerprint["cores"] == [4, 5, 6, 7]


def test_calibration_scale_stays_positive_on_noisy_points():
    from latency.table import fit_calibration

    tilted = fit_calibration([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.5, 2.0])  # slower sums measured faster: noise
    assert tilted.scale > 0 and tilted.intercept_ms == 0.0
    clean = fit_calibration([1.0, 2.0, 3.0], [1.5, 2.5, 3.5])
    assert np.isclose(clean.scale, 1.0) and np.isclose(clean.intercept_ms, 0.5)


def test_a_space_smaller_than_the_sample_gives_fewer_held_out_networks(mini_space):
    import dataclasses

    from latency.table_build import _arch_jobs

    one = {"kernel": (3,)}
    slots = tuple(s if i < 2 else dataclasses.replace(s, choices={**s.choices, **one})
                  for i, s in enumerate(mini_space.slots))
    four = dataclasses.replace(mini_space, name="four", slots=slots)  # 2 x 2 members
    jobs = _arch_jobs(four, 3, 30, 1, seed=0)  # used to loop forever drawing a 34th distinct member
    roles = [j.role for j in jobs]
    assert roles.count("calibration") == 3 and roles.count("validation") == 1 and roles.count("repeat") == 1
    assert len({j.arch_key for j in jobs if j.role != "repeat"}) == 4


def test_exports_run_ahead_in_child_processes(mini_space, tmp_path):
    from latency.export import is_exported
    from latency.table_build import _all_jobs, export_ahead

    sample = {"seed": 0, **SMALL}
    jobs = _all_jobs(mini_space, sample)
    cache = tmp_path / "exports"
    models = {j.model_id for j in jobs}
    assert export_ahead(mini_space, sample, jobs, cache, workers=2, progress=False) == len(models)
    assert [j.id for j in jobs if not is_exported(j.shape, j.model_id, cache)] == []
    assert len(list((cache / "onnx").glob("*.onnx"))) == len(models)
    assert export_ahead(mini_space, sample, jobs, cache, workers=2, progress=False) == 0  # all cached now

    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    with pytest.raises(Exception, match="exporting the latency table's models failed"):
        export_ahead(mini_space, sample, jobs, blocked, workers=2, progress=False)


def test_a_build_through_an_executor_measures_every_job_as_the_local_loop_does(mini_space, tmp_path):
    from common.executor import InProcessExecutor

    fast = {"min_time_s": 0.02, "max_time_s": 0.2, "target_ci": 0.05, "warmup_max_s": 0.1}
    sample = {"n_calibration": 3, "n_validation": 2, "n_repeat": 1}
    build_latency_table(mini_space, "cpu", tmp_path / "here", protocol=fast, progress=False, **sample)
    table = build_latency_table(mini_space, "cpu", tmp_path / "jobs", protocol=fast, progress=False,
                                executor=InProcessExecutor(), **sample)
    here, jobs = ([(r["job"], r.get("round")) for r in read_jsonl(tmp_path / name / "rows.jsonl")]
                  for name in ("here", "jobs"))
    assert jobs == here  # the same measurements in the same order
    rows = read_jsonl(tmp_path / "jobs" / "rows.jsonl")[1:]
    assert all(r["host"] and r["ray_node"] is None for r in rows) and table.validation["n"] == 2
