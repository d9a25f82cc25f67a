"""A stand-in ``adb`` that answers like one attached Android phone.

State lives in the folder named by ``$FAKE_ADB_STATE``: ``state.json`` (serial, model, ABI,
latency model, disconnect_after), ``root/`` (the phone's file system: cpufreq and thermal files,
pushed files) and ``calls.log`` (one JSON line per call, for the tests to inspect).

Where each output format comes from (none was captured from a phone in this repository; each is
written after the tool's source or documentation):

- ``adb devices -l`` and ``adb push`` ("FILE: 1 file pushed, 0 skipped. X MB/s (N bytes in T s)"):
  adb's client code (platform/packages/modules/adb, client/commandline.cpp and file_sync_client.cpp).
- toybox ``ls``/``cat``/``sha256sum``/``rm`` and ``grep -H`` ("path:line", POSIX grep's multi-file form).
- ``onnxruntime_perf_test``: the verbose per-run lines of PerformanceRunner (onnxruntime/test/perftest/
  performance_runner.cc, "iteration: 1, time_cost: 0.0042 s", "(Warm-up) " on the warm-up run), its
  summary lines, and the result file of PerformanceResult::DumpToFile (performance_result.cc: one
  ``model,time_cost,peak_working_set,avg_cpu,run`` row per run, appended) with the percentiles on stdout.
- the refusal of an .ort file made by another ONNX Runtime release is an approximation (state
  ``tool_ort_version``): the real tool's wording differs between releases.

Every call also appends to ``stdin.log`` whether the process's stdin was ``/dev/null``.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import random
import shlex
import shutil
import sys
from pathlib import Path

STATE = Path(os.environ["FAKE_ADB_STATE"])


def load() -> dict:
    return json.loads((STATE / "state.json").read_text())


def save(state: dict) -> None:
    tmp = STATE / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, STATE / "state.json")


def dev_path(remote: str) -> Path:
    return STATE / "root" / remote.lstrip("/")


def out(text: str = "", err: str = "", code: int = 0) -> int:
    sys.stdout.write(text)
    sys.stderr.write(err)
    return code


def sh_glob(pattern: str) -> list[str]:
    root = str(STATE / "root")
    matches = sorted(glob.glob(root + "/" + pattern.lstrip("/")))  # sh sorts matches lexicographically
    return ["/" + os.path.relpath(m, root) for m in matches]


def cmd_ls(args: list[str]) -> int:
    paths = [p for a in args if not a.startswith("-") for p in (sh_glob(a) or [None]) if p]
    if not paths:
        return out(err=f"ls: {args[-1]}: No such file or directory\n", code=1)
    return out("".join(p + "\n" for p in paths))


def cmd_cat(args: list[str]) -> int:
    text, code, err = "", 0, ""
    for a in args:
        found = sh_glob(a)
        if not found:
            err += f"cat: {a}: No such file or directory\n"
            code = 1
        for p in found:
            text += dev_path(p).read_text()
    return out(text, err, code)


def cmd_sha256sum(args: list[str]) -> int:
    path = dev_path(args[0])
    if not path.is_file():
        return out(err=f"sha256sum: {args[0]}: No such file or directory\n", code=1)
    return out(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {args[0]}\n")


def cmd_chmod(args: list[str], state: dict) -> int:
    if not dev_path(args[1]).exists():
        return out(err=f"chmod: {args[1]}: No such file or directory\n", code=1)
    state.setdefault("modes", {})[args[1]] = args[0]
    return 0


def perf_test(argv: list[str], state: dict) -> int:
    """Simulated onnxruntime_perf_test: latency grows with the .ort file size, lognormal jitter."""
    model, result_file = argv[-1], None
    if len(argv) >= 2 and argv[-1].endswith(".csv"):  # positional: model_path [result_file]
        model, result_file = argv[-2], argv[-1]
    if not dev_path(model).is_file():
        return out(err=f"Error: model file {model} does not exist\n", code=1)
    tool_version, made_by = state.get("tool_ort_version"), state.get("ort_made_by")
    if tool_version and made_by and tool_version.split(".")[:2] != made_by.split(".")[:2]:
        return out(err=f"Error: ORT format model {model} was made by ONNX Runtime {made_by}, which this build "
                       f"({tool_version}) does not support\n", code=1)
    runs = int(argv[argv.index("-r") + 1]) if "-r" in argv else 1000
    threads = argv[argv.index("-x") + 1] if "-x" in argv else "0"
    base = state["base_ms"] + state["ms_per_kb"] * dev_path(model).stat().st_size / 1024.0
    rng = random.Random(state["calls"])
    times = [base / 1000.0 * math.exp(rng.gauss(0.0, state["jitter"])) for _ in range(runs + 1)]
    lines = [f"Setting intra_op_num_threads to {threads}"]
    if "-v" in argv:
        lines += [f"(Warm-up) iteration: 1, time_cost: {times[0]:.6g} s"]
        lines += [f"iteration: {k + 1}, time_cost: {t:.6g} s" for k, t in enumerate(times[1:])]
    if result_file:
        with open(dev_path(result_file), "a") as fh:
            fh.writelines(f"{Path(model).stem},{t:.6g},28672000,24,{k}\n" for k, t in enumerate(times[1:]))
    total = sum(times[1:])
    srt = sorted(times[1:])
    lines += ["Session creation time cost: 0.0213 s", "First inference time cost: 6 ms",
              f"Total inference time cost: {total:.6g} s", f"Total inference requests: {runs}",
              f"Average inference time cost: {total / runs * 1000:.6g} ms",
              f"Total inference run time: {total * 1.01:.6g} s",
              f"Number of inferences per second: {runs / total:.6g} ", "Avg CPU usage: 24 %",
              "Peak working set size: 28672000 bytes", "Avg CPU usage:24", "Peak working set size:28672000",
              f"Runs:{runs}", f"Min Latency: {srt[0]:.6g} s", f"Max Latency: {srt[-1]:.6g} s"]
    for name, q in (("P50", 0.5), ("P90", 0.9), ("P95", 0.95), ("P99", 0.99), ("P999", 0.999)):
        lines.append(f"{name} Latency: {srt[int(runs * q)]:.6g} s")
    return out("\n".join(lines) + "\n")


def cmd_taskset(args: list[str], state: dict) -> int:
    mask, binary, rest = args[0], args[1], args[2:]
    int(mask, 16)
    if not dev_path(binary).is_file():
        return out(err=f"taskset: {binary}: No such file or directory\n", code=127)
    if state.get("modes", {}).get(binary) != "755":
        return out(err=f"taskset: {binary}: Permission denied\n", code=126)
    code = perf_test(rest, state)
    if state.get("heat_per_run_mc"):  # the phone warms up while it works
        zone = dev_path("/sys/class/thermal/thermal_zone0/temp")
        zone.write_text(f"{int(zone.read_text()) + state['heat_per_run_mc']}\n")
    return code


def cmd_rm(args: list[str]) -> int:
    for a in args:
        if not a.startswith("-") and dev_path(a).is_file():
            dev_path(a).unlink()
    return 0


def cmd_grep(args: list[str]) -> int:
    files = [p for a in args[2:] for p in sh_glob(a)]
    text = "".join(f"{p}:{line}\n" for p in files for line in dev_path(p).read_text().splitlines() if line)
    return out(text, code=0 if text else 1)


def shell(command: str, state: dict) -> int:
    argv = shlex.split(command)
    if "&&" in argv:  # a chain: run each part, stop at the first failure (sh semantics)
        cut = argv.index("&&")
        code = shell(shlex.join(argv[:cut]), state)
        return code if code else shell(shlex.join(argv[cut + 1:]), state)
    name, args = argv[0], argv[1:]
    if name == "getprop":
        return out({"ro.product.model": state["model"], "ro.product.cpu.abi": state["abi"]}.get(args[0], "") + "\n")
    if name == "mkdir":
        dev_path(args[-1]).mkdir(parents=True, exist_ok=True)
        return 0
    simple = {"ls": cmd_ls, "cat": cmd_cat, "sha256sum": cmd_sha256sum, "rm": cmd_rm, "grep": cmd_grep}
    if name in simple:
        return simple[name](args)
    if name in ("chmod", "taskset"):
        return {"chmod": cmd_chmod, "taskset": cmd_taskset}[name](args, state)
    return out(err=f"/system/bin/sh: {name}: inaccessible or not found\n", code=127)


def push(local: str, remote: str) -> int:
    target = dev_path(remote)
    if not target.parent.is_dir():
        return out(err=f"adb: error: failed to copy '{local}' to '{remote}': remote No such file or directory\n",
                   code=1)
    shutil.copyfile(local, target)
    size = os.path.getsize(local)
    return out(f"{local}: 1 file pushed, 0 skipped. 31.4 MB/s ({size} bytes in 0.001s)\n")


def main(argv: list[str]) -> int:
    state = load()
    with open(STATE / "calls.log", "a") as fh:
        fh.write(json.dumps(argv) + "\n")
    devnull = os.stat(os.devnull)
    stdin = os.fstat(0) if not sys.stdin.closed else None
    closed = stdin is not None and (stdin.st_rdev, stdin.st_ino) == (devnull.st_rdev, devnull.st_ino)
    with open(STATE / "stdin.log", "a") as fh:
        fh.write(("devnull" if closed else "open") + "\n")
    connected = state.get("disconnect_after") is None or state["calls"] < state["disconnect_after"]
    if argv[:1] == ["devices"]:
        line = (f"{state['serial']}\tdevice usb:1-1 product:x1sxx model:{state['model'].replace('-', '_')} "
                f"device:x1s transport_id:1\n") if connected else ""
        return out(f"List of devices attached\n{line}\n")
    if argv[:1] != ["-s"]:
        return out(err="adb: more than one device/emulator\n", code=1)
    serial, rest = argv[1], argv[2:]
    state["calls"] += 1
    try:
        if serial != state["serial"] or not connected:
            return out(err=f"error: device '{serial}' not found\n", code=1)
        if rest[0] == "shell":
            return shell(" ".join(rest[1:]), state)
        if rest[0] == "push":
            return push(rest[1], rest[2])
        return out(err=f"adb: unknown command {rest[0]}\n", code=1)
    finally:
        save(state)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
