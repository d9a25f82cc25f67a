"""The atomic writers under ``kill -9``: a reader finds nothing, the old whole file or the new whole file.

A child process rewrites one large file in a loop, alternating two contents; the test kills it with
SIGKILL at random moments (no cleanup code runs) and checks what a reader would see after each kill.
"""

from __future__ import annotations

import inspect
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

MB = 1 << 20
CHILD = """
import sys
import numpy as np
from common.fileio import atomic_save, atomic_write_bytes, atomic_write_json, atomic_write_text, append_jsonl
kind, path = sys.argv[1], sys.argv[2]
MB = 1 << 20
CONTENT_SOURCE
def save(path, array):
    def writer(tmp):
        with open(tmp, "wb") as handle:
            np.save(handle, array)
    atomic_save(path, writer)
write = {"bytes": atomic_write_bytes, "text": atomic_write_text, "json": atomic_write_json, "save": save,
         "jsonl": append_jsonl}[kind]
versions = [content(kind, 0), content(kind, 1)]
print("ready", flush=True)
i = 0
while True:
    write(path, versions[i % 2])
    i += 1
"""  # CONTENT_SOURCE becomes the source of ``content``: the child imports neither pytest nor this module


def content(kind: str, version: int):
    """The two complete contents the child alternates between (large, so a kill often lands mid-write)."""
    fill = "AB"[version]
    if kind == "bytes":
        return fill.encode() * (8 * MB)
    if kind == "text":
        return fill * (8 * MB)
    if kind == "json":
        return {"version": version, "rows": [fill * MB] * 8}
    if kind == "save":
        return np.full(MB, version, dtype=np.float64)
    return {"version": version, "payload": fill * (MB // 4)}  # jsonl: one large row per append


def read(kind: str, path: Path):
    if kind == "bytes":
        return path.read_bytes()
    if kind == "text":
        return path.read_text()
    if kind == "json":
        return json.loads(path.read_text())
    return np.load(path)


def same(kind: str, a, b) -> bool:
    return bool(np.array_equal(a, b)) if kind == "save" else a == b


def kill_at_random(kind: str, path: Path, rng: random.Random) -> None:
    """Starts the writer, lets it run for a random 0-0.5 s, then SIGKILLs it."""
    code = CHILD.replace("CONTENT_SOURCE", inspect.getsource(content))
    proc = subprocess.Popen([sys.executable, "-c", code, kind, str(path)], stdout=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.35))
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kind", ["bytes", "text", "json", "save"])
def test_a_killed_atomic_write_leaves_the_old_or_the_new_whole_file(kind, tmp_path):
    rng = random.Random(f"kill-{kind}")
    target = tmp_path / ("data.npy" if kind == "save" else "data.json")
    whole = [content(kind, 0), content(kind, 1)]
    caught_mid_write = kills = 0
    # at least 5 kills, and more until one lands mid-write: how long serialising takes before the
    # temporary file opens (json builds its text first) moves with the machine's load
    while kills < 5 or (not caught_mid_write and kills < 40):
        kills += 1
        kill_at_random(kind, target, rng)
        if target.exists():
            found = read(kind, target)
            assert any(same(kind, found, version) for version in whole), f"{target.name} holds a partial write"
        leftovers = sorted(p.name for p in tmp_path.iterdir() if p != target)
        caught_mid_write += bool(leftovers)
        for name in leftovers:  # a killed writer cannot clean up; its temp file must not look like the target
            assert name.startswith(f".{target.name}.") and name.endswith(".tmp"), name
        assert [p.name for p in tmp_path.glob(f"*{target.suffix}")] == ([target.name] if target.exists() else [])
        for name in leftovers:
            (tmp_path / name).unlink()
    assert caught_mid_write, f"none of {kills} kills landed during a write; the test did not exercise the writer"


def test_a_killed_append_loses_at_most_the_row_being_written(tmp_path):
    from common.fileio import read_jsonl

    rng = random.Random("kill-jsonl")
    path = tmp_path / "rows.jsonl"
    whole = [content("jsonl", 0), content("jsonl", 1)]
    for _ in range(4):
        kill_at_random("jsonl", path, rng)
        rows = read_jsonl(path)
        assert all(row in whole for row in rows)  # a truncated last row is skipped, never misread
