"""What a network costs on a device: ONNX export, backends, device profiles, statistics, latency tables.

Public API::

    from latency import (get_profile, list_profiles, measure_model, LatencyResult, LatencyTable,
                         build_latency_table, export_onnx, LatencyEstimator, MeasuredLatency, CorrectedLatency)
"""

from .errors import (
    BackendUnavailableError,
    BadModelError,
    DeviceDisconnectedError,
    FingerprintMismatchError,
    LatencyError,
    UnknownDeviceError,
)
from .estimator import CorrectedLatency, LatencyEstimator, MeasuredLatency
from .export import export_onnx
from .measure import LatencyResult, measure_model
from .profiles import Profile, get_profile, list_profiles
from .protocol import ProtocolConfig
from .table import LatencyTable
from .table_build import build_latency_table

__all__ = [
    "BackendUnavailableError", "BadModelError", "CorrectedLatency", "DeviceDisconnectedError",
    "FingerprintMismatchError", "LatencyError", "LatencyEstimator", "LatencyResult", "LatencyTable",
    "MeasuredLatency", "Profile", "ProtocolConfig", "UnknownDeviceError", "build_latency_table", "export_onnx",
    "get_profile", "list_profiles", "measure_model",
]
