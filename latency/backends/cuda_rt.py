"""CUDA through NVIDIA's own Python bindings (``cuda-bindings`` / ``cuda-python``), imported lazily.

Device facts, device memory, streams and events for the TensorRT backend, so that measuring on a
device host needs no torch CUDA build. Every call's status is checked. Untested on a GPU here.
"""

from __future__ import annotations

from typing import Any

from ..errors import BackendUnavailableError, LatencyError

INSTALL_HINT = "pip install 'cuda-bindings>=12.6' (the [gpu], [trt] and [v100] extras include it)"


def cudart() -> Any:
    """The CUDA runtime module of cuda-bindings (``cuda.bindings.runtime``, or ``cuda.cudart`` before 12.6).

    Raises:
        BackendUnavailableError: neither is installed, with the install command.
    """
    try:
        from cuda.bindings import runtime

        return runtime
    except ImportError:
        pass
    try:
        from cuda import cudart as runtime  # cuda-python < 12.6

        return runtime
    except ImportError:
        raise BackendUnavailableError(f"CUDA's Python bindings are not installed: {INSTALL_HINT}") from None


def check(result: Any, what: str) -> Any:
    """Unpack a cuda-bindings result ``(status, *values)``; raise on a status other than success.

    Returns:
        None, the one value, or a tuple of values.

    Raises:
        LatencyError: naming the call and CUDA's error name.
    """
    status, *values = result if isinstance(result, tuple) else (result,)
    if int(status) != 0:  # cudaSuccess
        raise LatencyError(f"CUDA {what} failed: {getattr(status, 'name', status)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _text(raw: Any) -> str:
    return raw.decode(errors="replace").split("\x00", 1)[0].strip() if isinstance(raw, bytes) else str(raw)


def gpu_count() -> int:
    """Number of visible CUDA devices (0 when the driver or bindings are missing)."""
    try:
        return int(check(cudart().cudaGetDeviceCount(), "cudaGetDeviceCount"))
    except LatencyError:
        return 0


def gpu_info(device_id: int = 0) -> dict | None:
    """``{"name", "compute_capability", "memory_mb"}`` of CUDA device ``device_id``; None when unreadable."""
    try:
        props = check(cudart().cudaGetDeviceProperties(int(device_id)), "cudaGetDeviceProperties")
    except LatencyError:
        return None
    return {"name": _text(props.name), "compute_capability": [int(props.major), int(props.minor)],
            "memory_mb": int(props.totalGlobalMem) >> 20}


class CudaDevice:
    """Device memory, a stream and events on one CUDA device, released by :meth:`close`."""

    def __init__(self, device_id: int = 0):
        self.rt = cudart()
        self.device_id = int(device_id)
        check(self.rt.cudaSetDevice(self.device_id), f"cudaSetDevice({self.device_id})")
        self._ptrs: list[int] = []
        self._events: list[Any] = []
        self.stream = check(self.rt.cudaStreamCreate(), "cudaStreamCreate")

    @property
    def stream_handle(self) -> int:
        """The stream as the integer handle TensorRT's ``execute_async_v3`` takes."""
        return int(self.stream)

    def malloc(self, nbytes: int) -> int:
        """Device memory of ``nbytes`` (at least 1) bytes; returns its address."""
        ptr = int(check(self.rt.cudaMalloc(max(1, int(nbytes))), f"cudaMalloc({nbytes})"))
        self._ptrs.append(ptr)
        return ptr

    def htod(self, ptr: int, array: Any) -> None:
        """Copy a contiguous host array to device address ``ptr`` (a copy, not a kernel launch)."""
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        check(self.rt.cudaMemcpy(ptr, array.ctypes.data, array.nbytes, kind), "cudaMemcpy host->device")

    def event(self) -> Any:
        """A new timing event."""
        ev = check(self.rt.cudaEventCreate(), "cudaEventCreate")
        self._events.append(ev)
        return ev

    def record(self, event: Any) -> None:
        """Record ``event`` on the stream."""
        check(self.rt.cudaEventRecord(event, self.stream), "cudaEventRecord")

    def elapsed_ms(self, start: Any, end: Any) -> float:
        """Milliseconds between two recorded, completed events."""
        return float(check(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def synchronize(self) -> None:
        """Wait for the stream."""
        check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")

    def capture_graph(self, enqueue) -> Any:
        """Capture what ``enqueue()`` puts on the stream into an instantiated CUDA graph."""
        mode = self.rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal
        check(self.rt.cudaStreamBeginCapture(self.stream, mode), "cudaStreamBeginCapture")
        enqueue()
        graph = check(self.rt.cudaStreamEndCapture(self.stream), "cudaStreamEndCapture")
        return check(self.rt.cudaGraphInstantiate(graph, 0), "cudaGraphInstantiate")

    def launch_graph(self, graph_exec: Any) -> None:
        """Launch an instantiated graph on the stream."""
        check(self.rt.cudaGraphLaunch(graph_exec, self.stream), "cudaGraphLaunch")

    def close(self) -> None:
        """Free the memory, events and stream (errors while freeing are ignored)."""
        for ptr in self._ptrs:
            self.rt.cudaFree(ptr)
        for ev in self._events:
            self.rt.cudaEventDestroy(ev)
        self.rt.cudaStreamDestroy(self.stream)
        self._ptrs, self._events = [], []
