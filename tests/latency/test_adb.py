"""The ort-mobile backend against the stand-in adb: device facts, push once, pinning, thermal, parsing."""

from __future__ import annotations

import json

import pytest

from latency import DeviceDisconnectedError, measure_model
from latency.backends.adb import (
    core_mask,
    parse_devices,
    parse_max_freqs,
    parse_perf_test,
    parse_result_file,
    parse_sha256sum,
    parse_thermal,
    select_cores,
)
from latency.backends.ort_mobile import OrtMobileBackend

S20_FREQS = [2002000] * 4 + [2504000] * 2 + [2730000] * 2

NEW_FORMAT = """Setting intra_op_num_threads to 4
(Warm-up) iteration: 1, time_cost: 0.0123 s
iteration: 2, time_cost: 0.00410 s
iteration: 3, time_cost: 0.00420 s
Session creation time cost: 0.0213 s
Average inference time cost: 4.15 ms
P50 Latency: 0.0041 s
"""
OLD_FORMAT = """iteration:1,time_cost:0.0051
iteration:2,time_cost:0.0049
Total time cost:0.01
Average inference time cost: 5 ms
"""


def test_parse_perf_test_both_verbose_formats():
    samples, avg = parse_perf_test(NEW_FORMAT)
    assert samples == pytest.approx([4.10, 4.20])  # the warm-up run is dropped, seconds -> ms
    assert avg == pytest.approx(4.15)
    samples, avg = parse_perf_test(OLD_FORMAT)
    assert samples == pytest.approx([5.1, 4.9]) and avg == pytest.approx(5.0)


def test_parse_perf_test_without_per_run_times_fails_clearly():
    with pytest.raises(ValueError, match="no per-run times"):
        parse_perf_test("Average inference time cost: 4.15 ms\n")


def test_parsers_of_device_facts():
    devices = parse_devices("List of devices attached\nR58N12ABCDE            device usb:1-1 product:x1sxx "
                            "model:SM_G981B device:x1s transport_id:1\nemulator-5554\toffline\n\n")
    assert devices[0] == {"serial": "R58N12ABCDE", "state": "device", "usb": "1-1", "product": "x1sxx",
                          "model": "SM_G981B", "device": "x1s", "transport_id": "1"}
    assert devices[1]["state"] == "offline"
    paths = "\n".join(f"/sys/devices/system/cpu/cpu{i}/cpufreq/cpuinfo_max_freq" for i in (0, 1, 10, 2))
    assert parse_max_freqs(paths, "1\n2\n3\n4\n") == {0: 1, 1: 2, 10: 3, 2: 4}
    assert parse_thermal("36500\n-273000\n41200\n999999\n") == pytest.approx(41.2)
    assert parse_result_file("m,0.0041,28672000,24,0\nm,0.0042,28672000,24,1\n") == pytest.approx([4.1, 4.2])
    assert parse_sha256sum("a" * 64 + "  /data/local/tmp/x\n") == "a" * 64
    assert parse_sha256sum("sha256sum: /x: No such file or directory") is None


def test_big_core_mask_from_frequencies():
    freqs = dict(enumerate([2002000] * 4 + [2504000] * 2 + [2730000] * 2))  # Exynos 990
    assert select_cores(freqs, "big") == [4, 5, 6, 7]
    assert select_cores(freqs, "prime") == [6, 7]
    assert core_mask(select_cores(freqs, "big")) == "f0"
    assert core_mask([0]) == "1"
    assert select_cores({0: 5, 1: 5}, "big") == [0, 1]  # one cluster: all cores


