"""Latency measurements are serialised across processes: one waits, says for whom, then measures."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from latency import measure_model
from latency.measure_lock import child_env, measure_lock_path, measurement_lock

LOCK_PY = Path(__file__).resolve().parents[2] / "blocks" / "lock.py"
# holds the measurement lock for a while, through blocks/lock.py loaded alone (no torch import: starts at once)
HOLDER = f"""
import importlib.util, sys, time
spec = importlib.util.spec_from_file_location("lock", {str(LOCK_PY)!r})
lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lock)
with lock.file_lock(sys.argv[1], command="holder (test)"):
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
"""


def test_a_measurement_waits_for_one_running_in_another_process(tiny_onnx, fast, capsys):
    measure_model(tiny_onnx, "cpu", protocol=fast)  # imports and warms up first: only the wait is timed
    capsys.readouterr()
    path = measure_lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), "2.0"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        result = measure_model(tiny_onnx, "cpu", protocol=fast)
        waited = time.monotonic() - start
    finally:
        holder.wait(timeout=10)
        holder.stdout.close()
    assert waited > 1.5 and result.n > 0  # alone it takes well under a second (fast protocol)
    err = capsys.readouterr().err
    assert f"waiting for another latency measurement (pid {holder.pid}: holder (test)) to finish" in err
    assert err.count("waiting for another") == 1


def test_a_child_measuring_for_its_holding_parent_does_not_wait_for_it():
    """``finetune`` holds the lock around its fresh-process ``latency bench``; the child must not deadlock."""
    code = ("from latency.measure_lock import measurement_lock\n"
            "with measurement_lock('child'):\n    print('in', flush=True)\n")
    with measurement_lock("parent (test)"):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                              env=child_env())
    assert done.returncode == 0 and done.stdout.strip() == "in" and "waiting" not in done.stderr
    assert child_env()["LATENCY_LOCK_HELD_BY"] == str(os.getpid())


def test_nested_holds_in_one_thread_do_not_wait_for_themselves(tmp_path, monkeypatch, capsys):
    with measurement_lock("outer"), measurement_lock("inner"):
        pass
    assert capsys.readouterr().err == ""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("LATENCY_CACHE_DIR", str(tmp_path / "file" / "cache"))  # cannot be created
    with measurement_lock("unlockable"):
        pass
    assert "is not serialised with other processes" in capsys.readouterr().err
