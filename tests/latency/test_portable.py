"""Latency tables built on another machine: accepted where the device is not reachable, and the
`donna search` paths without the device (error without a table; predicted-latency choice with one)."""

from __future__ import annotations

import dataclasses
import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from blocks import get_space
from latency import (
    BackendUnavailableError,
    DeviceDisconnectedError,
    FingerprintMismatchError,
    LatencyTable,
    build_latency_table,
    get_profile,
)
from latency.devices import unreachable_reason
from latency.table import SCHEMA_VERSION, space_signature

# what `latency table --device v100` records on a V100 host (TensorRT 10.4, CUDA 12 driver)
V100_FP = {"backend": "tensorrt", "tensorrt": "10.4.0", "typing": "weak-or-strong", "gpu": "Tesla V100-SXM2-16GB",
           "compute_capability": [7, 0], "precision": "fp16", "cuda_graph": False}


def _ms(text: str, scale: float) -> float:
    """A deterministic per-option latency (stands for what the device machine measured)."""
    return scale * (0.5 + (zlib.crc32(text.encode()) % 1000) / 1000.0)


def remote_table(space, device: str = "v100", fingerprint: dict | None = None, scale: float = 1.0) -> dict:
    """The JSON of a table as the device machine writes it (device profile, its fingerprint, every option)."""
    slots = [{"input_shape": list(space.slot_input_shape(i)), "options": [str(o) for o in space.options(i)],
              "ms": [_ms(f"{i}{o}", scale) for o in space.options(i)], "noisy": [False] * len(space.options(i))}
             for i in range(space.num_slots)]
    return {"schema_version": SCHEMA_VERSION, "device": get_profile(device).to_dict(),
            "fingerprint": dict(V100_FP if fingerprint is None else fingerprint), "space": space.name,
            "space_signature": space_signature(space), "protocol": {}, "stem": [str(s) for s in space.stem],
            "stem_ms": 0.2 * scale, "head_ms": 0.1 * scale, "slots": slots, "created": "2026-11-28T10:00:00",
            "calibration": {"intercept_ms": 0.05, "scale": 1.0, "n": 10}, "validation": {"n": 30, "rmspe": 0.02}}


def _copy_in(folder: Path, data: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "table.json").write_text(json.dumps(data))
    return folder


def test_v100_is_not_reachable_on_this_machine():
    reason = unreachable_reason("v100")
    if reason is None:
        pytest.skip("this machine can measure the v100 profile")
    assert "TensorRT" in reason or "GPU" in reason


def test_table_from_another_machine_is_accepted_as_recorded(mini_space, tmp_path):
    if unreachable_reason("v100") is None:
        pytest.skip("v100 is reachable here: the table is compared instead")
    folder = _copy_in(tmp_path / "v100", remote_table(mini_space))
    table = LatencyTable.load(folder, device="v100")
    assert not table.measurable
    assert table.note.startswith("device 'v100' is not reachable here") and "\n" not in table.note
    assert "Tesla V100-SXM2-16GB" in table.note and "10.4.0" in table.note
    assert table.fingerprint == V100_FP  # kept as recorded, never replaced by the empty one of this machine
    arch = mini_space.sample(3)
    expected = 0.05 + 0.3 + sum(_ms(f"{i}{b}", 1.0) for i, b in enumerate(arch.blocks))
    assert table.predict(arch) == pytest.approx(expected)


def test_copied_table_of_another_device_or_without_fingerprint_is_refused(mini_space, tmp_path):
    if unreachable_reason("v100") is None:
        pytest.skip("v100 is reachable here")
    a100 = _copy_in(tmp_path / "a", remote_table(mini_space, device="a100"))
    with pytest.raises(FingerprintMismatchError, match="built for device 'a100', not 'v100'"):
        LatencyTable.load(a100, device="v100")
    empty = {k: None for k in V100_FP} | {"backend": "tensorrt"}  # what a failed attempt used to record
    blank = _copy_in(tmp_path / "b", remote_table(mini_space, fingerprint=empty))
    with pytest.raises(FingerprintMismatchError, match="records no device fingerprint"):
        LatencyTable.load(blank, device="v100")


def test_reachable_device_still_compares_fingerprints(mini_space, tmp_path):
    data = remote_table(mini_space, device="cpu", fingerprint={"backend": "onnxruntime", "cpu": "Other CPU 9000"})
    folder = _copy_in(tmp_path / "cpu", data)
    with pytest.raises(FingerprintMismatchError, match=r"latency table --device cpu --out .*--force-table"):
        LatencyTable.load(folder, device="cpu")


def test_table_build_for_an_unreachable_device_writes_nothing(mini_space, tmp_path):
    if unreachable_reason("v100") is None:
        pytest.skip("v100 is reachable here")
    with pytest.raises(BackendUnavailableError, match="cannot build a latency table for 'v100' here"):
        build_latency_table(mini_space, "v100", tmp_path / "v100", progress=False)
    assert not (tmp_path / "v100").exists()


