"""Device profiles as data, the backend registry, GPU checks that need no GPU."""

from __future__ import annotations

import json

import pytest

from latency import BackendUnavailableError, LatencyError, UnknownDeviceError, get_profile, list_profiles
from latency.backends import Backend, create_backend, list_backends, register_backend
from latency.backends.base import check_gpu_match
from latency.backends.tensorrt import TensorRTBackend, volta_refusal


def test_shipped_profiles():
    assert {"cpu", "v100", "a100", "h100", "gpu", "s20", "android"} <= set(list_profiles())
    assert get_profile("v100").backend == "tensorrt" and get_profile("v100").options["precision"] == "fp16"
    assert get_profile("s20").options["cores"] == "big"
    assert get_profile("cpu").options["intra_op_threads"] == 1
    for name in list_profiles():
        get_profile(name).protocol_config()  # every shipped protocol is valid
        assert get_profile(name).backend in list_backends()


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(UnknownDeviceError, match="known devices: .*cpu"):
        get_profile("pixel99")


def test_user_file_extends_and_refuses_duplicates(tmp_path):
    user = tmp_path / "devices.json"
    user.write_text(json.dumps({"profiles": {"cpu4": {"extends": "cpu", "options": {"intra_op_threads": 4}}}}))
    p = get_profile("cpu4", user_file=user)
    assert p.backend == "onnxruntime" and p.options["intra_op_threads"] == 4 and p.source == str(user)
    user.write_text(json.dumps({"profiles": {"cpu": {"backend": "torch"}}}))
    with pytest.raises(LatencyError, match="duplicates"):
        list_profiles(user_file=user)


def test_registry_refuses_duplicates_and_unknown_names():
    class Other(Backend):
        name = "onnxruntime"

        def fingerprint(self):
            return {}

        def prepare(self, model, input_shape):
            raise NotImplementedError

    with pytest.raises(LatencyError, match="already registered"):
        register_backend(Other)
    with pytest.raises(LatencyError, match="known backends"):
        create_backend("nope")
    with pytest.raises(LatencyError, match="unknown option"):
        create_backend("onnxruntime", threads=3)


def test_gpu_profile_on_another_gpu_is_refused_unless_forced():
    with pytest.raises(BackendUnavailableError, match="V100.*'NVIDIA A100-SXM4-40GB'.*allow_other_gpu"):
        check_gpu_match("V100", "NVIDIA A100-SXM4-40GB", "v100")
    with pytest.warns(UserWarning, match="V100.*'NVIDIA A100-SXM4-40GB'"):
        check_gpu_match("V100", "NVIDIA A100-SXM4-40GB", "v100", force=True)
    assert check_gpu_match("V100", "Tesla V100-SXM2-16GB") is None


def test_tensorrt_refuses_new_versions_on_volta():
    assert "10.4" in volta_refusal("10.5.0", (7, 0))
    assert volta_refusal("10.4.0.26", (7, 0)) is None
    assert volta_refusal("10.7.0", (8, 0)) is None


def test_tensorrt_is_cleanly_unavailable_here():
    reason = TensorRTBackend.unavailable_reason({})
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "TensorRT is not installed: pip install 'donna-nas[gpu]'" in reason
    else:
        pytest.skip("tensorrt is installed here")


@pytest.mark.gpu
def test_tensorrt_measures_on_a_gpu(tiny_onnx):
    from latency import measure_model

    if TensorRTBackend.unavailable_reason({}):
        pytest.skip(TensorRTBackend.unavailable_reason({}))
    r = measure_model(tiny_onnx, "h100")
    assert r.n >= 30 and r.env["engine_sha256"]
