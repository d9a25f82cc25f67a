"""The ``latency`` CLI: devices, bench (table and --json), one-line errors for bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from latency.cli import main

FAST = ["--device", "cpu"]


def test_devices_marks_the_local_cpu_reachable(capsys):
    assert main(["devices", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["cpu"]["reachable"] and not rows["v100"]["reachable"] and rows["v100"]["reason"]
    assert main(["devices"]) == 0
    assert "cpu" in capsys.readouterr().out


def test_bench_json_has_the_documented_fields(tiny_onnx, tmp_path, capsys):
    from blocks import get_space

    arch_json = tmp_path / "arch.json"
    get_space("mbconv-tiny").sample(1).to_json(arch_json)
    assert main(["bench", str(tiny_onnx), str(arch_json), *FAST, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [o["model"] for o in out] == [str(tiny_onnx), str(arch_json)]
    for obj in out:
        keys = {"model", "device", "median_ms", "p90_ms", "p99_ms", "cov", "n", "noisy", "samples_ms", "env"}
        assert keys <= set(obj)
        assert obj["n"] == len(obj["samples_ms"]) >= 30 and obj["device"] == "cpu"


def test_bench_prints_a_readable_table(tiny_onnx, capsys):
    assert main(["bench", str(tiny_onnx), *FAST]) == 0
    out = capsys.readouterr().out
    assert "median" in out and "tiny.onnx" in out and "95% CI" in out


@pytest.mark.parametrize("case", ["missing", "corrupt", "device", "shape", "arch"])
def test_bad_input_is_one_line_on_stderr(case, tiny_onnx, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00garbage")
    bad_arch = tmp_path / "bad.json"
    bad_arch.write_text('{"not": "an arch"}')
    argv = {"missing": ["bench", str(tmp_path / "none.onnx")], "corrupt": ["bench", str(corrupt)],
            "device": ["bench", str(tiny_onnx), "--device", "pixel99"],
            "shape": ["bench", str(tiny_onnx), "--input-shape", "3,32,32"], "arch": ["bench", str(bad_arch)]}[case]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("latency: error: ") and err.count("\n") == 1 and "Traceback" not in err
    cache = Path(os.environ["LATENCY_CACHE_DIR"])
    leftovers = [p for d in (tmp_path, cache) if d.exists() for p in d.rglob(".*")]
    assert leftovers == []  # no temporary files left behind
