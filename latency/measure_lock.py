"""One real latency measurement at a time on this machine, across processes and run folders.

Two processes timing models at once share cores, caches and memory bandwidth (or one GPU) and
disturb each other's figures. Every measurement holds an advisory lock on
``$LATENCY_CACHE_DIR/measure.lock`` (default ``~/.cache/donna-nas/latency/measure.lock``); a second
one waits, saying whom it waits for. The lock is per machine and cache folder, not per device
profile: local profiles share the host, and the host drives a remote device as well.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

from blocks.lock import file_lock

from .cache import default_cache_dir

LOCK_FILE = "measure.lock"
HELD_BY_PARENT_ENV = "LATENCY_LOCK_HELD_BY"  # pid of a parent holding the lock for this child process

_held = threading.local()  # depth of nested holds in this thread


def measure_lock_path() -> Path:
    """The lock file every measurement on this machine takes."""
    return default_cache_dir() / LOCK_FILE


def child_env() -> dict[str, str]:
    """The environment for a child process that measures while this one holds the lock for it."""
    return {**os.environ, HELD_BY_PARENT_ENV: str(os.getpid())}


def _say_waiting(info: dict | None) -> None:
    who = f"pid {info.get('pid')}: {info.get('command', '?')}" if info else "another process"
    print(f"waiting for another latency measurement ({who}) to finish", file=sys.stderr, flush=True)


@contextlib.contextmanager
def measurement_lock(command: str = "latency measurement") -> Iterator[None]:
    """Holds the machine's measurement lock for the ``with`` block, waiting (with one line) while it is busy.

    Args:
        command: what this process measures, shown to a process that waits for it.

    Re-entrant within a thread; a child started with :func:`child_env` by the holder does not wait for
    its own parent. Where the lock file cannot be created (a read-only home), the measurement goes on
    unserialised after one warning line.
    """
    if getattr(_held, "depth", 0) or os.environ.get(HELD_BY_PARENT_ENV) == str(os.getppid()):
        _held.depth = getattr(_held, "depth", 0) + 1
        try:
            yield
        finally:
            _held.depth -= 1
        return
    path = measure_lock_path()
    with contextlib.ExitStack() as stack:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(file_lock(path, command, wait=math.inf, on_wait=_say_waiting))
        except OSError as err:
            print(f"warning: cannot lock {path} ({err.strerror or err}); this latency measurement is not "
                  "serialised with other processes (set LATENCY_CACHE_DIR to a writable folder)",
                  file=sys.stderr, flush=True)
        _held.depth = 1
        try:
            yield
        finally:
            _held.depth = 0
