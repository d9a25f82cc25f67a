"""A small ``adb`` client and parsers of what a phone prints (devices, cpufreq, thermal, perf tool)."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from ..errors import BackendUnavailableError, DeviceDisconnectedError, LatencyError

_GONE = re.compile(r"(device '[^']*' not found|no devices/emulators found|device offline|device unauthorized"
                   r"|device still connecting|closed)", re.IGNORECASE)


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[0] if lines else ""


class AdbClient:
    """Runs ``adb -s SERIAL ...``; every shell argument is quoted with ``shlex.quote``.

    Args:
        serial: the device serial; None is only allowed for :meth:`devices`.
        adb: the adb executable (looked up on PATH).
        timeout_s: limit for one adb call.
    """

    def __init__(self, serial: str | None = None, adb: str = "adb", timeout_s: float = 600.0):
        self.serial = serial
        self.adb = adb
        self.timeout_s = timeout_s
        self.calls = 0

    def _exe(self) -> str:
        exe = shutil.which(self.adb)
        if exe is None:
            raise BackendUnavailableError(f"adb executable {self.adb!r} not found on PATH (install Android "
                                          "platform-tools)")
        return exe

    def run(self, *args: str, check: bool = True) -> str:
        """Run one adb command and return stdout.

        Raises:
            DeviceDisconnectedError: adb says the device is gone or offline.
            LatencyError: any other failure, with adb's first line of error output.
        """
        argv = [self._exe(), *(["-s", self.serial] if self.serial else []), *args]
        self.calls += 1
        try:
            # stdin closed: adb must never wait on (or eat) the caller's terminal, e.g. in a background build
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceDisconnectedError(f"adb {args[0]} timed out after {self.timeout_s:g} s "
                                          f"(device {self.serial} hung or unplugged)") from None
        gone = _GONE.search(proc.stderr) or (proc.returncode and _GONE.search(proc.stdout))
        if gone:
            raise DeviceDisconnectedError(f"device {self.serial} disconnected during 'adb {args[0]}': "
                                          f"{_first_line(proc.stderr) or gone.group(0)}")
        if check and proc.returncode != 0:
            detail = _first_line(proc.stderr) or _first_line(proc.stdout) or f"exit status {proc.returncode}"
            raise LatencyError(f"adb {' '.join(args[:2])} failed on {self.serial}: {detail}")
        return proc.stdout

    def shell(self, *argv: str, check: bool = True) -> str:
        """Run a command on the device; each argument is quoted, so nothing is expanded there."""
        return self.run("shell", " ".join(shlex.quote(str(a)) for a in argv), check=check)

    def shell_glob(self, command: str, pattern: str, check: bool = True) -> str:
        """Run ``command`` on a glob ``pattern`` that the device shell must expand (a constant path).

        ``pattern`` may only hold path characters and ``*``; it is not quoted so the glob expands.
        """
        if not re.fullmatch(r"[A-Za-z0-9_/.*\-]+", pattern):
            raise LatencyError(f"refusing to pass {pattern!r} unquoted to the device shell")
        return self.run("shell", f"{shlex.quote(command)} {pattern}", check=check)

    def shell_chain(self, *commands: Sequence[str], check: bool = True) -> str:
        """Run several commands in one device shell, joined by ``&&`` (each argument quoted)."""
        return self.run("shell", " && ".join(" ".join(shlex.quote(str(a)) for a in c) for c in commands),
                        check=check)

    def grep_files(self, *patterns: str) -> str:
        """``grep -H . PATTERN...``: every non-empty line of the files as ``path:line`` (unreadable ones skipped)."""
        for pattern in patterns:
            if not re.fullmatch(r"[A-Za-z0-9_/.*\-]+", pattern):
                raise LatencyError(f"refusing to pass {pattern!r} unquoted to the device shell")
        return self.run("shell", f"grep -H . {' '.join(patterns)}", check=False)

    def push(self, local: Path | str, remote: str) -> str:
        """``adb push LOCAL REMOTE``; returns adb's summary line."""
        return _first_line(self.run("push", str(local), remote))

    def devices(self) -> list[dict]:
        """Attached devices from ``adb devices -l``."""
        return parse_devices(self.run("devices", "-l"))


