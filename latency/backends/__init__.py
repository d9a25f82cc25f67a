"""Backend registry: ``onnxruntime``, ``tensorrt``, ``ort-mobile`` (Android over adb) and ``torch``."""

from .base import BACKENDS, Backend, Prepared, backend_class, create_backend, list_backends, register_backend
from .onnxruntime import OnnxRuntimeBackend
from .ort_mobile import OrtMobileBackend
from .tensorrt import TensorRTBackend
from .torch_backend import TorchBackend

__all__ = [
    "BACKENDS", "Backend", "OnnxRuntimeBackend", "OrtMobileBackend", "Prepared", "TensorRTBackend", "TorchBackend",
    "backend_class", "create_backend", "list_backends", "register_backend",
]
