"""Atomic file writes (temporary file + rename) and an append-only JSON-lines checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from blocks.fileio import atomic_path, atomic_write_bytes  # the one atomic write (fsync, umask permissions)

__all__ = ["append_jsonl", "atomic_path", "atomic_write_bytes", "atomic_write_json", "read_jsonl"]


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def append_jsonl(path: Path | str, row: dict) -> None:
    """Append one JSON row as a single ``write`` call on an ``O_APPEND`` descriptor, then fsync.

    A process killed mid-write can at worst leave a truncated last line, which
    :func:`read_jsonl` skips, so every complete row survives.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = ("\n" + json.dumps(row, sort_keys=True) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: Path | str) -> list[dict]:
    """Read the complete rows of a JSON-lines file; blank and truncated lines are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
