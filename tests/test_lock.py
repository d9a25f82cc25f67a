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


def test_a_holder_record_written_a_moment_after_the_lock_is_still_named(tmp_path):
    import json
    import threading

    from blocks.lock import _holder_record

    path = tmp_path / ".lock"
    path.write_text("")  # the holder has the lock but has not written its record yet
    writer = threading.Timer(0.1, lambda: path.write_text(json.dumps({"pid": 4242, "command": "donna search",
                                                                         "started": 0})))
    writer.start()
    try:
        assert _holder_record(path)["pid"] == 4242
    finally:
        writer.join()
    path.write_text("")
    assert _holder_record(path, tries=2) is None  # nobody writes: "another process"
