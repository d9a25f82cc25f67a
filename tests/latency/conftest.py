"""Fixtures for the latency tests: tiny models, a small space, fast protocols and a stand-in phone."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

FAKE_ADB = Path(__file__).parent / "fake_adb" / "fake_adb.py"
FAST = {"min_time_s": 0.02, "max_time_s": 0.5, "target_ci": 0.02, "warmup_max_s": 0.2}
PHONE_FAST = {"min_time_s": 0.0, "batch": 40, "warmup_window": 5, "warmup_max_s": 5.0, "target_ci": 0.05}
S20_FREQS = [2002000, 2002000, 2002000, 2002000, 2504000, 2504000, 2730000, 2730000]  # Exynos 990 layout
# zone types after the Exynos 990 cluster names (BIG / MID / LITTLE) plus a battery zone; the battery is
# the warmest now (38.1 C), so a hottest-of-all rule would flag the wrong zone
S20_ZONES = [("BIG", 36500), ("battery", 38100), ("LITTLE", 35000), ("MID", 36000)]

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """One export cache per test session, never the user's; no user device file."""
    devices = tmp_path_factory.getbasetemp() / "no-user-devices.json"
    if not devices.exists():
        devices.write_text('{"profiles": {}}')
    monkeypatch.setenv("LATENCY_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "latency-cache"))
    monkeypatch.setenv("LATENCY_DEVICES", str(devices))
    monkeypatch.delenv("LATENCY_ONNX_EXPORTER", raising=False)


def tiny_model() -> nn.Module:
    """A small inverted-residual-like block on 8x16x16 inputs."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(), nn.Conv2d(16, 8, 1)).eval()


@pytest.fixture(scope="session")
def tiny_onnx(tmp_path_factory) -> Path:
    from latency import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(tiny_model(), (8, 16, 16), path=out, cache_dir=tmp_path_factory.mktemp("c"))


@pytest.fixture(scope="session")
def mini_space():
    """mbconv-tiny restricted to 2 options per slot (kernel 3/5), so a table builds in seconds."""
    from blocks import get_space
    from blocks.spaces import SlotSpace

    space = get_space("mbconv-tiny")
    narrow = {"kernel": (3, 5), "expansion": (2,), "depth": (1,), "se": (0.0,), "act": ("relu",)}
    slots = tuple(SlotSpace(s.stride, s.out_channels, {**s.choices, **narrow}) for s in space.slots)
    return dataclasses.replace(space, name="mini-test", slots=slots)


def _write(root: Path, rel: str, text: str) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


class FakePhone:
    """Handle on the stand-in phone: its folder, the calls it received, its settings."""

    fast = PHONE_FAST
    freqs = S20_FREQS

    def __init__(self, state_dir: Path):
        self.dir = state_dir
        self.root = state_dir / "root"

    def calls(self) -> list[list[str]]:
        """Every argv the stand-in adb received."""
        log = self.dir / "calls.log"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def set(self, **changes) -> None:
        """Change the phone's state (e.g. ``disconnect_after``)."""
        path = self.dir / "state.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.fixture
def phone_fast() -> dict:
    """Protocol overrides that keep stand-in phone measurements short."""
    return dict(PHONE_FAST)


@pytest.fixture
def fast() -> dict:
    """Protocol overrides that keep local CPU measurements short."""
    return dict(FAST)


@pytest.fixture
def fake_phone(tmp_path, monkeypatch) -> FakePhone:
    """Puts a stand-in ``adb`` on PATH that answers like a Galaxy S20."""
    state_dir, bindir = tmp_path / "phone", tmp_path / "bin"
    root = state_dir / "root"
    for cpu, freq in enumerate(S20_FREQS):
        _write(root, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/cpuinfo_max_freq", f"{freq}\n")
        _write(root, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_governor", "schedutil\n")
        _write(root, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", f"{freq}\n")
    for zone, (kind, temp) in enumerate(S20_ZONES):
        _write(root, f"sys/class/thermal/thermal_zone{zone}/type", f"{kind}\n")
        _write(root, f"sys/class/thermal/thermal_zone{zone}/temp", f"{temp}\n")
    (root / "data/local/tmp").mkdir(parents=True)
    state = {"serial": "R58N12ABCDE", "model": "SM-G981B", "abi": "arm64-v8a", "calls": 0,
             "disconnect_after": None, "base_ms": 3.0, "ms_per_kb": 0.05, "jitter": 0.01}
    (state_dir / "state.json").write_text(json.dumps(state))
    bindir.mkdir()
    wrapper = bindir / "adb"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE_ADB}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    tool = tmp_path / "onnxruntime_perf_test"
    tool.write_bytes(b"\x7fELF fake aarch64 onnxruntime_perf_test")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_ADB_STATE", str(state_dir))
    monkeypatch.setenv("ORT_PERF_TEST", str(tool))
    return FakePhone(state_dir)
