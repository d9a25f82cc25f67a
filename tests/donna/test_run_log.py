"""The run's log: ``run.log`` in the run folder (stage lines with times and ETA, appended on resume, readable by
the group), stage lines on the console with ``--quiet``, library warnings as one line, bars on their own lines."""

from __future__ import annotations

import json
import os
import re
import threading
import time

import pytest
from tiny_space import TINY  # noqa: E402  (tests/ is on sys.path: tests/conftest.py)

from common.executor import Job, bar_position, get_executor
from common.log import run_logging
from donna.cli import main
from donna.runfolder import RunFolder
from donna.stages import StageClock, eta_seconds, eta_text
from latency.table import error_metrics

BUILD = ["--data", "digits", "--teacher-epochs", "1", "--bkd-epochs", "1", "--labels", "4", "--label-epochs", "1",
         "--quiet"]
STAGES = ("teacher", "bkd", "scoring", "labels", "fit")


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_build_predictor_logs_its_stages_quietly_and_appends_on_resume(tmp_path, capsys, umask_022):
    space_file = tmp_path / "tiny.json"
    space_file.write_text(json.dumps({"tiny-log": TINY}))
    work = tmp_path / "work"
    argv = ["build-predictor", "--workdir", str(work), "--space", str(space_file), *BUILD]
    assert main(argv) == 0
    out = capsys.readouterr().out
    for i, stage in enumerate(STAGES, 1):  # --quiet: no bars, but one line as each stage starts and ends
        assert f"[{i}/5] {stage}: started" in out and re.search(rf"\[{i}/5\] {stage}: done in [\d.]+ s", out), out
    log_path = RunFolder(work).run_log
    first = log_path.read_text()
    assert (log_path.stat().st_mode & 0o777) == 0o644  # the umask's mode: the group can read it
    assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO +common.log: donna build-predictor --workdir ", first,
                     re.M)
    assert re.search(r"\[1/5\] teacher: done in [\d.]+ s; [\d.]+ s so far; 4 stages left, ETA", first)
    assert "[5/5] fit: done in" in first and "predictor fitted on 4 labels" in first  # the summary is logged too
    assert main(argv) == 0  # resumed: every stage skips its work, the log grows
    again = log_path.read_text()
    assert again.startswith(first) and len(again) > len(first)
    assert again.count("INFO    common.log: donna build-predictor") == 2
    assert again.count("[3/5] scoring: started") == 2 and "common.log: finished in" in again.splitlines()[-1]


def test_a_scipy_warning_inside_a_stage_becomes_one_line_of_ours(tmp_path, capsys):
    log_path = tmp_path / "run.log"
    with run_logging(log_path, command="donna test"), StageClock({"validation": 1.0}).stage("validation"):
        metrics = error_metrics([1.0, 1.0, 1.0, 1.0], [1.0, 2.0, 3.0, 4.0])  # constant prediction
    assert metrics["spearman"] != metrics["spearman"]  # NaN
    lines = log_path.read_text().splitlines()
    (warned,) = [line for line in lines if "ConstantInputWarning" in line]
    assert " WARNING " in warned and "latency.warnings" in warned
    assert "scipy ConstantInputWarning at table.py:" in warned
    assert "reported as NaN (undefined), not 0" in warned and "correlation coefficient is not defined" in warned
    assert not any("spearmanr(p, y)" in line for line in lines)  # no source line dumped
    err = capsys.readouterr()
    assert "ConstantInputWarning" in err.out and "spearmanr(p, y)" not in err.out + err.err
    assert lines[0].endswith(f"donna test (pid {os.getpid()})") and "finished in" in lines[-1]


def test_the_eta_scales_the_remaining_share_by_the_speed_of_stages_that_did_work():
    plan = {"a": 10.0, "b": 30.0, "c": 60.0}
    assert eta_seconds(plan, {"a": 20.0}) == pytest.approx(2.0 * 90.0)  # twice slower than the reference
    assert eta_seconds(plan, {"a": 20.0, "b": 0.1}) == pytest.approx(2.0 * 60.0)  # b resumed: not a speed sample
    assert eta_seconds(plan, {"a": 0.01}) is None and eta_text(None).startswith("ETA known once")
    assert eta_text(30.0) == "ETA < 1 min" and eta_text(61.0) == "ETA ~2 min"


def test_a_failed_stage_and_command_are_recorded(tmp_path):
    log_path = tmp_path / "run.log"
    clock = StageClock({"a": 1.0, "b": 1.0})
    with pytest.raises(ValueError), run_logging(log_path, command="donna test"), clock.stage("a"):
        raise ValueError("bad value\nsecond line")
    text = log_path.read_text()
    assert "[1/2] a: started" in text and "[1/2] a: stopped after" in text
    assert text.rstrip().splitlines()[-1].endswith("ValueError: bad value")


def _record_position(spans: list, lock: threading.Lock) -> None:
    start = time.perf_counter()
    position = bar_position()
    time.sleep(0.05)
    with lock:
        spans.append((position, start, time.perf_counter()))


def test_threaded_jobs_draw_their_bars_on_lines_of_their_own():
    spans: list = []
    lock = threading.Lock()
    executor = get_executor("threads")
    executor.workers = 2
    executor.map([Job(f"job {i}", _record_position, (spans, lock)) for i in range(6)])
    assert {p for p, _, _ in spans} == {0, 1}
    for i, (p, s, e) in enumerate(spans):  # two jobs running at the same time never share a line
        assert all(p != q for q, s2, e2 in spans[i + 1:] if s < e2 and s2 < e)
    inline: list = []
    get_executor("inprocess").map([Job("one", _record_position, (inline, lock))])
    assert inline[0][0] is None and bar_position() is None  # one job at a time: tqdm places the bar itself
