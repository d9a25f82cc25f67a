"""TensorRT backend: ONNX parser, engine per precision / GPU / TensorRT version, CUDA-event timing.

TensorRT 10 builds weakly typed networks (fp16 through ``BuilderFlag.FP16``); TensorRT 11 builds
strongly typed networks only, so fp16 there needs an fp16 ONNX file. Which applies is read from the
installed version, which is part of the fingerprint. Buffers, streams and events come from CUDA's own
Python bindings (:mod:`.cuda_rt`), so the device host needs no torch CUDA build.

Untested on real hardware in this repository (the development machine has no GPU); the pure parts
(precision plan, buffer allocation from an engine description) are tested with stubs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from common.fileio import atomic_write_bytes

from ..cache import ArtifactCache, file_sha256
from ..errors import BackendUnavailableError, BadModelError, LatencyError
from .base import Backend, Prepared, check_gpu_match, register_backend
from .cuda_rt import CudaDevice, gpu_count, gpu_info

PRECISIONS = ("fp32", "fp16", "int8")
LIBS_HINT = ("the TensorRT libraries of the bindings' version from https://pypi.nvidia.com (tensorrt-cu13-libs; "
             "cu12 on a V100) or a tarball (docs/latency.md)")


def parse_version(text: str) -> tuple[int, ...]:
    """'10.4.0.26' -> (10, 4, 0, 26); non-numeric parts stop the parse."""
    out = []
    for part in str(text).split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def volta_refusal(trt_version: str, compute_capability: Sequence[int]) -> str | None:
    """The reason to refuse TensorRT >= 10.5 on a Volta GPU (sm_70, e.g. V100), else None."""
    if tuple(compute_capability) == (7, 0) and parse_version(trt_version)[:2] >= (10, 5):
        return (f"TensorRT {trt_version} does not support Volta GPUs (V100, sm_70): support ended in 10.5; "
                "install TensorRT 10.4 for CUDA 12: pip install 'donna-nas[v100]' and tensorrt-cu12-libs==10.4.0")
    return None


def import_tensorrt() -> Any:
    """The TensorRT Python module: ``tensorrt`` (metapackage) or ``tensorrt_bindings`` (standalone wheels).

    Raises:
        BackendUnavailableError: not installed, or installed without its libraries, with the fix.
    """
    last: Exception | None = None
    for name in ("tensorrt", "tensorrt_bindings"):
        try:
            return __import__(name)
        except ImportError as err:  # ModuleNotFoundError, or a missing libnvinfer.so
            last = err
            if not isinstance(err, ModuleNotFoundError) or err.name != name:
                break
    detail = str(last).strip().splitlines()[0] if last else ""
    if "libnvinfer" in detail or "cannot open shared object" in detail:
        raise BackendUnavailableError(f"TensorRT's Python bindings cannot load its libraries ({detail}); install "
                                      f"{LIBS_HINT}")
    raise BackendUnavailableError("TensorRT is not installed: pip install 'donna-nas[gpu]' (A100/H100/H200) or "
                                  f"'donna-nas[v100]', plus {LIBS_HINT}")


def typing_mode(trt_version: str) -> str:
    """``"weak-or-strong"`` for TensorRT 10 (fp16 flag available), ``"strong-only"`` from TensorRT 11."""
    major = (parse_version(trt_version) or (0,))[0]
    if major < 10:
        raise BackendUnavailableError(f"TensorRT {trt_version} is older than 10; install TensorRT 10 or 11")
    return "strong-only" if major >= 11 else "weak-or-strong"


def build_plan(trt_version: str, precision: str, onnx_dtype: str) -> dict:
    """How to build an engine: network typing and builder flags for a precision and an ONNX input type.

    Args:
        trt_version: the installed TensorRT version.
        precision: ``fp32``, ``fp16`` or ``int8``.
        onnx_dtype: numpy name of the ONNX file's input type (``float32`` or ``float16``).

    Returns:
        ``{"typing": "weak"|"strong", "flags": [BuilderFlag names], "precision": precision}``.

    Raises:
        LatencyError: an unknown precision, int8 (no calibration here), or an fp16 request TensorRT 11
            cannot honour with this ONNX file, each with the fix.
    """
    if precision not in PRECISIONS:
        raise LatencyError(f"TensorRT precision {precision!r} is not one of {', '.join(PRECISIONS)}; "
                           "set the profile option 'precision' to fp16 or fp32")
    if precision == "int8":
        raise LatencyError("TensorRT int8 needs a calibration set or a Q/DQ-quantized ONNX, and this backend does "
                           "not calibrate: use precision fp16 or fp32")
    if onnx_dtype not in ("float32", "float16"):
        raise LatencyError(f"TensorRT backend measures float32 or float16 ONNX inputs, not {onnx_dtype}")
    if onnx_dtype == "float16":
        if precision != "fp16":
            raise LatencyError(f"the ONNX file's input is float16 but the precision asked for is {precision}; "
                               "export the model in float32 or ask for fp16")
        return {"typing": "strong", "flags": [], "precision": precision}
    if typing_mode(trt_version) == "strong-only":
        if precision == "fp16":
            raise LatencyError(f"TensorRT {trt_version} builds strongly typed networks only, so fp16 needs an fp16 "
                               "ONNX file (export the model in half precision, or convert it with ModelOpt's "
                               "AutoCast); this one is float32: use precision fp32, or TensorRT 10 for the FP16 flag")
        return {"typing": "strong", "flags": [], "precision": precision}
    return {"typing": "weak", "flags": ["FP16"] if precision == "fp16" else [], "precision": precision}


def make_network_and_config(trt: Any, builder: Any, plan: dict) -> tuple[Any, Any]:
    """Create the network (strongly typed when the plan says so) and a config with the plan's flags."""
    flags = 0
    if plan["typing"] == "strong":
        strong = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
        if strong is not None:  # TensorRT 11 may have dropped the flag: strong typing is its only mode
            flags |= 1 << int(strong)
    network = builder.create_network(flags)
    config = builder.create_builder_config()
    for name in plan["flags"]:
        config.set_flag(getattr(trt.BuilderFlag, name))
    return network, config