def parse_devices(text: str) -> list[dict]:
    """Parse ``adb devices -l``: ``SERIAL  STATE key:value ...`` lines after the header."""
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*")):
            continue
        parts = line.split()
        if len(parts) < 2:
            continue
        entry = {"serial": parts[0], "state": parts[1]}
        for item in parts[2:]:
            if ":" in item:
                key, value = item.split(":", 1)
                entry[key] = value
        out.append(entry)
    return out


def parse_max_freqs(paths_text: str, values_text: str) -> dict[int, int]:
    """Pair ``ls`` of the cpufreq files with ``cat`` of the same glob (same order) into core -> kHz."""
    paths = [p.strip() for p in paths_text.split() if p.strip()]
    values = [v.strip() for v in values_text.split() if v.strip()]
    if not paths or len(paths) != len(values):
        raise LatencyError(f"cannot read per-core max frequencies: {len(paths)} files, {len(values)} values")
    freqs = {}
    for path, value in zip(paths, values):
        match = re.search(r"/cpu(\d+)/cpufreq/", path)
        if not match or not value.isdigit():
            raise LatencyError(f"unexpected cpufreq entry {path!r} = {value!r}")
        freqs[int(match.group(1))] = int(value)
    return freqs


def select_cores(freqs: dict[int, int], mode: str | list[int] = "big") -> list[int]:
    """Cores to pin to, from each core's maximum frequency.

    Args:
        freqs: core index -> max frequency (kHz).
        mode: ``"big"`` (every core faster than the slowest cluster), ``"prime"`` (the fastest
            cluster only), ``"all"``, or an explicit list of core indices.
    """
    if not freqs:
        raise LatencyError("no cpufreq information: cannot pick big cores")
    if isinstance(mode, (list, tuple)):
        missing = sorted(set(mode) - set(freqs))
        if missing:
            raise LatencyError(f"cores {missing} do not exist; the device has cores {sorted(freqs)}")
        return sorted(mode)
    lowest, highest = min(freqs.values()), max(freqs.values())
    if mode == "all" or lowest == highest:
        return sorted(freqs)
    if mode == "prime":
        return sorted(c for c, f in freqs.items() if f == highest)
    if mode == "big":
        return sorted(c for c, f in freqs.items() if f > lowest)
    raise LatencyError(f"unknown cores mode {mode!r}; use 'big', 'prime', 'all' or a list of core indices")


def core_mask(cores: list[int]) -> str:
    """Hex affinity mask for ``taskset`` (cores 4-7 -> 'f0')."""
    return format(sum(1 << c for c in cores), "x")


def parse_thermal(text: str) -> float | None:
    """Hottest plausible zone in deg C from ``cat thermal_zone*/temp`` (millidegrees or degrees)."""
    temps = []
    for token in text.split():
        try:
            value = float(token)
        except ValueError:
            continue
        value = value / 1000.0 if abs(value) >= 1000 else value
        if 0.0 < value < 150.0:
            temps.append(value)
    return max(temps) if temps else None


def parse_sha256sum(text: str) -> str | None:
    """The hash from ``sha256sum FILE`` output (``HASH  FILE``), None when the file is missing."""
    match = re.match(r"\s*([0-9a-f]{64})\s", text + " ")
    return match.group(1) if match else None


_ITER = re.compile(r"^(\(Warm-up\) )?iteration:\s*(\d+),\s*time_cost:\s*([0-9.eE+-]+)(?:\s*s)?\s*$")
_AVG = re.compile(r"Average inference time cost(?: total)?:\s*([0-9.eE+-]+)\s*ms")


