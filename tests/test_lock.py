"""The folder lock: one holder at a time, the refusal names it, a killed holder frees it, waiting works."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from blocks.lock import FolderBusy, folder_lock, holder

HOLD = ("import sys, time\nfrom blocks.lock import folder_lock\n"
        "with folder_lock(sys.argv[1], command='holder (test)'):\n    print('held', flush=True)\n    time.sleep(600)\n")


def test_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    with folder_lock(tmp_path / "run", command="donna search"):
        assert holder(tmp_path / "run")["pid"] == os.getpid()
        busy = rf"run is in use by pid {os.getpid()} \(donna search, since"
        with pytest.raises(FolderBusy, match=busy), folder_lock(tmp_path / "run"):
            pass
    assert holder(tmp_path / "run") is None  # released and cleared
    with folder_lock(tmp_path / "run"):
        pass


def test_a_killed_holder_frees_the_folder(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusy, match=rf"pid {proc.pid} \(holder \(test\)"), folder_lock(tmp_path):
            pass
    finally:
        proc.kill()  # SIGKILL: no cleanup code runs; the operating system drops the lock
        proc.wait()
    with folder_lock(tmp_path):
        assert holder(tmp_path)["pid"] == os.getpid()


def test_wait_takes_the_lock_once_it_is_released(tmp_path):
    taken = threading.Event()

    def hold_briefly() -> None:
        with folder_lock(tmp_path):
            taken.set()
            time.sleep(0.6)

    thread = threading.Thread(target=hold_briefly)
    thread.start()
    taken.wait(5)
    start = time.monotonic()
    with folder_lock(tmp_path, wait=10):
        waited = time.monotonic() - start
    thread.join()
    assert 0.2 < waited < 5
