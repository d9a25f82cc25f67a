"""Exceptions raised by the latency package; each message is one line saying what to fix."""

from __future__ import annotations


class LatencyError(ValueError):
    """Base class: bad input or a measurement that cannot be trusted."""


class BadModelError(LatencyError):
    """A model file is missing, corrupt, or does not match the requested input shape."""


class UnknownDeviceError(LatencyError):
    """A device profile name is not known."""


class BackendUnavailableError(LatencyError):
    """The backend a profile names cannot run here (missing package, GPU, phone or provider)."""


class DeviceDisconnectedError(LatencyError):
    """The device went away during a measurement.

    Attributes:
        partial_samples_ms: samples of the interrupted measurement taken before the device was lost.
    """

    def __init__(self, message: str, partial_samples_ms: list[float] | None = None):
        super().__init__(message)
        self.partial_samples_ms = list(partial_samples_ms or [])


class FingerprintMismatchError(LatencyError):
    """A latency table was measured on another device than the one in use."""
