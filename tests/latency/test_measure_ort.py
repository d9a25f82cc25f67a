"""Real ONNX Runtime on the CPU: samples, summary, noisy flag, provider honesty."""

from __future__ import annotations

import json

import numpy as np
import pytest

from latency import BackendUnavailableError, Profile, measure_model
from latency.backends import OnnxRuntimeBackend, register_backend
from latency.backends.onnxruntime import check_providers


@register_backend
class JitterBackend(OnnxRuntimeBackend):
    """Real ONNX Runtime samples with known multiplicative jitter added (for the noisy flag)."""

    name = "test-jitter"
    OPTIONS = {**OnnxRuntimeBackend.OPTIONS, "jitter": 0.3}

    def prepare(self, model, input_shape):
        prepared = super().prepare(model, input_shape)
        rng, real = np.random.default_rng(0), prepared.run
        prepared.run = lambda n: list(np.asarray(real(n)) * rng.uniform(1.0, 1.0 + self.options["jitter"], n))
        return prepared


def test_cpu_measurement_has_samples_and_a_coherent_summary(tiny_onnx, fast):
    r = measure_model(tiny_onnx, "cpu", protocol=fast)
    assert r.n == len(r.samples_ms) >= 30 and r.backend == "onnxruntime"
    s = np.asarray(r.samples_ms)
    assert r.median_ms == pytest.approx(np.median(s)) and r.min_ms == pytest.approx(s.min())
    assert r.ci_low_ms <= r.median_ms <= r.ci_high_ms and r.median_ms <= r.p90_ms <= r.p99_ms
    assert 0.0 < r.median_ms < 50.0
    assert r.env["session_providers"][0] == "CPUExecutionProvider"
    assert r.env["input_shape"] == [1, 8, 16, 16] and len(r.env["model_sha256"]) == 64
    assert r.env["fingerprint"]["intra_op_threads"] == 1 and "onnxruntime" in r.env["fingerprint"]
    assert r.noisy == bool(r.noisy_reason)
    row = r.to_row()
    assert row["median_ms"] == r.median_ms and "samples_ms" not in row
    json.dumps(r.to_dict())  # JSON-ready


def test_known_jitter_sets_the_noisy_flag(tiny_onnx, fast):
    profile = Profile("jittery-cpu", "test-jitter", options={"provider": "cpu", "intra_op_threads": 1})
    r = measure_model(tiny_onnx, profile, protocol={**fast, "max_time_s": 0.2})
    assert r.noisy and "robust CoV" in r.noisy_reason and r.robust_cov > 0.05


def test_cpu_provider_cannot_pass_as_cuda(tiny_onnx):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    with pytest.raises(BackendUnavailableError, match="refusing"):
        check_providers("CUDAExecutionProvider", sess.get_providers())
    with pytest.raises(BackendUnavailableError, match="CUDAExecutionProvider"):
        measure_model(tiny_onnx, "gpu")


def test_torch_backend_measures_modules_not_files(tiny_onnx, fast):
    from latency import BadModelError

    from .conftest import tiny_model

    r = measure_model(tiny_model(), "torch-cpu", (8, 16, 16), protocol=fast)
    assert r.n >= 30 and r.backend == "torch"
    with pytest.raises(BadModelError, match="not a file"):
        measure_model(tiny_onnx, "torch-cpu")