def test_measure_on_stand_in_phone_pushes_once_and_pins(fake_phone, tiny_onnx, phone_fast):
    backend = OrtMobileBackend()
    first = measure_model(tiny_onnx, "s20", protocol=phone_fast, backend=backend)
    second = measure_model(tiny_onnx, "s20", protocol=phone_fast, backend=backend)
    calls = fake_phone.calls()
    tool_pushes = [c for c in calls if c[2:3] == ["push"] and c[3].endswith("onnxruntime_perf_test")]
    model_pushes = [c for c in calls if c[2:3] == ["push"] and c[4].endswith(".ort")]
    assert len(tool_pushes) == 1 and len(model_pushes) == 1
    runs = [c for c in calls if c[2:3] == ["shell"] and "taskset" in c[3]]
    assert runs and all("taskset f0 /data/local/tmp/donna-latency/onnxruntime_perf_test -e cpu" in c[3]
                        for c in runs)
    assert all(" -x 4 " in c[3] and " -v" not in c[3] for c in runs)  # no verbose logging while timed
    timed = [c for c in runs if " -r 1 " not in c[3]]
    assert timed and all(c[3].endswith("/donna-latency/result.csv && cat /data/local/tmp/donna-latency/result.csv")
                         for c in timed)
    assert first.n >= 30 and second.n >= 30
    assert 3.0 < first.median_ms < 10.0  # the stand-in's latency model: 3 ms + 0.05 ms per KiB of .ort
    assert first.env["device"]["model"] == "SM-G981B" and first.env["affinity_mask"] == "f0"
    assert first.env["temp_before_c"] == pytest.approx(36.5) and not first.noisy  # BIG zone, not the battery
    assert first.env["cooldown_temp_c"] == pytest.approx(38.1)  # the battery zone decides the cool-down
    assert first.env["clock"].startswith("onnxruntime_perf_test per-run time_cost")
    assert {z["type"] for z in first.env["thermal_zones_before"]} == {"BIG", "MID", "LITTLE", "battery"}
    assert first.env["pinned_cores_now"] == {str(c): {"governor": "schedutil", "cur_khz": S20_FREQS[c]}
                                             for c in (4, 5, 6, 7)}
    assert " -e cpu -m times -o 99 " in runs[0][3] and first.env["fingerprint"]["opt_level"] == 99


def test_hot_phone_flags_the_result(fake_phone, tiny_onnx, phone_fast):
    fake_phone.set(heat_per_run_mc=4000)  # +4 C per perf-tool run in zone 0 (BIG), from 36.5 C
    result = measure_model(tiny_onnx, "s20", protocol=phone_fast, backend=OrtMobileBackend())
    runs = [c for c in fake_phone.calls() if c[2:3] == ["shell"] and "taskset" in c[3]]
    test_loads = [c for c in runs if " -r 1 " in c[3]]
    assert len(test_loads) == 1
    before, after = 36.5 + 4, 36.5 + 4 * len(runs)  # the test load after the push warmed it once
    assert result.env["temp_before_c"] == pytest.approx(before)
    assert result.env["temp_after_c"] == pytest.approx(after)
    assert result.noisy and f"device hot after run: {after:.1f} C > 45.0 C" in result.noisy_reason
    assert f"warmed from {before:.1f} C" in result.noisy_reason


def test_disconnect_mid_run_is_a_clear_error_with_partial_samples(fake_phone, tiny_onnx, phone_fast):
    backend = OrtMobileBackend()
    measure_model(tiny_onnx, "s20", protocol=phone_fast, backend=backend)
    made = json.loads((fake_phone.dir / "state.json").read_text())["calls"]
    fake_phone.set(disconnect_after=made + 6)  # model hash, zones, core clocks, 2 warm-up windows, 1 batch, gone
    with pytest.raises(DeviceDisconnectedError, match="R58N12ABCDE disconnected") as info:
        measure_model(tiny_onnx, "s20", protocol={**phone_fast, "min_samples": 200}, backend=backend)
    assert "not found" in str(info.value)
    assert len(info.value.partial_samples_ms) >= 40


def test_missing_perf_tool_is_unavailable(fake_phone, monkeypatch):
    monkeypatch.delenv("ORT_PERF_TEST")
    assert "ORT_PERF_TEST" in OrtMobileBackend.unavailable_reason({})