def onnx_input_dtype(path: Path) -> str:
    """Numpy name of the first graph input's element type of an ONNX file."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # onnx raises DecodeError and others for bad files
        raise BadModelError(f"cannot read ONNX file {path}: {err}") from None
    if not model.graph.input:
        raise BadModelError(f"{path.name} has no graph input")
    return np.dtype(tensor_dtype_to_np_dtype(model.graph.input[0].type.tensor_type.elem_type)).name


@dataclass(frozen=True)
class TensorSpec:
    """One engine I/O tensor: name, direction, concrete shape and numpy dtype name."""

    name: str
    is_input: bool
    shape: tuple[int, ...]
    dtype: str


def engine_io(trt: Any, engine: Any, context: Any, input_shape: Sequence[int]) -> list[TensorSpec]:
    """The engine's I/O tensors with the dtypes the engine uses (dynamic inputs set to ``input_shape``)."""
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = {n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT}
    for name in inputs:
        if any(d < 0 for d in engine.get_tensor_shape(name)) and not context.set_input_shape(name, tuple(input_shape)):
            raise BadModelError(f"TensorRT refused input shape {tuple(input_shape)} for input {name!r}")
    specs = []
    for name in names:
        try:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
        except TypeError:
            raise LatencyError(f"engine tensor {name!r} has type {engine.get_tensor_dtype(name)}, which has no numpy "
                               "equivalent to allocate") from None
        specs.append(TensorSpec(name, name in inputs, tuple(int(d) for d in context.get_tensor_shape(name)), dtype))
    return specs


def host_input(spec: TensorSpec, rng: np.random.Generator) -> np.ndarray:
    """Input data of the tensor's own dtype: normal noise for floats, zeros and ones for integers and bools."""
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return np.ascontiguousarray(rng.standard_normal(spec.shape).astype(dtype))
    if dtype.kind in "iu":
        return np.ascontiguousarray(rng.integers(0, 2, size=spec.shape).astype(dtype))
    return np.zeros(spec.shape, dtype=dtype)


def allocate_io(specs: Sequence[TensorSpec], memory: Any, seed: int = 0) -> dict[str, int]:
    """Device buffers sized by each tensor's shape and dtype; inputs filled from the host by copies.

    Args:
        specs: from :func:`engine_io` (or a stub engine description in tests).
        memory: has ``malloc(nbytes) -> address`` and ``htod(address, array)`` (a :class:`CudaDevice`).
        seed: seed of the input data.

    Returns:
        Tensor name -> device address.
    """
    rng = np.random.default_rng(seed)
    addresses = {}
    for spec in specs:
        if any(d < 0 for d in spec.shape):
            raise BadModelError(f"engine tensor {spec.name!r} still has a dynamic shape {spec.shape}")
        nbytes = int(np.prod(spec.shape, dtype=np.int64)) * np.dtype(spec.dtype).itemsize
        addresses[spec.name] = memory.malloc(nbytes)
        if spec.is_input:
            memory.htod(addresses[spec.name], host_input(spec, rng))
    return addresses