def test_failed_attempt_leaves_nothing_that_blocks_the_next(fake_phone, mini_space, tmp_path, phone_fast):
    small = {"n_calibration": 2, "n_validation": 0, "n_repeat": 0}
    fake_phone.set(disconnect_after=4)  # reachable and fingerprinted (4 calls), gone before the first row
    with pytest.raises(DeviceDisconnectedError, match="disconnected"):
        build_latency_table(mini_space, "s20", tmp_path, protocol=phone_fast, progress=False, **small)
    rows = tmp_path / "rows.jsonl"
    assert not rows.exists() or not rows.read_text().strip()
    # an older release wrote the meta row first, with an empty fingerprint: that must not block either
    rows.write_text(json.dumps({"job": "meta", "fingerprint": {"backend": "ort-mobile", "model": None}}) + "\n")
    fake_phone.set(disconnect_after=None, calls=0)
    table = build_latency_table(mini_space, "s20", tmp_path, protocol=phone_fast, progress=False, **small)
    metas = [json.loads(x) for x in rows.read_text().splitlines() if x.strip() and '"meta"' in x]
    assert len(metas) == 1 and metas[0]["fingerprint"]["model"] == "SM-G981B"
    assert table.fingerprint["model"] == "SM-G981B"


# ---- donna search without the device ------------------------------------------------------------
@pytest.fixture
def run_folder(tmp_path) -> Path:
    """A run folder as `donna build-predictor` leaves it: config, a linear NSR predictor, the NSR table."""
    from donna.config import DataConfig
    from donna.predictor import AccuracyPredictor

    space = get_space("mbconv-tiny")
    rows = [{"slot": i, "option": str(o), "nsr": _ms(f"nsr{i}{o}", 0.1)} for i in range(space.num_slots)
            for o in space.options(i)]
    pd.DataFrame(rows).to_csv(tmp_path / "nsr.csv", index=False)
    AccuracyPredictor(features=[f"nsr_{i}" for i in range(space.num_slots)], coef=[-1.0] * space.num_slots,
                      intercept=0.9, alpha=1.0, space=space.name).to_json(tmp_path / "predictor.json")
    config = {"run": {"space": space.name, "num_classes": 10}, "data": dataclasses.asdict(DataConfig())}
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


SEARCH = ["--device", "v100", "--target-ms", "5", "--pop-size", "8", "--generations", "2", "--quiet"]


def test_search_without_device_or_table_fails_in_one_line(run_folder, capsys):
    from donna.cli import main

    if unreachable_reason("v100") is None:
        pytest.skip("v100 is reachable here")
    assert main(["search", "--workdir", str(run_folder), *SEARCH]) != 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1, err
    assert "device 'v100' is not reachable here" in err[0]
    assert "latency table --device v100 --space mbconv-tiny --out DIR" in err[0]
    assert f"copy DIR/table.json into {run_folder / 'latency' / 'v100'}/" in err[0]
    assert err[0].endswith("or search another device")  # whole, not cut by the CLI's one-line limit
    assert not (run_folder / "latency" / "v100").exists()


def test_search_with_copied_table_selects_on_prediction(run_folder, capsys):
    from donna.cli import main

    if unreachable_reason("v100") is None:
        pytest.skip("v100 is reachable here")
    space = get_space("mbconv-tiny")
    _copy_in(run_folder / "latency" / "v100", remote_table(space, scale=0.8))
    assert main(["search", "--workdir", str(run_folder), *SEARCH]) == 0
    captured = capsys.readouterr()
    assert "note: device 'v100' is not reachable here" in captured.err
    command = next(ln.strip() for ln in captured.out.splitlines() if "latency bench" in ln)
    assert command.startswith(f"cd {run_folder} && latency bench search/nsga2/pareto/")
    assert command.endswith("--device v100")
    files = command.split("latency bench ")[1].split(" --device")[0].split()
    assert files and all((run_folder / f).is_file() for f in files)  # every named IR file exists
    selected = json.loads((run_folder / "search" / "nsga2" / "selected.json").read_text())
    front = pd.read_csv(run_folder / "search" / "nsga2" / "pareto.csv")
    assert front["measured_ms"].isna().all()  # nothing was measured here
    under = front[front["predicted_ms"] <= 5.0]
    assert selected["key"] == under.loc[under["predicted_accuracy"].idxmax(), "key"]
    table = LatencyTable.load(run_folder / "latency" / "v100", device="v100")
    predicted = front.set_index("key").loc[selected["key"], "predicted_ms"]
    assert np.isclose(predicted, table.predict(_arch_of(run_folder, selected["key"])))
    assert sorted(p.name for p in (run_folder / "latency" / "v100").iterdir()) == ["table.json"]


def _arch_of(run_folder: Path, key: str):
    from blocks import Arch

    return Arch.from_json(run_folder / "search" / "nsga2" / "pareto" / f"{key}.json")


@pytest.mark.parametrize("how", ["measure_max", "no_measure"])
def test_search_on_a_reachable_device_can_skip_measuring(run_folder, capsys, how):
    from donna.search_stage import SearchConfig, run_search
    from latency.measure import resolve_profile

    space = get_space("mbconv-tiny")
    here = resolve_profile("cpu")[1].fingerprint()  # the table matches this machine: the device is reachable
    _copy_in(run_folder / "latency" / "cpu", remote_table(space, device="cpu", fingerprint=here, scale=0.01))
    off = {"measure_max": 0} if how == "measure_max" else {"no_measure": True}
    cfg = SearchConfig(latency_device="cpu", target_ms=0.12, settings={"pop_size": 8, "generations": 2}, **off)
    outputs = run_search(run_folder, cfg, progress=False)
    assert not (run_folder / "latency" / "cpu" / "measured.csv").exists()  # nothing was measured
    assert np.isnan(outputs.selected["measured_ms"]) and outputs.selected["predicted_ms"] <= 0.12
    out = capsys.readouterr().out
    assert "latency bench search/nsga2/pareto/" in out and out.strip().endswith("--device cpu")
