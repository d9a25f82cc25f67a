"""Bad input against a finished run folder: one line on stderr, a non-zero exit, the folder's finished files
byte-identical afterwards and nothing written outside it. Plus: the run folder lock (two processes), and
Ctrl-C during distillation (a real SIGINT to a subprocess)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pytest
from tiny_space import QUICK_PROTOCOL, TINY  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)

from blocks.lock import LOCK_NAME, folder_lock
from donna.cli import main as donna_main
from latency.cli import main as latency_main

BUILD = ["--data", "digits",  # the fast smoke data set
         "--teacher-epochs", "2", "--bkd-epochs", "1", "--labels", "6", "--label-epochs", "1", "--quiet"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished tiny run folder: build-predictor, a quick latency table, search and finetune (about 40 s)."""
    from donna.search_stage import run_space
    from latency import build_latency_table

    root = tmp_path_factory.mktemp("finished")
    space_file = root / "tiny.json"
    space_file.write_text(json.dumps({"tiny-bad-inputs": TINY}))
    work = root / "work"
    assert donna_main(["build-predictor", "--workdir", str(work), "--space", str(space_file), *BUILD]) == 0
    build_latency_table(run_space(work), "cpu", work / "latency" / "cpu", n_calibration=4, n_validation=4,
                        n_repeat=1, protocol=QUICK_PROTOCOL, progress=False, cache_dir=work / "latency" / "exports")
    assert donna_main(["search", "--workdir", str(work), "--target-ms", "100", "--pop-size", "8", "--generations",
                       "3", "--measure-max", "3", "--quiet"]) == 0
    assert donna_main(["finetune", "--workdir", str(work), "--epochs", "1", "--quiet"]) == 0
    return work


def snapshot(folder: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file in ``folder`` (the lock file and run.log, which records the
    refused attempt, aside)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name not in (LOCK_NAME, "run.log")}


def _truncate(name: str, keep: float = 0.5) -> Callable[[Path, Path], None]:
    def damage(work: Path, tmp: Path) -> None:
        data = (work / name).read_bytes()
        (work / name).write_bytes(data[: int(len(data) * keep)])
    return damage


def _write(name: str, text: str) -> Callable[[Path, Path], None]:
    return lambda work, tmp: (tmp / name).write_text(text)


def _drop_config_section(section: str) -> Callable[[Path, Path], None]:
    def damage(work: Path, tmp: Path) -> None:
        config = json.loads((work / "config.json").read_text())
        config.pop(section)
        (work / "config.json").write_text(json.dumps(config))
    return damage


def _hostile_cifar(work: Path, tmp: Path) -> None:
    import pickle

    folder = tmp / "cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {tmp / 'PWNED'}",)

    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
        (folder / name).write_bytes(pickle.dumps({"data": Payload(), "labels": [0]}))


