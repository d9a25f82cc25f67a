"""ONNX Runtime backend: CPU provider with fixed threads; CUDA and TensorRT providers where installed."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..cache import default_cache_dir, file_sha256
from ..errors import BackendUnavailableError, BadModelError
from .base import Backend, Prepared, check_gpu_match, cpu_clocks, cpu_model, cuda_gpu_name, register_backend

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider",
             "tensorrt": "TensorrtExecutionProvider"}


GPU_FIX = {
    "CUDAExecutionProvider": "install the CUDA and cuDNN libraries this onnxruntime-gpu was built for "
                             "(pip install 'onnxruntime-gpu[cuda,cudnn]')",
    "TensorrtExecutionProvider": "install the TensorRT libraries (libnvinfer) this onnxruntime-gpu was built for "
                                 "and put them on LD_LIBRARY_PATH",
}


def wheel_clash() -> str | None:
    """A note when both onnxruntime and onnxruntime-gpu are installed (they share one package folder)."""
    from importlib import metadata

    found = []
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            metadata.version(name)
            found.append(name)
        except metadata.PackageNotFoundError:
            continue
    if len(found) < 2:
        return None
    return ("both onnxruntime and onnxruntime-gpu are installed and overwrite each other: "
            "pip uninstall -y onnxruntime onnxruntime-gpu && pip install 'donna-nas[gpu]'")


def provider_failure(provider: str, detail: str) -> str:
    """The one-line reason and fix when a GPU provider is offered but fails to load."""
    fix = wheel_clash() or GPU_FIX.get(provider, "check the provider's libraries")
    return f"ONNX Runtime's {provider} is installed but failed to load ({detail}); {fix}"


def check_providers(requested: str, session_providers: Sequence[str]) -> None:
    """Refuse a session whose first provider is not the one asked for.

    ONNX Runtime can fall back to the CPU silently; a CPU run must never be reported as a GPU number.

    Raises:
        BackendUnavailableError: naming both providers and the fix.
    """
    if not session_providers or session_providers[0] != requested:
        raise BackendUnavailableError(provider_failure(
            requested, f"the session fell back to {list(session_providers)}; refusing to report that as a "
            "measurement of the requested provider"))


@register_backend
class OnnxRuntimeBackend(Backend):
    """ONNX Runtime through its Python API; one session per model, inputs bound once."""

    name = "onnxruntime"
    OPTIONS = {
        "provider": "cpu",  # cpu | cuda | tensorrt
        "intra_op_threads": None,  # None: ONNX Runtime's default (all cores) -- profiles fix it
        "inter_op_threads": 1,
        "device_id": 0,  # GPU index for cuda / tensorrt
        "fp16": False,  # TensorRT provider precision
        "gpu_match": None,  # substring the GPU name should contain (refused otherwise)
        "allow_other_gpu": False,  # measure on another GPU than gpu_match names (warns)
    }

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["provider"] not in PROVIDERS:
            raise BadModelError(f"unknown ONNX Runtime provider {self.options['provider']!r}; "
                                f"choose one of {sorted(PROVIDERS)}")
        self.provider = PROVIDERS[self.options["provider"]]

    @classmethod
    def unavailable_reason(cls, options: dict | None = None) -> str | None:
        import onnxruntime as ort

        provider = PROVIDERS.get((options or {}).get("provider", "cpu"), "?")
        available = ort.get_available_providers()
        if provider not in available:
            fix = wheel_clash() or "pip install 'donna-nas[gpu]' on a machine with a CUDA GPU"
            return f"ONNX Runtime {ort.__version__} here offers {available}, not {provider} ({fix})"
        return None

    def fingerprint(self) -> dict:
        import onnxruntime as ort

        fp = {"backend": self.name, "provider": self.provider, "onnxruntime": ort.__version__,
              "intra_op_threads": self.options["intra_op_threads"]}
        if self.options["provider"] == "cpu":
            fp["cpu"] = cpu_model()
        else:
            fp["gpu"] = cuda_gpu_name(int(self.options["device_id"]))
            fp["fp16"] = bool(self.options["fp16"])
        return fp

    def _session_options(self):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        if self.options["intra_op_threads"] is not None:
            so.intra_op_num_threads = int(self.options["intra_op_threads"])
        so.inter_op_num_threads = int(self.options["inter_op_threads"])
        if self.provider != "CPUExecutionProvider":
            so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        return so

    def _provider_options(self) -> dict:
        opts: dict = {}
        if self.provider != "CPUExecutionProvider":
            opts["device_id"] = int(self.options["device_id"])
        if self.provider == "TensorrtExecutionProvider":
            cache = default_cache_dir() / "ort_trt"
            cache.mkdir(parents=True, exist_ok=True)
            opts.update(trt_fp16_enable=bool(self.options["fp16"]), trt_engine_cache_enable=True,
                        trt_engine_cache_path=str(cache), trt_timing_cache_enable=True,
                        trt_timing_cache_path=str(cache))
        return opts

    def providers(self) -> list:
        """Providers of the session: the TensorRT provider gets CUDA as fallback for nodes it cannot take."""
        chosen = [(self.provider, self._provider_options())]
        if self.provider == "TensorrtExecutionProvider":
            chosen.append(("CUDAExecutionProvider", {"device_id": int(self.options["device_id"])}))
        return chosen

    def _session(self, path: Path):
        import onnxruntime as ort

        reason = self.unavailable_reason(self.options)
        if reason:
            raise BackendUnavailableError(reason)
        if self.provider != "CPUExecutionProvider":
            check_gpu_match(self.options["gpu_match"], cuda_gpu_name(int(self.options["device_id"])),
                            force=bool(self.options["allow_other_gpu"]))
        try:
            sess = ort.InferenceSession(str(path), self._session_options(), providers=self.providers())
        except Exception as err:  # ORT raises its own exception types for bad files and providers
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            if self.provider != "CPUExecutionProvider" and _loads_on_cpu(path):
                raise BackendUnavailableError(provider_failure(self.provider, detail)) from None
            raise BadModelError(f"ONNX Runtime cannot load {path.name}: {detail}") from None
        check_providers(self.provider, sess.get_providers())
        return sess

    def prepare(self, model: Path | str, input_shape: Sequence[int]) -> Prepared:
        path = Path(model)
        sess = self._session(path)
        inp = sess.get_inputs()[0]
        shape = tuple(input_shape)
        if tuple(inp.shape) != shape:
            raise BadModelError(f"input shape {shape} does not match {path.name}'s input {tuple(inp.shape)}")
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        run = self._cpu_runner(sess, inp.name, x) if self.provider == "CPUExecutionProvider" \
            else self._gpu_runner(sess, inp.name, x)
        env = {**self.environment(), "model_sha256": file_sha256(path), "input_shape": list(shape),
               "session_providers": sess.get_providers(), "host_clocks_khz": cpu_clocks(),
               "clock": "host perf_counter_ns around run_with_iobinding"
               + ("" if self.provider == "CPUExecutionProvider" else " and synchronize_outputs")}
        return Prepared(run=run, env=env, keep=(sess, x))

    @staticmethod
    def _cpu_runner(sess, name: str, x: np.ndarray):
        io = sess.io_binding()
        io.bind_cpu_input(name, x)
        for out in sess.get_outputs():
            io.bind_output(out.name)
        clock = time.perf_counter_ns

        def run(n: int) -> list[float]:
            times = []
            for _ in range(n):
                t0 = clock()
                sess.run_with_iobinding(io)
                times.append((clock() - t0) / 1e6)
            return times

        return run

    def _gpu_runner(self, sess, name: str, x: np.ndarray):
        """IOBinding with input and outputs on the GPU, so copies are not timed (untested: no GPU here)."""
        import onnxruntime as ort

        device_id = int(self.options["device_id"])
        io = sess.io_binding()
        io.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", device_id))
        for out in sess.get_outputs():
            io.bind_output(out.name, "cuda", device_id)
        clock = time.perf_counter_ns

        def run(n: int) -> list[float]:
            times = []
            for _ in range(n):
                t0 = clock()
                sess.run_with_iobinding(io)
                io.synchronize_outputs()
                times.append((clock() - t0) / 1e6)
            return times

        return run


def _loads_on_cpu(path: Path) -> bool:
    """Whether the model itself loads (on the CPU provider): then a GPU session's failure is the provider's."""
    import onnxruntime as ort

    try:
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception:  # a bad model fails here too
        return False
    return True
