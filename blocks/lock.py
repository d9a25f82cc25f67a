"""One process at a time in a folder: an advisory lock (``fcntl.flock``) that names its holder.

The lock file (``.lock`` in the folder) holds the pid, command and start time of the process that has
it, so a refused second process says who to wait for. The operating system drops the lock when its
holder exits, however it exits (``kill -9`` included), so a stale lock file never blocks anyone.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".lock"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, documented in docs/reliability.md
    fcntl = None


class FolderBusy(ValueError):
    """Another process holds the folder's lock."""


def holder(folder: str | Path) -> dict | None:
    """What the lock file of ``folder`` says about its last holder (``None`` when there is none)."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def _describe(info: dict | None) -> str:
    if not info:
        return "another process"
    since = time.strftime("%H:%M:%S", time.localtime(info.get("started", 0)))
    return f"pid {info.get('pid')} ({info.get('command', '?')}, since {since})"


@contextlib.contextmanager
def folder_lock(folder: str | Path, command: str | None = None, wait: float = 0.0) -> Iterator[Path]:
    """Holds the lock of ``folder`` (created when missing) for the ``with`` block.

    Args:
        folder: the folder to guard (a run folder, a latency table folder).
        command: what the holder is doing, shown to a refused process (default: this process's argv).
        wait: seconds to wait for a busy lock before refusing (0: refuse at once).

    Yields:
        The lock file's path.

    Raises:
        FolderBusy: another process holds the lock (the message names its pid and command).
        OSError: the folder cannot be created or the lock file written (read-only, a file in the way).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    if fcntl is None:  # pragma: no cover
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, folder, wait)
        info = {"pid": os.getpid(), "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                "started": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        try:
            yield path
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, folder: Path, wait: float) -> None:
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise FolderBusy(f"{folder} is in use by {_describe(holder(folder))}; wait for it to finish "
                                 "or use another folder") from None
            time.sleep(0.2)
