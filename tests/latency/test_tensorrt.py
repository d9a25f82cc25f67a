"""TensorRT and GPU-provider logic that needs no GPU: precision plan, TensorRT 10/11 choice, buffers from
an engine description, imports, fingerprints; ONNX Runtime GPU providers reported as unavailable."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

from latency import LatencyError, measure_model
from latency.backends.onnxruntime import OnnxRuntimeBackend, provider_failure
from latency.backends.tensorrt import (
    TensorRTBackend,
    TensorSpec,
    allocate_io,
    build_plan,
    engine_io,
    import_tensorrt,
    make_network_and_config,
    onnx_input_dtype,
    typing_mode,
)


# ---- precision and typing -------------------------------------------------------------------------
def test_precision_is_validated():
    for bad in ("fp61", "FP16", "bf16", ""):
        with pytest.raises(LatencyError, match="not one of fp32, fp16, int8"):
            build_plan("10.4.0", bad, "float32")
    with pytest.raises(LatencyError, match="int8 needs a calibration set"):
        build_plan("10.4.0", "int8", "float32")
    with pytest.raises(LatencyError, match="not one of"):
        TensorRTBackend(precision="fp61")  # refused when the profile is read, before any engine build
    with pytest.raises(LatencyError, match="int8 needs a calibration set"):
        TensorRTBackend(precision="int8")


def test_torch_build_without_kernels_for_the_gpu_is_unavailable():
    from latency.backends.torch_backend import missing_kernels

    cu13 = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # no Volta
    assert "no kernels for this GPU (sm_70" in missing_kernels((7, 0), cu13, "2.14.1")
    assert "cu126" in missing_kernels((7, 0), cu13, "2.14.1")
    assert missing_kernels((9, 0), cu13, "2.14.1") is None
    assert missing_kernels((7, 0), ["sm_50", "sm_60", "sm_70", "sm_75"], "2.7.0") is None
    assert missing_kernels((8, 9), ["sm_80", "sm_86"], "2.14.1") is None  # sm_86 binaries run on sm_89
    assert missing_kernels((7, 0), ["sm_80", "compute_60"], "x") is None  # PTX can be JIT-compiled


def test_tensorrt_10_uses_the_fp16_flag_on_weakly_typed_networks():
    assert typing_mode("10.4.0") == "weak-or-strong"
    assert build_plan("10.4.0", "fp16", "float32") == {"typing": "weak", "flags": ["FP16"], "precision": "fp16"}
    assert build_plan("10.16.1.11", "fp32", "float32") == {"typing": "weak", "flags": [], "precision": "fp32"}
    assert build_plan("10.4.0", "fp16", "float16")["typing"] == "strong"  # an fp16 ONNX is built as typed


def test_tensorrt_11_is_strongly_typed_only():
    assert typing_mode("11.4.0.106") == "strong-only"
    with pytest.raises(LatencyError, match="strongly typed networks only, so fp16 needs an fp16 ONNX"):
        build_plan("11.4.0.106", "fp16", "float32")
    assert build_plan("11.0.0.114", "fp32", "float32") == {"typing": "strong", "flags": [], "precision": "fp32"}
    assert build_plan("11.0.0.114", "fp16", "float16") == {"typing": "strong", "flags": [], "precision": "fp16"}
    with pytest.raises(LatencyError, match="input is float16 but the precision asked for is fp32"):
        build_plan("11.0.0.114", "fp32", "float16")
    with pytest.raises(LatencyError, match="older than 10"):
        typing_mode("8.6.1")


class _Builder:
    def __init__(self):
        self.network_flags, self.config = None, types.SimpleNamespace(flags=[])
        self.config.set_flag = self.config.flags.append

    def create_network(self, flags):
        self.network_flags = flags
        return "network"

    def create_builder_config(self):
        return self.config


def _trt(version: str, fp16_flag: bool, strongly_typed_flag: bool = True):
    flags = types.SimpleNamespace(**({"FP16": "FLAG_FP16"} if fp16_flag else {}))
    creation = types.SimpleNamespace(**({"STRONGLY_TYPED": 1} if strongly_typed_flag else {}))
    return types.SimpleNamespace(__version__=version, BuilderFlag=flags, NetworkDefinitionCreationFlag=creation)


def test_network_and_config_follow_the_plan():
    b = _Builder()
    make_network_and_config(_trt("10.4.0", True), b, build_plan("10.4.0", "fp16", "float32"))
    assert b.network_flags == 0 and b.config.flags == ["FLAG_FP16"]
    b = _Builder()  # TensorRT 11 has no BuilderFlag.FP16: touching it would raise AttributeError
    make_network_and_config(_trt("11.1.0", False), b, build_plan("11.1.0", "fp32", "float32"))
    assert b.network_flags == 1 << 1 and b.config.flags == []
    b = _Builder()  # a TensorRT without the flag (strong typing is its only mode)
    make_network_and_config(_trt("11.1.0", False, False), b, build_plan("11.1.0", "fp32", "float32"))
    assert b.network_flags == 0


def test_onnx_input_dtype(tiny_onnx):
    assert onnx_input_dtype(tiny_onnx) == "float32"


# ---- buffers from the engine's own description ----------------------------------------------------
NP = {"HALF": np.float16, "FLOAT": np.float32, "INT32": np.int32, "BOOL": np.bool_, "INT64": np.int64}


class _Engine:
    """Stub of an ICudaEngine description: names, modes, shapes (-1 dynamic) and dtypes."""

    def __init__(self, tensors):
        self.tensors = tensors  # name -> (mode, shape, dtype name)
        self.num_io_tensors = len(tensors)

    def get_tensor_name(self, i):
        return list(self.tensors)[i]

    def get_tensor_mode(self, name):
        return self.tensors[name][0]

    def get_tensor_shape(self, name):
        return self.tensors[name][1]

    def get_tensor_dtype(self, name):
        return self.tensors[name][2]


class _Context:
    def __init__(self, engine):
        self.engine, self.shapes = engine, {}

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        return self.shapes.get(name, self.engine.tensors[name][1])


class _Memory:
    def __init__(self):
        self.allocs, self.copies = [], {}

    def malloc(self, nbytes):
        self.allocs.append(nbytes)
        return 0x1000 * len(self.allocs)

    def htod(self, ptr, array):
        self.copies[ptr] = array


def _stub_trt():
    def nptype(dtype):
        if dtype not in NP:
            raise TypeError(f"unsupported {dtype}")
        return NP[dtype]

    return types.SimpleNamespace(TensorIOMode=types.SimpleNamespace(INPUT="in", OUTPUT="out"), nptype=nptype)


def test_buffers_follow_the_engine_dtypes_and_shapes():
    engine = _Engine({"input": ("in", (-1, 3, 32, 32), "HALF"), "mask": ("in", (1, 4), "BOOL"),
                      "logits": ("out", (1, 10), "FLOAT"), "index": ("out", (1, 1), "INT32")})
    context = _Context(engine)
    specs = engine_io(_stub_trt(), engine, context, (1, 3, 32, 32))
    assert context.shapes == {"input": (1, 3, 32, 32)}  # the dynamic input was given the shape
    assert [(s.name, s.is_input, s.shape, s.dtype) for s in specs] == [
        ("input", True, (1, 3, 32, 32), "float16"), ("mask", True, (1, 4), "bool"),
        ("logits", False, (1, 10), "float32"), ("index", False, (1, 1), "int32")]
    memory = _Memory()
    addresses = allocate_io(specs, memory)
    assert memory.allocs == [3 * 32 * 32 * 2, 4, 10 * 4, 4]  # bytes of each tensor's own type, not float32
    assert set(memory.copies) == {addresses["input"], addresses["mask"]}  # inputs only, copied (no kernel)
    data = memory.copies[addresses["input"]]
    assert data.dtype == np.float16 and data.shape == (1, 3, 32, 32) and data.std() > 0.5
    assert memory.copies[addresses["mask"]].dtype == np.bool_


def test_unallocatable_engine_tensors_fail_clearly():
    engine = _Engine({"x": ("in", (1, 8), "FP8")})
    with pytest.raises(LatencyError, match="'x' has type FP8, which has no numpy equivalent"):
        engine_io(_stub_trt(), engine, _Context(engine), (1, 8))
    with pytest.raises(LatencyError, match="still has a dynamic shape"):
        allocate_io([TensorSpec("y", False, (-1, 10), "float32")], _Memory())


# ---- imports, fingerprint, availability -----------------------------------------------------------
def test_tensorrt_version_choice_is_in_the_fingerprint(monkeypatch):
    for version, typing in (("10.4.0", "weak-or-strong"), ("11.4.0.106", "strong-only")):
        monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__=version))
        fp = TensorRTBackend(precision="fp32", device_id=0).fingerprint()
        assert fp["tensorrt"] == version and fp["typing"] == typing and fp["precision"] == "fp32"
        assert fp["gpu"] is None  # no GPU here


def test_standalone_bindings_and_missing_libraries(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.delitem(sys.modules, "tensorrt_bindings", raising=False)
    (tmp_path / "tensorrt_bindings").mkdir()
    (tmp_path / "tensorrt_bindings" / "__init__.py").write_text('__version__ = "11.4.0.106"\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert import_tensorrt().__version__ == "11.4.0.106"  # the tensorrt-cu13-bindings wheel's module
        sys.modules.pop("tensorrt_bindings")
        (tmp_path / "tensorrt_bindings" / "__init__.py").write_text(
            'raise ImportError("libnvinfer.so.11: cannot open shared object file: No such file or directory")\n')
        with pytest.raises(LatencyError, match="cannot load its libraries.*tensorrt-cu13-libs"):
            import_tensorrt()
    finally:
        sys.modules.pop("tensorrt_bindings", None)  # never leave the stand-in module to later tests


def test_no_gpu_is_reported_with_tensorrt_present(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.4.0"))
    assert "no CUDA GPU is visible" in TensorRTBackend.unavailable_reason({"precision": "fp16"})


# ---- ONNX Runtime GPU providers ----------------------------------------------------------------------
def test_gpu_providers_unavailable_here_name_the_fix():
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("a CUDA provider is installed here")
    reason = OnnxRuntimeBackend.unavailable_reason({"provider": "cuda"})
    assert "not CUDAExecutionProvider" in reason and "pip install 'donna-nas[gpu]'" in reason


def test_provider_failure_names_the_wheel_clash(monkeypatch):
    from importlib import metadata

    monkeypatch.setattr(metadata, "version", lambda name: "1.31.1")  # both wheels look installed
    msg = provider_failure("CUDAExecutionProvider", "libcudnn.so.9: cannot open shared object file")
    assert "failed to load (libcudnn.so.9" in msg and "pip uninstall -y onnxruntime onnxruntime-gpu" in msg


def test_ort_tensorrt_provider_has_cuda_fallback_and_cached_engines(tmp_path, monkeypatch):
    monkeypatch.setenv("LATENCY_CACHE_DIR", str(tmp_path))
    providers = OnnxRuntimeBackend(provider="tensorrt", device_id=1, fp16=True).providers()
    assert [p[0] for p in providers] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    trt = providers[0][1]
    assert trt["device_id"] == 1 and trt["trt_fp16_enable"] and providers[1][1] == {"device_id": 1}
    assert trt["trt_engine_cache_path"].startswith(str(tmp_path)) and trt["trt_timing_cache_path"] == \
        trt["trt_engine_cache_path"]


def test_every_result_records_its_clock(tiny_onnx, fast):
    result = measure_model(tiny_onnx, "cpu", protocol=fast)
    assert result.env["clock"] == "host perf_counter_ns around run_with_iobinding"