def test_ort_conversion_gives_a_loadable_equivalent_model(tiny_onnx, tmp_path):
    import numpy as np
    import onnxruntime as ort

    from latency.backends.ort_mobile import convert_to_ort

    out = tmp_path / "tiny.ort"
    convert_to_ort(tiny_onnx, out)
    x = np.random.default_rng(0).standard_normal((1, 8, 16, 16)).astype(np.float32)
    outs = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
            for p in (tiny_onnx, out)]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_thermal_zones_are_chosen_by_type():
    from latency.backends.adb import choose_zones, parse_zones

    text = "\n".join(["/sys/class/thermal/thermal_zone0/type:BIG", "/sys/class/thermal/thermal_zone0/temp:36500",
                      "/sys/class/thermal/thermal_zone1/type:battery", "/sys/class/thermal/thermal_zone1/temp:38100",
                      "/sys/class/thermal/thermal_zone2/type:LITTLE", "/sys/class/thermal/thermal_zone2/temp:35000",
                      "/sys/class/thermal/thermal_zone3/type:MID", "/sys/class/thermal/thermal_zone3/temp:36000",
                      "/sys/class/thermal/thermal_zone4/type:G3D"])  # zone 4's temp is unreadable
    zones = parse_zones(text)
    assert [z["type"] for z in zones] == ["BIG", "battery", "LITTLE", "MID", "G3D"] and zones[4]["temp_c"] is None
    assert choose_zones(zones, "big") == {"cooldown": [1], "hot": [0, 3], "how": "typed"}
    assert choose_zones(zones, "prime")["hot"] == [0]
    qcom = [{"zone": i, "type": t, "temp_c": 40.0} for i, t in enumerate(
        ["cpu-0-0-usr", "cpu-1-0-usr", "cpu-1-1-usr", "xo-therm", "skin-therm", "battery"])]
    assert choose_zones(qcom, "big") == {"cooldown": [4], "hot": [1, 2], "how": "typed"}  # skin before battery
    untyped = [{"zone": 0, "type": "tz0", "temp_c": 41.0}, {"zone": 1, "type": "tz1", "temp_c": 39.0}]
    fallback = choose_zones(untyped, "big")
    assert fallback["hot"] == [0, 1] and "fallback to the hottest zone" in fallback["how"]


def test_adb_runs_with_stdin_closed(fake_phone, tiny_onnx, phone_fast):
    import os

    read_end, write_end = os.pipe()  # an open stdin, as in a background job: adb must not inherit it
    saved = os.dup(0)
    os.dup2(read_end, 0)
    try:
        measure_model(tiny_onnx, "s20", protocol=phone_fast, backend=OrtMobileBackend())
    finally:
        os.dup2(saved, 0)
        for fd in (saved, read_end, write_end):
            os.close(fd)
    seen = (fake_phone.dir / "stdin.log").read_text().split()
    assert seen and set(seen) == {"devnull"}


def test_perf_tool_of_another_onnxruntime_release_is_refused(fake_phone, tiny_onnx, phone_fast):
    import onnxruntime as ort

    declared = OrtMobileBackend(perf_test_ort_version="1.17.0")
    with pytest.raises(ValueError, match=f"made here by onnxruntime {ort.__version__} but the perf tool is built "
                                         "from ONNX Runtime 1.17.0: pip install 'onnxruntime==1.17.0'"):
        measure_model(tiny_onnx, "s20", protocol=phone_fast, backend=declared)
    fake_phone.set(tool_ort_version="1.17.0", ort_made_by=ort.__version__)  # undeclared: the test load finds it
    with pytest.raises(ValueError, match="cannot load the .ort model .*made by onnxruntime .* tool's ONNX Runtime "
                                         "is unknown"):
        measure_model(tiny_onnx, "s20", protocol=phone_fast, backend=OrtMobileBackend())
    timed = [c for c in fake_phone.calls() if c[2:3] == ["shell"] and "result.csv" in c[3]]
    assert not timed  # refused before any timed run


def test_phone_execution_provider_and_opt_level_are_validated_and_passed(fake_phone, tiny_onnx, phone_fast):
    with pytest.raises(ValueError, match="execution_provider 'gpu' is not one of cpu, xnnpack, nnapi, qnn"):
        OrtMobileBackend(execution_provider="gpu")
    with pytest.raises(ValueError, match="opt_level 3 is not one of"):
        OrtMobileBackend(opt_level=3)
    result = measure_model(tiny_onnx, "s20", protocol=phone_fast,
                           backend=OrtMobileBackend(execution_provider="xnnpack", opt_level=1))
    runs = [c for c in fake_phone.calls() if c[2:3] == ["shell"] and "taskset" in c[3]]
    assert runs and all(" -e xnnpack -m times -o 1 " in c[3] for c in runs)
    assert result.env["fingerprint"]["execution_provider"] == "xnnpack"
