"""One process at a time in a folder (or at a resource): an advisory lock (``fcntl.flock``) naming its holder.

The lock file (``.lock`` in the folder, or any file given to ``file_lock``) holds the pid, command and
start time of the process that has it, so a refused or waiting process says who it waits for. The
operating system drops the lock when its holder exits, however it exits (``kill -9`` included), so a
stale lock file never blocks anyone.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
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
    return lock_holder(Path(folder) / LOCK_NAME)


def lock_holder(path: str | Path) -> dict | None:
    """What the lock file ``path`` says about its last holder (``None`` when there is none)."""
    try:
        text = Path(path).read_text()
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def describe_holder(info: dict | None) -> str:
    """``pid 4242 (donna search, since 13:01:33)``, or ``another process`` when the lock file says nothing."""
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

    def refuse(info: dict | None) -> FolderBusy:
        return FolderBusy(f"{folder} is in use by {describe_holder(info)}; wait for it to finish or use another "
                          "folder")

    with file_lock(folder / LOCK_NAME, command, wait, busy=refuse) as path:
        yield path


@contextlib.contextmanager
def file_lock(path: str | Path, command: str | None = None, wait: float = 0.0,
              busy: Callable[[dict | None], Exception] | None = None,
              on_wait: Callable[[dict | None], None] | None = None) -> Iterator[Path]:
    """Holds the advisory lock on the file ``path`` (created when missing) for the ``with`` block.

    Args:
        path: the lock file; it holds the holder's pid, command and start time while held.
        command: what the holder is doing (default: this process's argv).
        wait: seconds to wait for a busy lock (``math.inf``: until it is free).
        busy: builds the error raised when ``wait`` runs out, from the holder's record.
        on_wait: called once, with the holder's record, when the lock is busy and this process waits.

    Raises:
        FolderBusy: (or what ``busy`` builds) the lock stayed busy for ``wait`` seconds.
        OSError: the lock file cannot be opened or written.
    """
    path = Path(path)
    if fcntl is None:  # pragma: no cover
        yield path
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _acquire(fd, path, wait, busy, on_wait)
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


def _acquire(fd: int, path: Path, wait: float, busy, on_wait) -> None:
    deadline, told = time.monotonic() + wait, False
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                info = _holder_record(path)
                raise (busy(info) if busy else FolderBusy(f"{path} is held by {describe_holder(info)}")) from None
            if on_wait is not None and not told:
                on_wait(_holder_record(path))
                told = True
            if math.isinf(wait):  # block in the kernel: woken the moment the holder lets go (Ctrl-C still works)
                fcntl.flock(fd, fcntl.LOCK_EX)
                return
            time.sleep(0.2)


def _holder_record(path: Path, tries: int = 10) -> dict | None:
    """The holder's record, read again for up to half a second while it is empty: a process that has just
    taken the lock writes its record a moment later."""
    for _ in range(tries):
        info = lock_holder(path)
        if info:
            return info
        time.sleep(0.05)
    return None
