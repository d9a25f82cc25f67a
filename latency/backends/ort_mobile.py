"""ONNX Runtime Mobile on an Android phone over adb: .ort model, pushed perf tool, big-core pinning.

Only tested against the stand-in ``adb`` in ``tests/latency/fake_adb``; no real phone has run it yet.
"""

from __future__ import annotations

import os
import re
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

from ..cache import ArtifactCache, file_sha256
from ..errors import BackendUnavailableError, DeviceDisconnectedError, LatencyError
from .adb import (
    AdbClient,
    choose_zones,
    core_mask,
    parse_max_freqs,
    parse_result_file,
    parse_sha256sum,
    parse_zones,
    select_cores,
    zone_temp,
)
from .base import Backend, Prepared, register_backend

PERF_TEST_ENV = "ORT_PERF_TEST"
CPUFREQ_GLOB = "/sys/devices/system/cpu/cpu*/cpufreq/cpuinfo_max_freq"
EXECUTION_PROVIDERS = ("cpu", "xnnpack", "nnapi", "qnn")
CPUFREQ_NOW_GLOBS = ("/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor",
                     "/sys/devices/system/cpu/cpu*/cpufreq/scaling_cur_freq")
THERMAL_GLOBS = ("/sys/class/thermal/thermal_zone*/type", "/sys/class/thermal/thermal_zone*/temp")


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
        "execution_provider": "cpu",  # the perf tool's -e: cpu, xnnpack, nnapi, qnn (Snapdragon)
        "opt_level": 99,  # the perf tool's -o graph optimisation level: 0, 1, 2 or 99
        "max_temp_c": 45.0,  # hotter than this after a run: the result is flagged noisy
        "cooldown_c": 40.0,  # wait before a model until the phone is at most this warm
        "cooldown_max_s": 120.0,
        "model_match": None,  # substring of ro.product.model this profile is for (warns otherwise)
        "perf_test_ort_version": None,  # ONNX Runtime release the perf tool was built from (checked against ours)
    }

    def __init__(self, **options):
        super().__init__(**options)
        if self.options["execution_provider"] not in EXECUTION_PROVIDERS:
            raise LatencyError(f"ort-mobile execution_provider {self.options['execution_provider']!r} is not one of "
                               f"{', '.join(EXECUTION_PROVIDERS)}")
        if self.options["opt_level"] not in (0, 1, 2, 99):
            raise LatencyError(f"ort-mobile opt_level {self.options['opt_level']!r} is not one of 0, 1, 2, 99")
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
            zones = self.thermal_zones()
            self._info = {"serial": adb.serial, "model": adb.shell("getprop", "ro.product.model").strip(),
                          "abi": adb.shell("getprop", "ro.product.cpu.abi").strip(),
                          "max_freq_khz": freqs, "cores": cores, "mask": core_mask(cores),
                          "thermal": {**choose_zones(zones, self.options["cores"]),
                                      "types": {str(z["zone"]): z["type"] for z in zones}}}
            match = self.options["model_match"]
            if match and match.lower() not in self._info["model"].lower():
                warnings.warn(f"device profile expects a phone model containing {match!r}, "
                              f"but {adb.serial} is {self._info['model']!r}", stacklevel=2)
        return self._info

    def core_clocks(self) -> dict[str, dict]:
        """Governor and current clock (kHz) of each pinned core now (empty where unreadable)."""
        out: dict[str, dict] = {}
        for line in self.client().grep_files(*CPUFREQ_NOW_GLOBS).splitlines():
            match = re.match(r"\s*/sys/devices/system/cpu/cpu(\d+)/cpufreq/(scaling_governor|scaling_cur_freq):(.*)$",
                             line)
            if match and int(match.group(1)) in self.device_info()["cores"]:
                key = "governor" if match.group(2) == "scaling_governor" else "cur_khz"
                value = match.group(3).strip()
                out.setdefault(match.group(1), {})[key] = int(value) if value.isdigit() else value
        return out

    def thermal_zones(self) -> list[dict]:
        """Every thermal zone now: index, type, deg C (unreadable zones have no temperature)."""
        return parse_zones(self.client().grep_files(*THERMAL_GLOBS))

    def temperature_c(self, role: str = "hot", zones: list[dict] | None = None) -> float | None:
        """Temperature of the zones chosen for ``role`` (``hot``: the pinned cluster; ``cooldown``: skin or
        battery), in deg C; None when unreadable."""
        zones = self.thermal_zones() if zones is None else zones
        return zone_temp(zones, self.device_info()["thermal"][role])

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
        import onnxruntime as ort

        return {"backend": self.name, "model": info["model"], "abi": info["abi"], "cores": info["cores"],
                "max_freq_khz": {str(k): v for k, v in sorted(info["max_freq_khz"].items())},
                "perf_test_sha256": file_sha256(self._perf_test_path()),
                "perf_test_ort_version": self.options["perf_test_ort_version"],
                "converter_ort_version": ort.__version__,
                "execution_provider": self.options["execution_provider"], "opt_level": self.options["opt_level"]}

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

    def _cool_down(self) -> list[dict]:
        """Wait until the skin/battery zone is at most ``cooldown_c``; returns every zone after the wait."""
        deadline = time.monotonic() + float(self.options["cooldown_max_s"])
        zones = self.thermal_zones()
        while (self.temperature_c("cooldown", zones) or 0.0) > self.options["cooldown_c"] \
                and time.monotonic() < deadline:
            time.sleep(5.0)
            zones = self.thermal_zones()
        return zones

    def _check_versions(self) -> None:
        """Refuse a perf tool built from another ONNX Runtime release than the one that makes the .ort files."""
        import onnxruntime as ort

        tool = self.options["perf_test_ort_version"]
        if tool and tool.split(".")[:2] != ort.__version__.split(".")[:2]:
            raise LatencyError(f"the .ort files are made here by onnxruntime {ort.__version__} but the perf tool is "
                               f"built from ONNX Runtime {tool}: pip install 'onnxruntime=={tool}' here, or build "
                               f"onnxruntime_perf_test from release {ort.__version__}")

    def _test_load(self, argv: list[str], remote_model: str) -> None:
        """One run of the pushed tool on the pushed model, so a version mismatch fails here, clearly."""
        import onnxruntime as ort

        try:
            self.client().shell(*argv, "-r", "1", remote_model)
        except DeviceDisconnectedError:
            raise
        except LatencyError as err:
            tool = self.options["perf_test_ort_version"] or "unknown (set the profile option perf_test_ort_version)"
            raise LatencyError(f"the phone's onnxruntime_perf_test cannot load the .ort model ({err}); it was made by "
                               f"onnxruntime {ort.__version__} here, the tool's ONNX Runtime is {tool}: build the tool "
                               f"from release {ort.__version__} or pip install the tool's release here") from None

    # ---- measurement -------------------------------------------------------------------------
    def prepare(self, model: Path | str, input_shape: Sequence[int]) -> Prepared:
        import onnxruntime as ort

        path, info = Path(model), self.device_info()
        tool = self._push_tool()
        parts = {"onnx_sha256": file_sha256(path), "onnxruntime": ort.__version__, "shape": list(input_shape)}
        ort_file = ArtifactCache().get_or_make("ort", parts, ".ort", lambda tmp: convert_to_ort(path, tmp))
        remote_model = self._remote(f"{parts['onnx_sha256'][:16]}.ort")
        self._check_versions()
        threads = int(self.options["threads"] or len(info["cores"]))
        argv = ["taskset", info["mask"], tool, "-e", self.options["execution_provider"], "-m", "times",
                "-o", str(self.options["opt_level"]), "-x", str(threads), "-y", "1", "-I"]
        if self._push_verified(ort_file, remote_model):
            self._test_load(argv, remote_model)
        zones = self._cool_down()
        temp_before = self.temperature_c("hot", zones)
        result_file = self._remote("result.csv")
        env = {**self.environment(), "device": info, "model_sha256": parts["onnx_sha256"],
               "ort_sha256": file_sha256(ort_file), "input_shape": list(input_shape), "threads": threads,
               "affinity_mask": info["mask"], "temp_before_c": temp_before, "pinned_cores_now": self.core_clocks(),
               "cooldown_temp_c": self.temperature_c("cooldown", zones), "thermal_zones_before": zones,
               "clock": "onnxruntime_perf_test per-run time_cost (device clock), read from its result file",
               "command": " ".join([*argv, "-r", "N", remote_model, result_file])}
        client = self.client()

        def run(n: int) -> list[float]:  # no -v: the per-run times come from the result file, not verbose logs
            out = client.shell_chain(["rm", "-f", result_file], [*argv, "-r", str(n), remote_model, result_file],
                                     ["cat", result_file])
            return parse_result_file(out)

        def finish() -> list[str]:
            zones_after = self.thermal_zones()
            after = self.temperature_c("hot", zones_after)
            env.update(temp_after_c=after, thermal_zones_after=zones_after)
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