@register_backend
class TensorRTBackend(Backend):
    """TensorRT engine built from ONNX, cached with its hash; timed with CUDA events after warm-up."""

    name = "tensorrt"
    OPTIONS = {"precision": "fp16", "gpu_match": None, "allow_other_gpu": False, "workspace_mb": 1024,
               "device_id": 0, "cuda_graph": False}

    def __init__(self, **options):
        super().__init__(**options)
        build_plan("10", self.options["precision"], "float32")  # a bad or int8 precision fails at once

    @classmethod
    def unavailable_reason(cls, options: dict | None = None) -> str | None:
        opts = {**cls.OPTIONS, **(options or {})}
        try:
            trt = import_tensorrt()
            typing_mode(trt.__version__)
            count, device_id = gpu_count(), int(opts["device_id"])
            if count == 0:
                return "no CUDA GPU is visible (cudaGetDeviceCount found none, or the NVIDIA driver is missing)"
            if not 0 <= device_id < count:
                return f"device_id {device_id} does not exist: {count} CUDA GPU(s) are visible"
            info = gpu_info(device_id) or {"name": None, "compute_capability": [0, 0]}
            check_gpu_match(opts["gpu_match"], info["name"], force=bool(opts["allow_other_gpu"]))
        except BackendUnavailableError as err:
            return str(err)
        return volta_refusal(trt.__version__, info["compute_capability"])

    def fingerprint(self) -> dict:
        try:
            version = import_tensorrt().__version__
        except BackendUnavailableError:
            version = None
        info = gpu_info(int(self.options["device_id"])) if version else None
        return {"backend": self.name, "tensorrt": version,
                "typing": typing_mode(version) if version else None,
                "gpu": info["name"] if info else None,
                "compute_capability": info["compute_capability"] if info else None,
                "precision": self.options["precision"], "cuda_graph": bool(self.options["cuda_graph"])}

    def _build(self, onnx_path: Path, plan: dict, out: Path, timing_path: Path) -> None:
        trt = import_tensorrt()
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network, config = make_network_and_config(trt, builder, plan)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BadModelError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.options["workspace_mb"]) << 20)
        cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise BadModelError(f"TensorRT failed to build an engine for {onnx_path.name} ({plan})")
        out.write_bytes(bytes(engine))
        atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))

    def _engine(self, engine_path: Path) -> tuple[Any, Any, Any]:
        trt = import_tensorrt()
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            engine_path.unlink(missing_ok=True)
            raise LatencyError(f"TensorRT {trt.__version__} could not deserialise the cached engine {engine_path} "
                               "(another TensorRT version or GPU?); it was deleted, run again to rebuild it")
        context = engine.create_execution_context()
        if context is None:
            raise LatencyError("TensorRT could not create an execution context (out of GPU memory?)")
        return runtime, engine, context

    def prepare(self, model: Path | str, input_shape: Sequence[int]) -> Prepared:
        reason = self.unavailable_reason(self.options)
        if reason:
            raise BackendUnavailableError(reason)
        trt = import_tensorrt()
        path, fp = Path(model), self.fingerprint()
        plan = build_plan(fp["tensorrt"], self.options["precision"], onnx_input_dtype(path))
        device = CudaDevice(int(self.options["device_id"]))
        try:
            cache = ArtifactCache()
            timing = cache.root / "trt_timing" / f"{fp['gpu']}-{fp['tensorrt']}.cache".replace(" ", "_")
            parts = {"onnx_sha256": file_sha256(path), **fp, "plan": plan, "shape": list(input_shape)}
            engine_path = cache.get_or_make("trt", parts, ".engine",
                                            lambda tmp: self._build(path, plan, tmp, timing))
            runtime, engine, context = self._engine(engine_path)
            specs = engine_io(trt, engine, context, input_shape)
            for name, address in allocate_io(specs, device).items():
                if not context.set_tensor_address(name, address):
                    raise LatencyError(f"TensorRT refused the device address of tensor {name!r}")
            run = self._runner(context, device)
        except BaseException:
            device.close()
            raise
        env = {**self.environment(), "model_sha256": parts["onnx_sha256"], "engine_sha256": file_sha256(engine_path),
               "input_shape": list(input_shape), "timing_cache": str(timing), "plan": plan,
               "io": [vars(s) | {"shape": list(s.shape)} for s in specs], "device_id": device.device_id,
               "clock": "cuda-events" + (" around CUDA graph launches" if self.options["cuda_graph"] else "")}
        return Prepared(run=run, env=env, close=device.close, keep=(runtime, engine, context))

    def _runner(self, context: Any, device: CudaDevice):
        def enqueue() -> None:
            if not context.execute_async_v3(device.stream_handle):
                raise LatencyError("TensorRT execute_async_v3 failed (enqueue returned False); no time was measured")

        step = enqueue
        if self.options["cuda_graph"]:
            enqueue()  # TensorRT needs one enqueue before capture
            device.synchronize()
            graph = device.capture_graph(enqueue)

            def step() -> None:
                device.launch_graph(graph)

        events: list[tuple[Any, Any]] = []

        def run(n: int) -> list[float]:
            while len(events) < n:
                events.append((device.event(), device.event()))
            for start, end in events[:n]:
                device.record(start)
                step()
                device.record(end)
            device.synchronize()
            return [device.elapsed_ms(start, end) for start, end in events[:n]]

        return run
