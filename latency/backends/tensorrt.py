"""TensorRT 10 backend: ONNX parser, fp16 builder, timing cache per GPU and version, CUDA-event timing.

Untested on real hardware in this repository (the development machine has no GPU).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from blocks.fileio import atomic_write_bytes

from ..cache import ArtifactCache, file_sha256
from ..errors import BackendUnavailableError, BadModelError
from .base import Backend, Prepared, check_gpu_match, cuda_gpu_name, register_backend


def parse_version(text: str) -> tuple[int, ...]:
    """'10.4.0.26' -> (10, 4, 0, 26); non-numeric parts stop the parse."""
    out = []
    for part in text.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        if not digits:
            break
        out.append(int(digits))
    return tuple(out)


def volta_refusal(trt_version: str, compute_capability: tuple[int, int]) -> str | None:
    """The reason to refuse TensorRT >= 10.5 on a Volta GPU (sm_70, e.g. V100), else None."""
    if tuple(compute_capability) == (7, 0) and parse_version(trt_version)[:2] >= (10, 5):
        return (f"TensorRT {trt_version} does not support Volta GPUs (V100, sm_70): support ended in 10.5; "
                "install TensorRT <= 10.4 built for CUDA 12, e.g. pip install 'tensorrt-cu12<10.5'")
    return None


@register_backend
class TensorRTBackend(Backend):
    """TensorRT engine built from ONNX, cached with its hash; timed with CUDA events after warm-up."""

    name = "tensorrt"
    OPTIONS = {"precision": "fp16", "gpu_match": None, "workspace_mb": 1024, "device_id": 0}

    @classmethod
    def unavailable_reason(cls, options: dict | None = None) -> str | None:
        try:
            import tensorrt as trt
        except ImportError:
            return "tensorrt is not installed (pip install 'donna-nas[gpu]' for TensorRT 10)"
        try:
            import torch
        except ImportError:
            return "the tensorrt backend uses torch for CUDA buffers and events; torch is missing"
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
        return volta_refusal(trt.__version__, torch.cuda.get_device_capability(0))

    def fingerprint(self) -> dict:
        try:
            import tensorrt as trt
            version = trt.__version__
        except ImportError:
            version = None
        return {"backend": self.name, "tensorrt": version, "gpu": cuda_gpu_name(),
                "precision": self.options["precision"]}

    def _build(self, onnx_path: Path, out: Path, timing_path: Path) -> None:
        import tensorrt as trt

        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(0)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BadModelError(f"TensorRT cannot parse {onnx_path.name}: {errors}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(self.options["workspace_mb"]) << 20)
        if self.options["precision"] == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
        cache = config.create_timing_cache(timing_path.read_bytes() if timing_path.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        engine = builder.build_serialized_network(network, config)
        if engine is None:
            raise BadModelError(f"TensorRT failed to build an engine for {onnx_path.name}")
        out.write_bytes(bytes(engine))
        atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))

    def prepare(self, model: Path | str, input_shape: Sequence[int]) -> Prepared:
        reason = self.unavailable_reason(self.options)
        if reason:
            raise BackendUnavailableError(reason)
        import tensorrt as trt
        import torch

        check_gpu_match(self.options["gpu_match"], cuda_gpu_name())
        path, cache = Path(model), ArtifactCache()
        fp = self.fingerprint()
        timing = cache.root / "trt_timing" / f"{fp['gpu']}-{fp['tensorrt']}.cache".replace(" ", "_")
        parts = {"onnx_sha256": file_sha256(path), **fp, "shape": list(input_shape)}
        engine_path = cache.get_or_make("trt", parts, ".engine", lambda tmp: self._build(path, tmp, timing))
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        context = engine.create_execution_context()
        buffers = []
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            shape = tuple(context.get_tensor_shape(name))
            buf = torch.randn(shape, device="cuda", dtype=torch.float32)
            context.set_tensor_address(name, buf.data_ptr())
            buffers.append(buf)
        stream = torch.cuda.Stream()
        run = self._runner(context, stream)
        env = {**self.environment(), "model_sha256": parts["onnx_sha256"], "engine_sha256": file_sha256(engine_path),
               "input_shape": list(input_shape), "timing_cache": str(timing)}
        return Prepared(run=run, env=env, keep=(runtime, engine, context, buffers, stream))

    @staticmethod
    def _runner(context, stream):
        import torch

        def run(n: int) -> list[float]:
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
            for start, end in events:
                start.record(stream)
                context.execute_async_v3(stream.cuda_stream)
                end.record(stream)
            stream.synchronize()
            return [start.elapsed_time(end) for start, end in events]

        return run