def _image_folder_with_a_corrupt_file(work: Path, tmp: Path) -> None:
    import numpy as np
    from PIL import Image

    for label in ("a", "b"):
        (tmp / "imgs" / label).mkdir(parents=True)
        for i in range(4):
            Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(tmp / "imgs" / label / f"{i}.png")
    (tmp / "imgs" / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")


@dataclass
class Case:
    """One bad input: the command (``{work}``, ``{tmp}`` filled in), the fragment of its one line."""

    id: str
    argv: list[str]
    fragment: str
    prepare: Callable[[Path, Path], None] | None = None
    cli: str = "donna"
    extra: dict = field(default_factory=dict)


SEARCH = ["search", "--workdir", "{work}", "--quiet"]
FINETUNE = ["finetune", "--workdir", "{work}", "--quiet"]
CASES = [
    # validated while parsing, before any work
    Case("target-zero", [*SEARCH, "--target-ms", "0"], "argument --target-ms: 0 is out of range"),
    Case("target-negative", [*SEARCH, "--target-ms", "-1"], "argument --target-ms: -1 is out of range"),
    Case("target-nan", [*SEARCH, "--target-ms", "nan"], "argument --target-ms: nan is out of range"),
    Case("target-inf", [*SEARCH, "--target-ms", "inf"], "argument --target-ms: inf is out of range"),
    Case("target-text", [*SEARCH, "--target-ms", "fast"], "'fast' is not a number"),
    Case("measure-max-negative", [*SEARCH, "--target-ms", "1", "--measure-max", "-1"], "argument --measure-max"),
    Case("pop-size-one", [*SEARCH, "--target-ms", "1", "--pop-size", "1"], "argument --pop-size"),
    Case("generations-zero", [*SEARCH, "--target-ms", "1", "--generations", "0"], "argument --generations"),
    Case("seed-negative", [*SEARCH, "--target-ms", "1", "--seed", "-4"], "argument --seed"),
    Case("set-epochs-text", [*SEARCH, "--target-ms", "1", "--searcher", "pc-darts", "--set", "epochs=abc"],
         "--set epochs=abc: searcher 'pc-darts' takes an integer for epochs"),
    Case("set-pop-size-text", [*SEARCH, "--target-ms", "1", "--set", "pop_size=abc"],
         "--set pop_size=abc: searcher 'nsga2' takes an integer for pop_size"),
    Case("set-nan", [*SEARCH, "--target-ms", "1", "--set", "mutation_prob=NaN"], "takes a finite number"),
    Case("set-out-of-range", [*SEARCH, "--target-ms", "1", "--set", "mutation_prob=2"], "mutation_prob must lie"),
    Case("set-unknown", [*SEARCH, "--target-ms", "1", "--set", "epochs=5"], "unknown setting for searcher 'nsga2'"),
    Case("set-no-value", [*SEARCH, "--target-ms", "1", "--set", "epochs"], "expected KEY=VALUE"),
    Case("searcher-unknown", [*SEARCH, "--target-ms", "1", "--searcher", "magic"], "unknown searcher 'magic'"),
    Case("name-absolute", [*SEARCH, "--target-ms", "1", "--name", "{tmp}/elsewhere"], "argument --name"),
    Case("name-parent", [*SEARCH, "--target-ms", "1", "--name", "../../x"], "is not a plain name"),
    Case("name-separator", [*SEARCH, "--target-ms", "1", "--name", "a/b"], "is not a plain name"),
    Case("search-device-bogus", [*SEARCH, "--target-ms", "1", "--device", "bogus"], "known devices: "),
    Case("finetune-epochs-zero", [*FINETUNE, "--epochs", "0"], "argument --epochs: 0 is out of range"),
    Case("finetune-epochs-negative", [*FINETUNE, "--epochs", "-3"], "argument --epochs: -3 is out of range"),
    Case("finetune-lr-zero", [*FINETUNE, "--lr", "0"], "argument --lr"),
    Case("finetune-kd-weight", [*FINETUNE, "--kd-weight", "1.5"], "argument --kd-weight"),
    Case("finetune-latency-device", [*FINETUNE, "--latency-device", "bogus"], "known devices: "),
    Case("finetune-train-device", [*FINETUNE, "--device", "bogus"], "unknown training device 'bogus'"),
    Case("finetune-arch-path", [*FINETUNE, "--arch", "../../etc/x"], "argument --arch"),
    Case("finetune-arch-bad-json", [*FINETUNE, "--arch", "{tmp}/arch.json"], "not a valid architecture JSON",
         _write("arch.json", '{"blocks": 5}')),
    Case("finetune-arch-unknown-key", [*FINETUNE, "--arch", "0123456789abcdef"], "no architecture with key"),
    Case("labels-zero", ["build-predictor", "--workdir", "{work}", "--labels", "0"], "argument --labels"),
    Case("bkd-epochs-zero", ["build-predictor", "--workdir", "{work}", "--bkd-epochs", "0"], "argument --bkd-epochs"),
    Case("train-device-bogus", ["build-predictor", "--workdir", "{work}", "--device", "bogus"], "training device"),
    Case("data-unknown", ["build-predictor", "--workdir", "{work}", "--data", "mnist"], "known data sets"),
    Case("space-slots-int", ["build-predictor", "--workdir", "{work}", "--space", "{tmp}/s.json"],
         "not a valid search space", _write("s.json", '{"x": {"slots": 5}}')),
    Case("space-kernel-empty", ["build-predictor", "--workdir", "{work}", "--space", "{tmp}/s.json"],
         "not a valid search space", _write("s.json", json.dumps(
             {"x": {**TINY, "choices": {**TINY["choices"], "kernel": []}}}))),
    Case("space-a-list", ["build-predictor", "--workdir", "{work}", "--space", "{tmp}/s.json"],
         "not a valid search space", _write("s.json", "[1, 2]")),
    Case("run-target-nan", ["run", "--workdir", "{work}", "--target-ms", "nan"], "argument --target-ms"),
    Case("run-latency-device", ["run", "--workdir", "{work}", "--latency-device", "bogus"], "known devices"),
    Case("table-n-calibration", ["table", "--out", "{work}/latency/new", "--n-calibration", "-1"],
         "argument --n-calibration", cli="latency"),
    Case("table-device", ["table", "--out", "{work}/latency/new", "--device", "bogus"], "known devices",
         cli="latency"),
    Case("bench-huge-input", ["bench", "{work}/latency/x.onnx", "--input-shape", "3,100000,100000"],
         "input shape", cli="latency"),
    # found by the stage, before it changes anything
    Case("predictor-truncated", [*SEARCH, "--target-ms", "100"], "predictor.json", _truncate("predictor.json")),
    Case("nsr-deleted", [*SEARCH, "--target-ms", "100"], "nsr.csv", lambda w, t: (w / "nsr.csv").unlink()),
    Case("config-without-data", [*FINETUNE, "--epochs", "1"], "has no 'data' section", _drop_config_section("data")),
    Case("config-without-run", [*SEARCH, "--target-ms", "100"], "has no 'run' section", _drop_config_section("run")),
    Case("teacher-truncated", [*FINETUNE, "--epochs", "1"], "teacher.pt is corrupt", _truncate("teacher.pt")),
    Case("slot-weights-garbage", [*FINETUNE, "--epochs", "2"], "slot0.pt is corrupt",  # a new recipe: assembles
         lambda w, t: (w / "library" / "slot0.pt").write_bytes(b"not a checkpoint")),
    Case("workdir-is-a-file", ["search", "--workdir", "{tmp}/afile", "--target-ms", "1"], "is a file",
         _write("afile", "x")),
    Case("hostile-cifar", ["build-predictor", "--workdir", "{work}", "--data", "cifar10", "--data-dir",
                           "{tmp}/cifar", "--quiet"], "refused: it asks for", _hostile_cifar),
    Case("corrupt-image", ["build-predictor", "--workdir", "{work}", "--data", "imagefolder:{tmp}/imgs", "--quiet"],
         "1 of 9 image files cannot be read: b/bad.png", _image_folder_with_a_corrupt_file),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_one_line_and_changes_nothing(case, finished, tmp_path, monkeypatch, capsys):
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    if case.prepare:
        case.prepare(work, tmp_path)
    before, around = snapshot(work), sorted(p.name for p in tmp_path.iterdir())
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    argv = [a.format(work=work, tmp=tmp_path) for a in case.argv]
    status = (donna_main if case.cli == "donna" else latency_main)(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert status not in (0, None), err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"{case.cli}: error: ") and case.fragment in lines[0], lines[0]
    assert snapshot(work) == before  # nothing finished changed, nothing new
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cwd") == around and not any(cwd.iterdir())
    assert not (tmp_path / "PWNED").exists()  # no code from a data file ran


def test_a_held_run_folder_is_refused_naming_the_holder(finished, tmp_path, capsys):
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    before = snapshot(work)
    with folder_lock(work, command="donna search (test)"):
        status = donna_main(["search", "--workdir", str(work), "--target-ms", "100", "--quiet"])
    err = capsys.readouterr().err
    assert status == 2 and err.count("\n") == 1
    assert f"is in use by pid {os.getpid()} (donna search (test), since" in err, err
    assert snapshot(work) == before
    with folder_lock(work):  # released: it can be taken again
        pass


def _measured_rows(work: Path) -> pd.DataFrame:
    return pd.read_csv(work / "latency" / "cpu" / "measured.csv")


@pytest.mark.slow
def test_two_searches_started_together_lose_no_measured_row(finished, tmp_path):
    work = tmp_path / "work"
    shutil.copytree(finished, work)
    old = set(_measured_rows(work)["key"]) if (work / "latency" / "cpu" / "measured.csv").is_file() else set()
    argv = [sys.executable, "-m", "donna.cli", "search", "--workdir", str(work), "--target-ms", "100", "--latency",
            "measure", "--pop-size", "4", "--generations", "2", "--seed", "3", "--measure-max", "2", "--quiet"]
    procs = [subprocess.Popen([*argv, "--name", f"s{i}"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENV) for i in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    statuses = sorted(r[0] for r in results)
    assert statuses in ([0, 0], [0, 2]), results
    for status, err in results:
        if status == 2:
            assert err.count("\n") == 1 and "is in use by pid" in err, err
    rows = _measured_rows(work)
    assert rows["key"].is_unique and rows["measured_ms"].gt(0).all()
    for i, (status, _) in enumerate(results):
        if status == 0:  # every candidate the finished search measured is in the cache
            keys = set(pd.read_csv(work / "search" / f"s{i}" / "pareto.csv")["key"])
            assert keys <= set(rows["key"])
    assert old <= set(rows["key"])


@pytest.mark.slow
def test_ctrl_c_during_distillation_returns_within_seconds(tmp_path):
    space_file = tmp_path / "tiny.json"
    space_file.write_text(json.dumps({"tiny-ctrl-c": TINY}))
    work = tmp_path / "work"
    argv = [sys.executable, "-m", "donna.cli", "build-predictor", "--workdir", str(work), "--space", str(space_file),
            "--data", "digits", "--teacher-epochs", "1", "--bkd-epochs", "500", "--quiet"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 240
    while not (work / "teacher.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    time.sleep(3.0)  # distillation is running (teacher features, then the slot jobs)
    assert not list((work / "library").glob("slot*.json"))  # no slot is finished: BKD is mid-way
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    took = time.monotonic() - sent
    assert took < 10 and proc.returncode == 130, (took, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines == ["donna: interrupted; run the same command to resume"], err
