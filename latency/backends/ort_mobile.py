"""ONNX Runtime Mobile on an Android phone over adb: .ort model, pushed perf tool, big-core pinning.

Only tested against the stand-in ``adb`` in ``tests/latency/fake_adb``; no real phone has run it yet.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..cache import ArtifactCache, file_sha256
from ..errors import BackendUnavailableError, LatencyError
from .adb import (
    AdbClient,
    core_mask,
    parse_max_freqs,
    parse_perf_test,
    parse_sha256sum,
    parse_thermal,
    select_cores,
)
from .base import Backend, Prepared, register_backend

PERF_TEST_ENV = "ORT_PERF_TEST"
CPUFREQ_GLOB = "/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq"
THERMAL_GLOB = "/sys/class/thermal/thermal_zone*/temp"


def convert_to_ort(onnx_path: Path, out: Path) -> None:
    """Convert an ONNX file to the ORT format with this machine's onnxruntime (fixed optimisations)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = str(out)
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.add_session_config_entry("session.qdqisint8allowed", "1")
    ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    if not out.exists() or out.stat().st_size == 0:
        raise LatencyError(f"converting {onnx_path.name} to .ort produced no file")


@register_backend
class OrtMobileBackend(Backend):
    """Measures on a phone with a cross-built ``onnxruntime_perf_test`` that the user supplies."""

    name = "ort-mobile"
    OPTIONS = {
        "serial": None,  # adb serial; None: the only attached device
        "adb": "adb",  # adb executable
        "perf_test": None,  # local path of the Android onnxruntime_perf_test; default $ORT_PERF_TEST
        "remote_dir": "/data/local/tmp/donna-latency",
        "cores": "big",  # big | prime | all | [core indices]
        "threads": None,  # intra-op threads; None: one per pinned core
        "max_temp_c": 45.0,  # hotter than this after a run: the result is flagged noisy
        "cooldown_c": 40.0,  # wait before a model until the phone is at most this warm
        "cooldown_max_s": 120.0,
        "model_match": None,  # substring of ro.product.model this profile is for (warns otherwise)
    }

    def __init__(self, **options):
        super().__init__(**options)
        self._info: dict | None = None
        self._client: AdbClient | None = None
        self._pushed_tool = False

    # ---- device ------------------------------------------------------------------------------
    def _perf_test_path(self) -> Path:
        path = self.options["perf_test"] or os.environ.get(PERF_TEST_ENV)
        if not path:
            raise BackendUnavailableError(f"ort-mobile needs an Android build of onnxruntime_perf_test: set "
                                          f"${PERF_TEST_ENV} or the profile option 'perf_test'")
        if not Path(path).is_file():
            raise BackendUnavailableError(f"onnxruntime_perf_test binary {path} does not exist")
        return Path(path)

    def client(self) -> AdbClient:
        """The adb client for the chosen device (picks the only attached one when no serial is set)."""
        if self._client is None:
            devices = [d for d in AdbClient(adb=self.options["adb"]).devices() if d["state"] == "device"]
            serial = self.options["serial"]
            if serial is None:
                if len(devices) != 1:
                    serials = [d["serial"] for d in devices]
                    raise BackendUnavailableError(f"{len(devices)} Android devices ready over adb ({serials}); "
                                                  "set the profile option 'serial'")
                serial = devices[0]["serial"]
            elif serial not in {d["serial"] for d in devices}:
                raise BackendUnavailableError(f"Android device {serial} is not attached and ready over adb")
            self._client = AdbClient(serial, adb=self.options["adb"])
        return self._client

    def device_info(self) -> dict:
        """Model, ABI, per-core max frequencies and the cores measurements are pinned to."""
        if self._info is None:
            adb = self.client()
            freqs = parse_max_freqs(adb.shell_glob("ls", CPUFREQ_GLOB), adb.shell_glob("cat", CPUFREQ_GLOB))
            cores = select_cores(freqs, self.options["cores"])
            self._info = {"serial": adb.serial, "model": adb.shell("getprop", "ro.product.model").strip(),
                          "abi": adb.shell("getprop", "ro.product.cpu.abi").strip(),
                          "max_freq_khz": freqs, "cores": cores, "mask": core_mask(cores)}
            match = self.options["model_match"]
            if match and match.lower() not in self._info["model"].lower():
                warnings.warn(f"device profile expects a phone model containing {match!r}, "
                              f"but {adb.serial} is {self._info['model']!r}", stacklevel=2)
        return self._info

    def temperature_c(self) -> float | None:
        """Hottest thermal zone now, in deg C (None when unreadable)."""
        # some zones are unreadable on real phones (cat exits 1): parse whatever the readable ones printed
        return parse_thermal(self.client().shell_glob("cat", THERMAL_GLOB, check=False))

    @classmethod
    def unavailable_reason(cls, options: dict | None = None) -> str | None:
        backend = cls(**(options or {}))
        try:
            backend.client()
            backend._perf_test_path()
        except (BackendUnavailableError, LatencyError) as err:
            return str(err)
        return None

    def fingerprint(self) -> dict:
        info = self.device_info()
        return {"backend": self.name, "model": info["model"], "abi": info["abi"], "cores": info["cores"],
                "max_freq_khz": {str(k): v for k, v in sorted(info["max_freq_khz"].items())},
                "perf_test_sha256": file_sha256(self._perf_test_path())}

    # ---- files -------------------------------------------------------------------------------
    def _remote(self, name: str) -> str:
        return f"{self.options['remote_dir'].rstrip('/')}/{name}"

    def _push_verified(self, local: Path, remote: str) -> bool:
        """Push ``local`` unless the device already holds the same bytes; returns True if it pushed."""
        adb, want = self.client(), file_sha256(local)
        if parse_sha256sum(adb.shell("sha256sum", remote, check=False)) == want:
            return False
        adb.shell("mkdir", "-p", self.options["remote_dir"])
        adb.push(local, remote)
        got = parse_sha256sum(adb.shell("sha256sum", remote, check=False))
        if got != want:
            raise LatencyError(f"pushed {local.name} but the device copy has sha256 {got}, expected {want}")
        return True

    def _push_tool(self) -> str:
        remote = self._remote("onnxruntime_perf_test")
        if not self._pushed_tool:
            if self._push_verified(self._perf_test_path(), remote):
                self.client().shell("chmod", "755", remote)
            self._pushed_tool = True
        return remote

    def _cool_down(self) -> float | None:
        deadline = time.monotonic() + float(self.options["cooldown_max_s"])
        temp = self.temperature_c()
        while temp is not None and temp > self.options["cooldown_c"] and time.monotonic() < deadline:
            time.sleep(5.0)
            temp = self.temperature_c()
        return temp

    # ---- measurement -------------------------------------------------------------------------
    def prepare(self, model: Path | str, input_shape: Sequence[int]) -> Prepared:
        import onnxruntime as ort

        path, info = Path(model), self.device_info()
        tool = self._push_tool()
        parts = {"onnx_sha256": file_sha256(path), "onnxruntime": ort.__version__, "shape": list(input_shape)}
        ort_file = ArtifactCache().get_or_make("ort", parts, ".ort", lambda tmp: convert_to_ort(path, tmp))
        remote_model = self._remote(f"{parts['onnx_sha256'][:16]}.ort")
        self._push_verified(ort_file, remote_model)
        threads = int(self.options["threads"] or len(info["cores"]))
        argv = ["taskset", info["mask"], tool, "-e", "cpu", "-m", "times", "-x", str(threads), "-y", "1",
                "-I", "-v"]
        temp_before = self._cool_down()
        env = {**self.environment(), "device": info, "model_sha256": parts["onnx_sha256"],
               "ort_sha256": file_sha256(ort_file), "input_shape": list(input_shape), "threads": threads,
               "affinity_mask": info["mask"], "temp_before_c": temp_before,
               "command": " ".join([*argv, "-r", "N", remote_model])}
        client = self.client()

        def run(n: int) -> list[float]:
            samples, _ = parse_perf_test(client.shell(*argv, "-r", str(n), remote_model))
            return samples

        def finish() -> list[str]:
            after = self.temperature_c()
            env["temp_after_c"] = after
            return thermal_reasons(temp_before, after, float(self.options["max_temp_c"]))

        return Prepared(run=run, env=env, finish=finish)


def thermal_reasons(before: float | None, after: float | None, max_temp_c: float) -> list[str]:
    """Noisy reasons from the thermal state before and after a measurement."""
    reasons = []
    if after is None:
        return ["thermal state unreadable"]
    if after > max_temp_c:
        reasons.append(f"device hot after run: {after:.1f} C > {max_temp_c:.1f} C (throttling likely)")
    if before is not None and after - before > 5.0:
        reasons.append(f"device warmed from {before:.1f} C to {after:.1f} C during the run")
    return reasons
