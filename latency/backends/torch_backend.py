"""Eager PyTorch backend on CPU (wall clock) or CUDA (CUDA events), for comparison with the runtimes."""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..errors import BackendUnavailableError, BadModelError
from .base import Backend, Prepared, cpu_model, cuda_gpu_name, register_backend


@register_backend
class TorchBackend(Backend):
    """Runs an ``nn.Module`` under ``torch.inference_mode``."""

    name = "torch"
    input_kind = "module"
    OPTIONS = {"device": "cpu", "threads": None}

    @classmethod
    def unavailable_reason(cls, options: dict | None = None) -> str | None:
        import torch

        if (options or {}).get("device", "cpu") != "cuda":
            return None
        if not torch.cuda.is_available():
            return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
        return missing_kernels(torch.cuda.get_device_capability(0), torch.cuda.get_arch_list(), torch.__version__)

    def fingerprint(self) -> dict:
        import torch

        where = cuda_gpu_name() if self.options["device"] == "cuda" else cpu_model()
        return {"backend": self.name, "torch": torch.__version__, "device": self.options["device"],
                "hardware": where, "threads": self.options["threads"]}

    def prepare(self, model, input_shape: Sequence[int]) -> Prepared:
        import torch

        if not isinstance(model, torch.nn.Module):
            raise BadModelError("the torch backend measures an nn.Module or an Arch, not an .onnx file")
        reason = self.unavailable_reason(self.options)
        if reason:
            raise BackendUnavailableError(reason)
        if self.options["threads"]:
            torch.set_num_threads(int(self.options["threads"]))
        device = torch.device(self.options["device"])
        module = model.eval().to(device)
        x = torch.randn(*input_shape, device=device)
        run = self._cuda_runner(module, x) if device.type == "cuda" else self._cpu_runner(module, x)
        clock = "cuda-events (torch)" if device.type == "cuda" else "host perf_counter_ns around the forward pass"
        env = {**self.environment(), "input_shape": list(input_shape), "torch_threads": torch.get_num_threads(),
               "clock": clock}
        return Prepared(run=run, env=env, keep=(module, x))

    @staticmethod
    def _cpu_runner(module, x):
        import torch

        def run(n: int) -> list[float]:
            times = []
            with torch.inference_mode():
                for _ in range(n):
                    t0 = time.perf_counter_ns()
                    module(x)
                    times.append((time.perf_counter_ns() - t0) / 1e6)
            return times

        return run

    @staticmethod
    def _cuda_runner(module, x):
        import torch

        def run(n: int) -> list[float]:
            events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
            with torch.inference_mode():
                for start, end in events:
                    start.record()
                    module(x)
                    end.record()
            torch.cuda.synchronize()
            return [s.elapsed_time(e) for s, e in events]

        return run


def missing_kernels(capability: tuple[int, int], arch_list: list[str], version: str) -> str | None:
    """Why this torch build cannot run on a GPU of ``capability`` (no sm_XY kernels, no PTX to JIT), else None.

    torch's CUDA 13 wheels stop at Turing/Volta's successors: a V100 (sm_70) needs the CUDA 12.6 wheels.
    """
    major, minor = capability
    sm = major * 10 + minor
    archs = {int(a.split("_")[1]) for a in arch_list if a.startswith("sm_") and a.split("_")[1].isdigit()}
    ptx = {int(a.split("_")[1]) for a in arch_list if a.startswith("compute_") and a.split("_")[1].isdigit()}
    if not arch_list or any(a // 10 == major and a <= sm for a in archs) or any(p <= sm for p in ptx):
        return None
    return (f"torch {version} has no kernels for this GPU (sm_{sm}; built for {', '.join(arch_list)}): install "
            "torch from its CUDA 12.6 index, e.g. pip install torch --index-url https://download.pytorch.org/whl/cu126")