def parse_perf_test(stdout: str) -> tuple[list[float], float | None]:
    """Per-run times (ms) and the reported average (ms) from ``onnxruntime_perf_test -v`` output.

    Both verbose formats are read: ``iteration:1,time_cost:0.0012`` (older releases) and
    ``iteration: 1, time_cost: 0.0012 s`` with ``(Warm-up) `` on warm-up runs (newer releases);
    warm-up runs are dropped. Times are printed in seconds.

    Raises:
        LatencyError: when the output holds no per-run times.
    """
    samples = []
    for line in stdout.splitlines():
        match = _ITER.match(line.strip())
        if match and not match.group(1):
            samples.append(float(match.group(3)) * 1000.0)
    if not samples:
        raise LatencyError("onnxruntime_perf_test printed no per-run times (run with -v); output began: "
                           f"{_first_line(stdout)[:120]!r}")
    avg = _AVG.search(stdout)
    return samples, float(avg.group(1)) if avg else None


def parse_zones(text: str) -> list[dict]:
    """Thermal zones from ``grep -H . thermal_zone*/type thermal_zone*/temp``: index, type and deg C."""
    zones: dict[int, dict] = {}
    for line in text.splitlines():
        match = re.match(r"\s*/sys/class/thermal/thermal_zone(\d+)/(type|temp):(.*)$", line)
        if not match:
            continue
        zone = zones.setdefault(int(match.group(1)), {"zone": int(match.group(1)), "type": "", "temp_c": None})
        value = match.group(3).strip()
        if match.group(2) == "type":
            zone["type"] = value
        else:
            zone["temp_c"] = parse_thermal(value)
    return [zones[k] for k in sorted(zones)]


SKIN_TYPES = (r"skin", r"xo[-_]?therm|quiet[-_]?therm|back[-_]?therm|case|shell", r"batt|^bat")
CLUSTER_TYPES = {
    "prime": (r"prime|gold[-_]?plus|cpu[-_]?7|^big$|cpu[-_]?big",),
    "big": (r"^big$|^mid$|gold|prime|cpu[-_]?big|cpu[-_]?1[-_]|cpu[-_]?[4-7]\b|cluster[-_]?[12]|cpuss[-_]?1",),
    "all": (r"cpu|big|mid|little|silver|gold|prime|cluster",),
}


def choose_zones(zones: Sequence[dict], cores_mode: object = "big") -> dict:
    """Zones by type: a skin/battery zone for the cool-down, the pinned cluster's zones for the hot flag.

    Returns:
        ``{"cooldown": [zone indices], "hot": [zone indices], "how": str}``; a role without a typed zone
        falls back to every readable zone (the hottest decides), and ``how`` says so.
    """
    readable = [z for z in zones if z["temp_c"] is not None]

    def first_match(patterns) -> list[int]:
        for pattern in patterns:
            found = [z["zone"] for z in readable if re.search(pattern, z["type"], re.IGNORECASE)]
            if found:
                return found
        return []

    mode = cores_mode if isinstance(cores_mode, str) and cores_mode in CLUSTER_TYPES else "all"
    cool, hot = first_match(SKIN_TYPES)[:1], first_match(CLUSTER_TYPES[mode])
    every = [z["zone"] for z in readable]
    how = ("typed" if cool and hot else
           f"fallback to the hottest zone for {'the cool-down' if not cool else ''}"
           f"{' and ' if not cool and not hot else ''}{'the hot flag' if not hot else ''}")
    return {"cooldown": cool or every, "hot": hot or every, "how": how}


def zone_temp(zones: Sequence[dict], chosen: Sequence[int]) -> float | None:
    """Hottest temperature among the ``chosen`` zone indices (None when none is readable)."""
    temps = [z["temp_c"] for z in zones if z["zone"] in set(chosen) and z["temp_c"] is not None]
    return max(temps) if temps else None


def parse_result_file(text: str) -> list[float]:
    """Per-run times (ms) from the perf tool's result file (PerformanceResult::DumpToFile rows
    ``model,time_cost_s,peak_working_set,avg_cpu,run``).

    Raises:
        LatencyError: when the file holds no run.
    """
    samples = []
    for line in text.splitlines():
        parts = line.strip().split(",")
        if len(parts) >= 5:
            try:
                samples.append(float(parts[-4]) * 1000.0)
            except ValueError:
                continue
    if not samples:
        raise LatencyError(f"onnxruntime_perf_test wrote no per-run times to its result file; it began: "
                           f"{_first_line(text)[:120]!r}")
    return samples
