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
    parse_sha256sum,
    parse_thermal,
    select_cores,
)
from latency.backends.ort_mobile import OrtMobileBackend

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
    runs = [c for c in calls if c[2:3] == ["shell"] and c[3].startswith("taskset")]
    assert runs and all(c[3].startswith("taskset f0 /data/local/tmp/donna-latency/onnxruntime_perf_test -e cpu")
                        for c in runs)
    assert all(" -x 4 " in c[3] and " -v " in c[3] for c in runs)
    assert first.n >= 30 and second.n >= 30
    assert 3.0 < first.median_ms < 10.0  # the stand-in's latency model: 3 ms + 0.05 ms per KiB of .ort
    assert first.env["device"]["model"] == "SM-G981B" and first.env["affinity_mask"] == "f0"
    assert first.env["temp_before_c"] == pytest.approx(38.1) and not first.noisy


def test_hot_phone_flags_the_result(fake_phone, tiny_onnx, phone_fast):
    fake_phone.set(heat_per_run_mc=4000)  # +4 C per perf-tool run, from 36.5 C in the hottest-to-be zone
    result = measure_model(tiny_onnx, "s20", protocol=phone_fast, backend=OrtMobileBackend())
    runs = len([c for c in fake_phone.calls() if c[2:3] == ["shell"] and c[3].startswith("taskset")])
    after = 36.5 + 4 * runs
    assert result.env["temp_before_c"] == pytest.approx(38.1) and result.env["temp_after_c"] == pytest.approx(after)
    assert result.noisy and f"device hot after run: {after:.1f} C > 45.0 C" in result.noisy_reason
    assert "warmed from 38.1 C" in result.noisy_reason


def test_disconnect_mid_run_is_a_clear_error_with_partial_samples(fake_phone, tiny_onnx, phone_fast):
    backend = OrtMobileBackend()
    measure_model(tiny_onnx, "s20", protocol=phone_fast, backend=backend)
    made = json.loads((fake_phone.dir / "state.json").read_text())["calls"]
    fake_phone.set(disconnect_after=made + 5)  # model hash, temperature, 2 warm-up windows, 1 batch, gone
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
